"""Kernel blocks: two ipset sets (`slipsq-block4` hash:ip inet, `slipsq-block6` hash:ip inet6, with
the timeout extension so a block also expires in the kernel) matched by DROP rules in slipsq's own
chain SLIPSQ, which INPUT, FORWARD and OUTPUT jump to first, ahead of the NFQUEUE diversion, all in
the **security** table (`iptables -t security -S`; mangle on a legacy kernel without it):

    FORWARD  1  -m comment --comment slipsq -j SLIPSQ
    FORWARD  2  -m comment --comment "slipsq queue 0" -j NFQUEUE --queue-num 0 --queue-bypass
                (--queue 0:3: "slipsq queue 0:3" ... --queue-balance 0:3 --queue-bypass)
    SLIPSQ      -m set --match-set slipsq-block4 src -j DROP   (and dst)

so a blocked IP's packets never reach userspace again. Why security: the queue's verdict (accept), a
queue nobody reads (`--queue-bypass`) and the bypass rules' ACCEPT each end the table they are in,
skipping the rules after them there; the security table holds no rule of the admin's, and its hooks
run after filter's, so the admin's firewall decides first and slipsq sees what it lets through
(backends.py). With flow
bypass (slipsq/flowtable.py, "Bypass"), one more rule between the jump and the diversion forwards
the connections the queue marked, except their SYN/FIN/RST packets (so slipsq still sees each
connection open and close), and two after it take the packet the queue sent back through the hook
(NF_REPEAT, with the repeat bit and the bypass bit set or cleared) and copy its bypass bit into its
connection's mark (the forwarding rule comes first: it is the one every bypassed packet meets):

    FORWARD  2  -p tcp -m tcp --tcp-flags FIN,SYN,RST NONE -m connmark --mark 0x400000/0x400000 -j ACCEPT
    FORWARD  3  -m mark --mark 0x800000/0x800000 -j CONNMARK --save-mark --nfmask 0x400000 --ctmask 0x400000
    FORWARD  4  -m mark --mark 0x800000/0x800000 -j ACCEPT

(each with -m comment --comment "slipsq queue 0 bypass"). With `dns` (dns.queue_gateway), DNS over
UDP to the gateway's own resolver goes to the queue too (dns_rules):

    INPUT   2  ! -i lo -p udp -m udp --dport 53 -m comment --comment "slipsq queue 0 dns" -j NFQUEUE ...
    OUTPUT  2  ! -o lo -p udp -m udp --sport 53 -m comment --comment "slipsq queue 0 dns" -j NFQUEUE ...

Blocks still win: the jump to SLIPSQ comes first. Set membership changes are one `ipset
restore` batch per decision (no per-IP shell-out loop; pyroute2 would avoid the fork but is not a
dependency, and ipset's own tool is what an admin debugs with). Rules go through backends.py.

Defence in depth: this module refuses protected addresses (own, loopback, link-local, allow list)
even if a caller asks. It never flushes or edits a chain or set it did not create.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from slipsq.addr import parse_ip
from slipsq.allow import AllowList
from slipsq.errors import SystemSetupError
from slipsq.verdict.backends import CHAIN, TABLES, TAG, Backend, RuleSpec, RuleState, make_backend

SET4 = "slipsq-block4"
SET6 = "slipsq-block6"
# ipset's largest timeout (UINT_MAX/2 ms in seconds, about 24.8 days); longer blocks are re-applied at start
MAX_TIMEOUT = 2147483
HOOKS = ("INPUT", "FORWARD", "OUTPUT")


def _set_for(ip: str) -> str:
    return SET4 if ipaddress.ip_address(ip).version == 4 else SET6


def ipset_script(adds: Iterable[tuple[str, float | None]] = (), dels: Iterable[str] = ()) -> str:
    """An `ipset restore` script: add with a timeout (0: until removed), delete; idempotent (-exist)."""
    lines = []
    for ip in dels:
        lines.append(f"del {_set_for(ip)} {ip} -exist")
    for ip, seconds in adds:
        t = 0 if seconds is None else max(1, min(MAX_TIMEOUT, int(seconds + 0.999)))
        lines.append(f"add {_set_for(ip)} {ip} timeout {t} -exist")
    return "\n".join(lines) + "\n" if lines else ""


def parse_ipset_save(text: str) -> dict[str, int]:
    """Members of slipsq's sets from `ipset save`: ip -> seconds left (0: no timeout)."""
    out: dict[str, int] = {}
    for m in re.finditer(r"^add (slipsq-block[46]) (\S+)(?: timeout (\d+))?", text, re.M):
        out[m.group(2)] = int(m.group(3) or 0)
    return out


def parse_ipset_terse(text: str) -> dict[str, int]:
    """Set name -> number of entries, from `ipset list -t` output (a header block per set)."""
    out: dict[str, int] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("Name: "):
            name = line[6:].strip()
        elif line.startswith("Number of entries: ") and name is not None and line[19:].strip().isdigit():
            out[name] = int(line[19:].strip())
    return out


@dataclass(frozen=True)
class QueueCounters:
    """One line of /proc/net/netfilter/nfnetlink_queue."""

    queue: int
    portid: int
    waiting: int
    copy_mode: int
    copy_range: int
    queue_dropped: int
    user_dropped: int
    last_id: int


def parse_queue_counters(text: str) -> dict[int, QueueCounters]:
    """The per-queue counters in the text of /proc/net/netfilter/nfnetlink_queue (read here, or in
    another network namespace by whoever can). A line that is not eight numbers or more is skipped."""
    out: dict[int, QueueCounters] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 8 and all(x.isdigit() and x.isascii() for x in f[:8]):
            q = QueueCounters(*(int(x) for x in f[:8]))
            out[q.queue] = q
    return out


def queue_counters(path: str = "/proc/net/netfilter/nfnetlink_queue") -> dict[int, QueueCounters]:
    """The kernel's per-queue counters ({} when the module is not loaded or nothing is bound)."""
    try:
        with open(path) as fh:
            return parse_queue_counters(fh.read())
    except OSError:
        return {}


@dataclass(frozen=True)
class Removed:
    """What `Firewall.remove_all` removed, and what it found still there afterwards."""

    rules: int
    chains: int
    sets: list[str]
    left: list[str]

    def message(self) -> str:
        if not (self.rules or self.chains or self.sets or self.left):
            return "nothing of slipsq's was in the firewall"
        parts = [f"{self.rules} slipsq rules"]
        if self.chains:
            parts.append(f"{self.chains} SLIPSQ chains")
        if self.sets:
            parts.append("sets " + ", ".join(self.sets))
        msg = "removed " + ", ".join(parts)
        if self.left:
            msg += "; STILL THERE: " + ", ".join(self.left)
        return msg


class Firewall:
    """slipsq's sets, chain and rules in one network namespace, on one iptables backend."""

    def __init__(self, allow: AllowList | None = None, backend: str | Backend = "auto",
                 ipv6: bool = True) -> None:
        self.allow = allow or AllowList()
        self.backend: Backend = make_backend(backend) if isinstance(backend, str) else backend
        self.families = (4, 6) if ipv6 else (4,)
        exe = shutil.which("ipset")
        if exe is None:
            raise SystemSetupError("ipset is not installed (Debian: apt-get install ipset)")
        self.ipset = exe
        self._cleaned_others = False
        self.cleaned: list[str] = []  # what the first install removed from the stale places

    # --- ipset ------------------------------------------------------------------------------------
    def _ipset(self, args: Sequence[str], script: str | None = None, check: bool = True) -> str:
        try:
            r = subprocess.run([self.ipset, *args], input=script, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as e:
            raise SystemSetupError(f"cannot run ipset: {e}") from None
        if check and r.returncode != 0:
            err = r.stderr.strip()
            if "Kernel error" in err or "Operation not permitted" in err:
                raise SystemSetupError(f"ipset {' '.join(args)}: {err} (need root and the ip_set modules)")
            raise SystemSetupError(f"ipset {' '.join(args)}: {err}")
        return r.stdout

    def _create_script(self) -> str:
        script = f"create {SET4} hash:ip family inet timeout 0 -exist\n"
        if 6 in self.families:
            script += f"create {SET6} hash:ip family inet6 timeout 0 -exist\n"
        return script

    def ensure_sets(self) -> None:
        self._ipset(["restore"], self._create_script())

    def member_counts(self) -> dict[str, int]:
        """Entries in each of slipsq's sets that exist (one `ipset list -t`: headers, no members)."""
        counts = parse_ipset_terse(self._ipset(["list", "-t"], check=False))
        return {n: counts[n] for n in (SET4, SET6) if n in counts}

    def members(self) -> dict[str, int]:
        """Blocked addresses in the kernel: ip -> seconds left (0: no timeout)."""
        out: dict[str, int] = {}
        for s in (SET4, SET6):
            out.update(parse_ipset_save(self._ipset(["save", s], check=False)))
        return out

    # --- rules ------------------------------------------------------------------------------------
    def stale_places(self) -> list[Backend]:
        """Where else slipsq's rules may be: the other iptables backend (firewall.backend switched
        from nft to legacy or back: every packet would go through the queue twice), and the other
        tables of both (an older slipsq's: in filter or mangle, its queue's accept skipped the
        admin's own rules after it, backends.py). A backend not installed here is left out: nothing
        of ours can be in it."""
        out: list[Backend] = []
        for name in ("nft", "legacy"):
            for table in TABLES:
                if name == self.backend.name and table == self.backend.table:
                    continue
                try:
                    out.append(make_backend(name, table))
                except SystemSetupError:
                    continue
        return out

    def _remove_from(self, backend: Backend) -> tuple[int, int]:
        """(rules, chains) of slipsq's removed from `backend`, both families."""
        rules = chains = 0
        for fam in self.families:
            rules += backend.delete_tagged(fam, lambda r: r.chain != CHAIN)
            if backend.rules(fam)[1]:
                backend.delete_chain(fam)
                chains += 1
        return rules, chains

    def remove_stale(self) -> list[str]:
        """Remove what slipsq left in the stale places (stale_places); what was removed, for a
        message (empty: nothing was there). A place that cannot be read here is skipped."""
        said = []
        for b in self.stale_places():
            try:
                rules, chains = self._remove_from(b)
            except Exception:  # iptc raises its own kinds: unusable here, nothing of ours in it
                continue
            if rules or chains:
                what = f"{rules} rules" + (" and chain SLIPSQ" if chains else "")
                said.append(f"{what} of the {b.name} backend's {b.table} table")
        return said

    def leftover(self) -> list[str]:
        """What of slipsq's is still in the kernel, in every place, as words (empty: nothing)."""
        out = []
        for b in [self.backend, *self.stale_places()]:
            for fam in self.families:
                try:
                    rules, chain = b.rules(fam)
                except Exception:  # as in remove_stale
                    continue
                if rules:
                    out.append(f"{len(rules)} IPv{fam} rules ({b.name}, {b.table})")
                if chain:
                    out.append(f"IPv{fam} chain {CHAIN} ({b.name}, {b.table})")
        out += [f"set {name}" for name in self.sets()]
        return out

    def sets(self) -> list[str]:
        """slipsq's ipsets that exist now."""
        names = self._ipset(["list", "-n"], check=False).split()
        return [n for n in (SET4, SET6) if n in names]

    def install(self, queue: int | tuple[int, int] | None = None, divert: Sequence[str] = ("FORWARD",),
                bypass_mark: int = 0, repeat_mark: int = 0, dns: bool = False) -> None:
        """Sets, chain SLIPSQ with its DROP rules, jumps from INPUT/FORWARD/OUTPUT at position 1, and
        (with `queue`) the NFQUEUE diversion right after the jump, and (with `bypass_mark` and
        `repeat_mark`) the bypass rules between the two, and (with `dns`) the DNS diversion of the
        gateway's own resolver (dns_rules); without `dns`, a DNS diversion of this queue comes out.
        Idempotent. The first install of this Firewall also removes what slipsq left in the stale
        places (the other iptables backend, the filter table)."""
        if not self._cleaned_others:
            self._cleaned_others = True
            self.cleaned = self.remove_stale()
        self.ensure_sets()
        mine_now = () if queue is None else (diversion_tag(queue), bypass_tag(queue),
                                             *([dns_tag(queue)] if dns else []))
        for fam in self.families:
            s = SET4 if fam == 4 else SET6
            self.backend.ensure_chain(fam)
            if queue is not None:  # another queue's diversion (a slipsq killed, restarted with --queue 0:1)
                # would send every packet to a queue nobody reads: past it, uninspected; and a DNS
                # diversion dns.queue_gateway no longer asks for goes the same way
                self.backend.delete_tagged(fam, lambda r: r.comment.startswith(f"{TAG} queue ")
                                           and r.comment not in mine_now)
            broken, jumps, diversions, dns_gone = self._gaps(*self.backend.rules(fam), queue, divert, bypass_mark, dns)
            if broken:  # rebuild our own chain's two rules when anything is off
                self.backend.delete_tagged(fam, lambda r: r.chain == CHAIN)
                for d in ("src", "dst"):
                    self.backend.insert(fam, RuleSpec(CHAIN, "DROP", match_set=(s, d)), 0)
            for hook in jumps:
                self.backend.insert(fam, RuleSpec(hook, CHAIN), 1)
            for hook in diversions:  # a hook's diversion goes in whole, in order, or not at all
                assert queue is not None  # (_gaps names diversions only with a queue)

                def old(r: RuleState, hook: str = hook) -> bool:
                    return r.chain == hook and r.comment in mine_now

                self.backend.delete_tagged(fam, old)
                specs = bypass_rules(hook, queue, bypass_mark, repeat_mark) if bypass_mark else []
                specs.append(RuleSpec(hook, "NFQUEUE", diversion_tag(queue), queue=queue))
                at = self._after_jump(fam, hook)
                for k, spec in enumerate(specs):
                    self.backend.insert(fam, spec, at + k)
            for spec in dns_gone:
                self.backend.insert(fam, spec, self._after_jump(fam, spec.chain))

    @staticmethod
    def _gaps(rules: list[RuleState], chain: bool, queue: int | tuple[int, int] | None, divert: Sequence[str],
              bypass_mark: int, dns: bool) -> tuple[bool, list[str], list[str], list[RuleSpec]]:
        """What install() has to mend, from one read of the rules: (chain SLIPSQ or its two DROPs
        off, hooks without the jump, diverted hooks whose diversion is not whole: no NFQUEUE rule,
        or not the three bypass rules that bypass_mark asks for, or bypass rules it does not ask
        for, the DNS diversion's rules that `dns` asks for and are not there). install() and
        missing() both ask it, so what one finds missing the other mends."""
        have = {(r.chain, r.target, r.comment) for r in rules}
        broken = not chain or sum(1 for r in rules if r.chain == CHAIN) != 2
        jumps = [hook for hook in HOOKS if (hook, CHAIN, TAG) not in have]
        bypass = 3 if bypass_mark else 0  # bypass_rules' three
        diversions = [] if queue is None else [
            hook for hook in divert
            if (hook, "NFQUEUE", diversion_tag(queue)) not in have
            or sum(1 for r in rules if r.chain == hook and r.comment == bypass_tag(queue)) != bypass]
        dns_gone = [] if queue is None or not dns else [
            spec for spec in dns_rules(queue) if (spec.chain, "NFQUEUE", spec.comment) not in have]
        return broken, jumps, diversions, dns_gone

    def missing(self, queue: int | tuple[int, int] | None = None, divert: Sequence[str] = ("FORWARD",),
                bypass_mark: int = 0, dns: bool = False) -> list[str]:
        """What of install()'s work is no longer in the kernel, as words (empty: all there): someone
        else's `nft flush ruleset` (Debian's nftables.conf starts with it), `iptables -F` or `ipset
        destroy`. Reads only: one `ipset list -n` and one save per family."""
        sets = self.sets()
        out = [f"set {name}" for name in (SET4, SET6) if name not in sets and (name == SET4 or 6 in self.families)]
        for fam in self.families:
            broken, jumps, diversions, dns_gone = self._gaps(*self.backend.rules(fam), queue, divert, bypass_mark, dns)
            out += [f"IPv{fam} chain {CHAIN} and its rules"] if broken else []
            out += [f"IPv{fam} {hook} jump" for hook in jumps]
            out += [f"IPv{fam} {hook} diversion" for hook in diversions]
            out += [f"IPv{fam} {spec.chain} DNS diversion" for spec in dns_gone]
        return out

    def _after_jump(self, fam: int, hook: str) -> int:
        for r in self.backend.rules(fam)[0]:
            if r.chain == hook and r.target == CHAIN:
                return r.position + 1
        return 1

    def remove_diversion(self, queue: int | tuple[int, int]) -> int:
        """The diversion and its bypass rule (a bypass rule without the queue would let marked
        connections skip the admin's own rules after it)."""
        tags = (diversion_tag(queue), bypass_tag(queue), dns_tag(queue))
        return sum(self.backend.delete_tagged(f, lambda r: r.comment in tags) for f in self.families)

    def remove_all(self) -> Removed:
        """Everything slipsq made, on every iptables backend and table: tagged rules in any chain, chain
        SLIPSQ, the two sets. Says what it removed and what is still there (checked afterwards)."""
        rules = chains = 0
        backends = [self.backend]
        for b in self.stale_places():
            try:
                b.rules(self.families[0])
            except Exception:  # as in remove_stale
                continue
            backends.append(b)
        for b in backends:
            r, c = self._remove_from(b)
            rules, chains = rules + r, chains + c
        had = self.sets()
        for name in had:
            self._ipset(["destroy", name], check=False)  # a set in use cannot go: leftover says so
        return Removed(rules, chains, [n for n in had if n not in self.sets()], self.leftover())

    def rules(self) -> list[tuple[int, RuleState]]:
        return [(fam, r) for fam in self.families for r in self.backend.rules(fam)[0]]

    def drop_counters(self) -> tuple[int, int]:
        """Packets and bytes dropped by slipsq's block rules (both families)."""
        pk = by = 0
        for _, r in self.rules():
            if r.chain == CHAIN and r.target == "DROP":
                pk += r.packets
                by += r.bytes
        return pk, by

    # --- blocks -----------------------------------------------------------------------------------
    def block(self, entries: Iterable[tuple[str, float | None]]) -> list[tuple[str, str]]:
        """Add (ip, seconds or None for no expiry) to the sets in one batch. Returns the refused
        (ip, why) pairs: protected addresses never reach the kernel."""
        return self.update(entries, ())

    def unblock(self, ips: Iterable[str]) -> None:
        self.update((), ips)

    def update(self, adds: Iterable[tuple[str, float | None]], dels: Iterable[str]) -> list[tuple[str, str]]:
        """Remove `dels` and add `adds` (ip, seconds or None) in ONE `ipset restore`. Returns the
        refused (ip, why) pairs of `adds`: protected addresses never reach the kernel."""
        ok: list[tuple[str, float | None]] = []
        refused: list[tuple[str, str]] = []
        for ip, seconds in adds:
            why = self.allow.why_protected(ip)
            if why is None and 6 not in self.families and parse_ip(ip).version == 6:
                why = "IPv6, which is disabled"
            if why is None:
                ok.append((str(parse_ip(ip)), seconds))  # ::ffff:a.b.c.d is a.b.c.d, in the IPv4 set
            else:
                refused.append((ip, why))
        gone = [str(a) for a in map(parse_ip, dels) if a.version == 4 or 6 in self.families]
        if ok:  # creating the sets in the same batch costs nothing and makes the update self-sufficient
            self._ipset(["restore"], self._create_script() + ipset_script(adds=ok, dels=gone))
        elif gone:
            try:
                self._ipset(["restore"], ipset_script(dels=gone))
            except SystemSetupError as e:
                # dels use -exist; a set that does not exist means nothing is blocked there: fine
                if "does not exist" not in e.message:
                    raise
        return refused


def host_firewall(allow: AllowList | None, backend: str | None = None) -> Firewall:
    """This host's Firewall: `backend`, else $SLIPSQ_IPTABLES_BACKEND, else auto; IPv6 sets when the
    kernel has IPv6."""
    return Firewall(allow, backend or os.environ.get("SLIPSQ_IPTABLES_BACKEND", "auto"),
                    ipv6=os.path.exists("/proc/net/if_inet6"))


def diversion_tag(queue: int | tuple[int, int]) -> str:
    """The diversion rule's comment: "slipsq queue 0", or "slipsq queue 0:3" for a worker pool."""
    return f"{TAG} queue {queue}" if isinstance(queue, int) else f"{TAG} queue {queue[0]}:{queue[1]}"


def bypass_tag(queue: int | tuple[int, int]) -> str:
    return f"{diversion_tag(queue)} bypass"


def dns_tag(queue: int | tuple[int, int]) -> str:
    return f"{diversion_tag(queue)} dns"


def dns_rules(queue: int | tuple[int, int]) -> list[RuleSpec]:
    """The DNS diversion (`dns.queue_gateway`): DNS over UDP to the gateway's own resolver (dnsmasq,
    Pi-hole, unbound: the LAN's queries arrive in INPUT, the answers leave in OUTPUT) goes to the
    queue too, so the names it answers are learnt and DGA and tunnel lookups are seen; FORWARD's
    diversion never sees that traffic. Loopback is left out (the gateway's own lookups). UDP only:
    TCP to the gateway would meet flow bypass's repeat verdicts without bypass rules in INPUT."""
    return [RuleSpec("INPUT", "NFQUEUE", dns_tag(queue), queue=queue,
                     extra=("!", "-i", "lo", "-p", "udp", "-m", "udp", "--dport", "53")),
            RuleSpec("OUTPUT", "NFQUEUE", dns_tag(queue), queue=queue,
                     extra=("!", "-o", "lo", "-p", "udp", "-m", "udp", "--sport", "53"))]


def bypass_rules(hook: str, queue: int | tuple[int, int], mark: int, repeat: int) -> list[RuleSpec]:
    """Forward what is marked bypassed, SYN/FIN/RST excepted (they still go to the queue); then a
    packet the queue sent back (repeat bit): its bypass bit into its connection's mark, and accepted
    (it never matches the first rule: its connection is not marked yet, or it carries FIN/SYN/RST).
    All three tagged alike, so they come and go together."""
    tag, r = bypass_tag(queue), ("-m", "mark", "--mark", f"{repeat:#x}/{repeat:#x}")
    return [RuleSpec(hook, "ACCEPT", tag, extra=("-p", "tcp", "-m", "tcp", "--tcp-flags", "FIN,SYN,RST", "NONE",
                                                 "-m", "connmark", "--mark", f"{mark:#x}/{mark:#x}")),
            RuleSpec(hook, "CONNMARK", tag, extra=r,
                     target_args=("--save-mark", "--nfmask", f"{mark:#x}", "--ctmask", f"{mark:#x}")),
            RuleSpec(hook, "ACCEPT", tag, extra=r)]
