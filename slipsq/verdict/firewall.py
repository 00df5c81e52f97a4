"""Kernel blocks: two ipset sets (`slipsq-block4` hash:ip inet, `slipsq-block6` hash:ip inet6, with
the timeout extension so a block also expires in the kernel) matched by DROP rules in slipsq's own
chain SLIPSQ, which INPUT, FORWARD and OUTPUT jump to first, ahead of the NFQUEUE diversion:

    FORWARD  1  -m comment --comment slipsq -j SLIPSQ
    FORWARD  2  -m comment --comment "slipsq queue 0" -j NFQUEUE --queue-num 0 --queue-bypass
    SLIPSQ      -m set --match-set slipsq-block4 src -j DROP   (and dst)

so a blocked IP's packets never reach userspace again. Set membership changes are one `ipset
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

from slipsq.allow import AllowList
from slipsq.errors import SystemSetupError
from slipsq.verdict.backends import CHAIN, TAG, Backend, RuleSpec, RuleState, make_backend

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


def queue_counters(path: str = "/proc/net/netfilter/nfnetlink_queue") -> dict[int, QueueCounters]:
    """The kernel's per-queue counters ({} when the module is not loaded or nothing is bound)."""
    out: dict[int, QueueCounters] = {}
    try:
        with open(path) as fh:
            for line in fh:
                f = line.split()
                if len(f) >= 8:
                    q = QueueCounters(*(int(x) for x in f[:8]))
                    out[q.queue] = q
    except OSError:
        pass
    return out


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

    def members(self) -> dict[str, int]:
        """Blocked addresses in the kernel: ip -> seconds left (0: no timeout)."""
        out: dict[str, int] = {}
        for s in (SET4, SET6):
            out.update(parse_ipset_save(self._ipset(["save", s], check=False)))
        return out

    # --- rules ------------------------------------------------------------------------------------
    def install(self, queue: int | None = None, divert: Sequence[str] = ("FORWARD",)) -> None:
        """Sets, chain SLIPSQ with its DROP rules, jumps from INPUT/FORWARD/OUTPUT at position 1, and
        (with `queue`) the NFQUEUE diversion right after the jump. Idempotent."""
        self.ensure_sets()
        for fam in self.families:
            s = SET4 if fam == 4 else SET6
            self.backend.ensure_chain(fam)
            have, _ = self.backend.rules(fam)
            mine = {(r.chain, r.target, r.comment) for r in have}
            drops = [r for r in have if r.chain == CHAIN]
            if len(drops) != 2:  # rebuild our own chain's two rules when anything is off
                self.backend.delete_tagged(fam, lambda r: r.chain == CHAIN)
                for d in ("src", "dst"):
                    self.backend.insert(fam, RuleSpec(CHAIN, "DROP", match_set=(s, d)), 0)
            for hook in HOOKS:
                if (hook, CHAIN, TAG) not in mine:
                    self.backend.insert(fam, RuleSpec(hook, CHAIN), 1)
            if queue is not None:
                for hook in divert:
                    if (hook, "NFQUEUE", diversion_tag(queue)) not in mine:
                        spec = RuleSpec(hook, "NFQUEUE", diversion_tag(queue), queue=queue)
                        self.backend.insert(fam, spec, self._after_jump(fam, hook))

    def _after_jump(self, fam: int, hook: str) -> int:
        for r in self.backend.rules(fam)[0]:
            if r.chain == hook and r.target == CHAIN:
                return r.position + 1
        return 1

    def remove_diversion(self, queue: int) -> int:
        tag = diversion_tag(queue)
        return sum(self.backend.delete_tagged(f, lambda r: r.comment == tag) for f in self.families)

    def remove_all(self) -> int:
        """Everything slipsq made: tagged rules in any chain, chain SLIPSQ, the two sets."""
        n = 0
        for fam in self.families:
            n += self.backend.delete_tagged(fam, lambda r: r.chain != CHAIN)
            self.backend.delete_chain(fam)
        for s in (SET4, SET6):
            self._ipset(["destroy", s], check=False)  # absent is fine
        return n

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
            if why is None and 6 not in self.families and ipaddress.ip_address(ip).version == 6:
                why = "IPv6, which is disabled"
            if why is None:
                ok.append((str(ipaddress.ip_address(ip)), seconds))
            else:
                refused.append((ip, why))
        gone = [str(a) for a in map(ipaddress.ip_address, dels) if a.version == 4 or 6 in self.families]
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


def diversion_tag(queue: int) -> str:
    return f"{TAG} queue {queue}"
