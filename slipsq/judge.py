"""The judge: adds evidence up per offending IP per time window and decides alert or block.

The arithmetic, so an admin can check any decision by hand (`slipsq explain IP` lists the numbers):

    a finding     = the evidence a detector reports with one `key` (e.g. one beacon tuple), within
                    one window; s = its best threat_level x confidence over its reports
    persistent    = reported again by one source (src_ip) at least `judge.persist_after` s (60)
                    after that source's first report in the window, and at least one of that
                    source's reports at critical threat with threat_level x confidence >=
                    `judge.persist_min` (0.6)
    weight        = 2 for a persistent finding, else 1
    score(ip, window) = sum over the findings against ip of weight x s
    block when score >= `judge.threshold` (1), at least one finding may block, and ip is not protected

Why: a finding that keeps coming is stronger than one report of it. Per source, because a key may
gather several: beacon and Markov findings against a server are keyed by the service, so that the
house's devices calling one update server every hour make one finding, and two of them reporting
it once each is not one beacon that persists. A near-certain beacon (critical
x 0.9, the most one beacon report can say) reported for a minute counts 1.8 and blocks with margin;
one weak finding never blocks alone: below critical x 0.6 it never doubles, and one report cannot
persist. Only critical findings double because the detectors already escalate what persists at lower
levels themselves (beacon and brute force raise their threat as the count grows; the room they leave
below critical, e.g. for admin automation, is deliberate). Evidence without a `key` is a finding of
its own each time (it adds up, as before). Without persistence the sum is Slips' (threat level x
confidence).

Windows are `judge.window` seconds wide (1 hour by default, like Slips), aligned on multiples of the
width in flow time, so replay is deterministic. A block lasts `judge.block_duration`; each new block
of the same IP lasts `judge.repeat_factor` times longer, up to `judge.max_block_duration`. An admin's
unblock is a verdict on the evidence: for `judge.pardon` seconds (a day) evidence against that IP is
reported with why, and does not block it again (`pardon`). Scores are
printed with the digits it takes to compare with the threshold as the decision did (0.996, not
1.00). The judge decides only; the engine carries decisions to the sinks.

Bounded, because evidence comes from the network (forged sources make an offender per packet):
at most `judge.max_offenders` open windows and repeat counts (the least recently judged offender's
are forgotten first: that loses evidence or a repeat count, never a block), at most
`judge.max_findings` findings listed per window (later ones still add to the score), and at most
`judge.max_blocks` active blocks: past it a new block is refused and said so, so the bound never
forgets an active block. Every operation is O(1) (amortized): block expiry is a heap, windows are
pruned from the front of their creation order.

One network cannot fill `judge.max_blocks` by itself: an IPv6 /64 is one host's or one LAN's (its
owner picks any of 2^64 addresses), and a /48 is one site's, so a scanner hopping addresses in its
/64 would otherwise earn 65,536 blocks and leave no room for the C&C that comes next. The judge's
blocks in one /64 are at most `judge.max_blocks_per_64` (256), in one /48 sixteen times that; a new
block in a full /64 or /48 lifts the judge's oldest block there (said, as an Unblock), so the newest
evidence always blocks (a C&C cannot hide in a /64 its own scanner filled first). Blocks an admin
made, and blocks restored from the store at start, are never lifted and not counted there. The
price: the owner of a /64 can lift its own earlier block by earning 256 later ones there; the
lifted address's evidence window stays open, so its next evidence blocks it again. (Blocking the
/64 itself would close that; the block set and the kernel sets hold addresses, not networks.)
Addresses that stand for IPv4 hosts (NAT64's 64:ff9b::/96 and 64:ff9b:1::/48, Teredo's 2001::/32)
are not bounded by network: behind NAT64 every IPv4 server shares one /64.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count

from slipsq.addr import parse_ip
from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.durations import format_duration
from slipsq.records import CRITICAL, Decision, Evidence, Finding, fmt_score

MAX_SOURCES = 16  # sources whose persistence one finding follows


@dataclass(slots=True)
class _Finding:
    best: float
    first: float
    last: float
    detector: str
    description: str
    may_block: bool
    reports: int = 1
    persists: bool = False  # one source's reports made it persistent (weight 2)
    # source -> [its first report, its last, it made a strong report (critical, >= persist_min)];
    # at most MAX_SOURCES: a source past them still adds its score, not its persistence
    sources: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class _Window:
    index: int
    findings: dict[str, _Finding] = field(default_factory=dict)  # key -> finding
    may_block: bool = False
    detectors: dict[str, int] = field(default_factory=dict)  # detector -> pieces of evidence
    overflow: float = 0.0  # the score of findings beyond judge.max_findings (in the sum, not listed)


class Judge:
    def __init__(self, config: Config, allow: AllowList) -> None:
        self.window = config["judge.window"]
        self.threshold = config["judge.threshold"]
        self.persist_after: float = config["judge.persist_after"]
        self.persist_min: float = config["judge.persist_min"]
        self.enabled = config["judge.block"]
        self.base_duration = config["judge.block_duration"]
        self.repeat_factor = config["judge.repeat_factor"]
        self.max_duration = config["judge.max_block_duration"]
        self.max_offenders: int = config["judge.max_offenders"]
        self.max_findings: int = config["judge.max_findings"]
        self.max_blocks: int = config["judge.max_blocks"]
        self.allow = allow
        # ip -> its window, in order of window creation (pruning pops the front)
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._blocked_until: dict[str, float] = {}  # ip -> expiry (inf: no expiry)
        self._expiry_heap: list[tuple[float, str]] = []  # (expiry, ip); stale entries skipped
        self._times_blocked: OrderedDict[str, int] = OrderedDict()  # least recently blocked first
        # ip -> (until, the detectors it covers; empty: all): an admin unblocked it
        self._pardoned: OrderedDict[str, tuple[float, frozenset[str]]] = OrderedDict()
        self._unique = count()
        # the judge's blocks by IPv6 network (b"/64" + 8 bytes, b"/48" + 6 bytes), oldest first, and
        # each such block's two networks: judge.max_blocks_per_64 (module docstring)
        self.max_per_net = {b"/64": config["judge.max_blocks_per_64"], b"/48": 16 * config["judge.max_blocks_per_64"]}
        self._by_net: dict[bytes, OrderedDict[str, None]] = {}
        self._nets_of: dict[str, tuple[bytes, ...]] = {}

    def weight(self, f: _Finding) -> int:
        """2 for a persistent finding (see the module docstring), else 1."""
        return 2 if f.persists else 1

    def _persist(self, f: _Finding, ev: Evidence) -> None:
        """Count `ev` toward the persistence of its source's reports of `f`."""
        rec = f.sources.get(ev.src_ip)
        if rec is None:
            if len(f.sources) >= MAX_SOURCES:
                return
            rec = f.sources[ev.src_ip] = [ev.ts, ev.ts, 0.0]
        rec[0], rec[1] = min(rec[0], ev.ts), max(rec[1], ev.ts)
        if self._strong(ev):
            rec[2] = 1.0
        if rec[2] and rec[1] - rec[0] >= self.persist_after:
            f.persists = True

    def _strong(self, ev: Evidence) -> bool:
        return ev.threat_level >= CRITICAL and ev.score >= self.persist_min

    def score(self, w: _Window) -> float:
        return w.overflow + sum(self.weight(f) * f.best for f in w.findings.values())

    def add(self, ev: Evidence) -> Decision:
        ip = ev.offender
        index = int(ev.ts // self.window)
        windows = self._windows
        w = windows.get(ip)
        if w is None or w.index < index:
            if w is not None:
                del windows[ip]  # re-made: to the back of the creation order
            elif len(windows) >= self.max_offenders:
                windows.popitem(last=False)
            w = windows[ip] = _Window(index)
        # else: evidence from a flow that closed late, after the window moved on: it joins the
        # current window rather than wiping it

        key = ev.key or f"#{next(self._unique)}"
        f = w.findings.get(key)
        s = ev.score
        if f is not None:
            f.reports += 1
            f.first, f.last = min(f.first, ev.ts), max(f.last, ev.ts)
            f.may_block = f.may_block or ev.may_block
            self._persist(f, ev)
            if s > f.best:
                f.best, f.description, f.detector = s, ev.description, ev.detector
        elif len(w.findings) < self.max_findings:
            f = w.findings[key] = _Finding(s, ev.ts, ev.ts, ev.detector, ev.description, ev.may_block)
            self._persist(f, ev)
        else:
            w.overflow += s
        w.may_block = w.may_block or ev.may_block
        w.detectors[ev.detector] = w.detectors.get(ev.detector, 0) + 1
        score = self.score(w)
        t = self.threshold
        shown = fmt_score(score, t)

        if self.is_blocked(ip, ev.ts):
            return Decision("alert", "", 0.0, score, f"{ip} is already blocked", t)
        if score < t:
            return Decision("alert", "", 0.0, score, f"score {shown} below threshold {t:g}", t)
        if not w.may_block:
            return Decision("alert", "", 0.0, score,
                            f"score {shown} >= {t:g} but no evidence that may block on its own", t)
        protected = self.allow.why_protected(ip)
        if protected is not None:
            return Decision("alert", "", 0.0, score, f"not blocked: {ip} is {protected}", t)
        pardon = self._pardoned.get(ip)
        if pardon is not None:
            until, covers = pardon
            if ev.ts >= until:
                del self._pardoned[ip]
            elif not self._beyond(w, covers):
                left = "forever" if until == float("inf") else f"for {format_duration(max(1, int(until - ev.ts)))} more"
                what = f" of {', '.join(sorted(covers))} evidence" if covers else ""
                return Decision("alert", "", 0.0, score, f"not blocked: an admin unblocked {ip}, pardoned{what} "
                                f"{left} (judge.pardon; `slipsq block {ip}` ends it)", t)
        if not self.enabled:
            return Decision("alert", "", 0.0, score, "not blocked: blocking is disabled (judge.block = false)", t)
        nets = _nets(ip)
        self._untrack(ip)  # a block of ip that ran out (not expired by the heap yet): replaced, not lifted
        lift = self._to_lift(nets)
        if len(self._blocked_until) - len(lift) >= self.max_blocks:
            return Decision("alert", "", 0.0, score, f"not blocked: {len(self._blocked_until)} blocks are "
                            "active, the most judge.max_blocks allows", t)

        for old in lift:
            self._lift(old)
        n = self._times_blocked.get(ip, 0)
        duration = 0.0
        if self.base_duration > 0:
            duration = min(self.base_duration * self.repeat_factor**n, self.max_duration)
        self._count_block(ip, n + 1)
        self._set_block(ip, ev.ts + duration if duration else float("inf"))
        if nets:
            self._nets_of[ip] = nets
            for net in nets:
                self._by_net.setdefault(net, OrderedDict())[ip] = None
        window = self.findings(w)
        parts = " + ".join(f"{fd.detector} {fmt_score(fd.score, 0.0)}" + (" x2" if fd.weight == 2 else "")
                           for fd in window[:4])
        if len(window) > 4:
            parts += f" + {len(window) - 4} more"
        return Decision("block", ip, duration, score,
                        f"score {shown} >= threshold {t:g} in this window ({parts})", t, tuple(window), tuple(lift))

    def _to_lift(self, nets: tuple[bytes, ...]) -> list[str]:
        """The judge's blocks a new block in `nets` lifts: the oldest of each full one until it has
        room for one more (one in each, at most, unless a reload lowered the bound: then as many as
        it takes; and lifting the /64's oldest may leave room in the /48)."""
        lift: list[str] = []
        for net in nets:
            members = self._by_net.get(net)
            if members is None:
                continue
            left = len(members) - sum(1 for ip in lift if net in self._nets_of[ip])
            oldest = iter(members)
            while left >= self.max_per_net[net[:3]]:
                ip = next(oldest)
                if ip not in lift:
                    lift.append(ip)
                    left -= 1
        return lift

    def _lift(self, ip: str) -> None:
        """Lift the judge's block of `ip` to make room in its network (its heap entry goes stale)."""
        self._blocked_until.pop(ip, None)
        self._untrack(ip)

    def _untrack(self, ip: str) -> None:
        """`ip`'s block is no longer the judge's to lift: out of the networks' lists."""
        nets = self._nets_of.pop(ip, None)
        for net in nets or ():
            members = self._by_net[net]
            del members[ip]
            if not members:
                del self._by_net[net]

    def findings(self, w: _Window) -> list[Finding]:
        """The window's findings as records, largest contribution first."""
        out = [Finding(f.detector, k, f.best, self.weight(f), f.first, f.last, f.reports, f.may_block,
                       f.description) for k, f in w.findings.items()]
        out.sort(key=lambda x: (-x.weight * x.score, x.first))
        return out

    def is_blocked(self, ip: str, now: float) -> bool:
        until = self._blocked_until.get(ip)
        return until is not None and now < until

    def expired(self, now: float) -> list[str]:
        """IPs whose block has run out at `now`; they are forgotten here (the sink removes the rule).
        O(expired) per call, not O(blocked): a heap of (expiry, ip), whose stale entries (a block
        lifted or renewed since) are skipped as they come up."""
        heap, until_of = self._expiry_heap, self._blocked_until
        gone = []
        while heap and heap[0][0] <= now:
            until, ip = heapq.heappop(heap)
            if until_of.get(ip) == until:
                del until_of[ip]
                self._untrack(ip)
                gone.append(ip)
        return gone

    def _set_block(self, ip: str, until: float) -> None:
        self._blocked_until[ip] = until
        if until != float("inf"):
            heapq.heappush(self._expiry_heap, (until, ip))
            if len(self._expiry_heap) > 2 * len(self._blocked_until) + 1024:  # many stale entries
                self._expiry_heap = [(u, i) for i, u in self._blocked_until.items() if u != float("inf")]
                heapq.heapify(self._expiry_heap)

    def _count_block(self, ip: str, times: int) -> None:
        counts = self._times_blocked
        counts.pop(ip, None)
        if len(counts) >= self.max_offenders:
            counts.popitem(last=False)  # a repeat count, never a block (those are in _blocked_until)
        counts[ip] = times

    def blocked(self) -> dict[str, float]:
        """The active blocks the judge knows: ip -> until (inf: no expiry). A copy."""
        return dict(self._blocked_until)

    def forget(self, ip: str) -> None:
        """An admin unblocked `ip`: drop its block and the evidence that led to it."""
        self._blocked_until.pop(ip, None)
        self._untrack(ip)
        self._windows.pop(ip, None)

    def pardon(self, ip: str, until: float, detectors: frozenset[str] = frozenset()) -> None:
        """An admin unblocked `ip`: before `until` (inf: never) the evidence of `detectors` (empty:
        of every detector) cannot block it again; it is still reported, with why. Other detectors'
        findings that reach the threshold by themselves still block (a host unblocked for a
        beacon-like camera upload that then scans the LAN). At most judge.max_blocks pardons (admins
        make them, not the network): the oldest is forgotten first."""
        self._pardoned.pop(ip, None)
        if len(self._pardoned) >= self.max_blocks:
            self._pardoned.popitem(last=False)
        self._pardoned[ip] = (until, detectors)

    def pardoned(self) -> dict[str, tuple[float, frozenset[str]]]:
        """ip -> (until, detectors) of every pardon (an ended one is dropped when its IP is judged)."""
        return dict(self._pardoned)

    def window_detectors(self, ip: str) -> frozenset[str]:
        """The detectors of the findings against `ip` in its open window (what decided its block)."""
        w = self._windows.get(ip)
        return frozenset(f.detector for f in w.findings.values()) if w is not None else frozenset()

    def _beyond(self, w: _Window, covers: frozenset[str]) -> bool:
        """The window's findings a pardon of `covers` does not cover reach the threshold by
        themselves, one of them may block (empty `covers`: the pardon covers all, never)."""
        if not covers:
            return False
        rest = [f for f in w.findings.values() if f.detector not in covers]
        return any(f.may_block for f in rest) and sum(self.weight(f) * f.best for f in rest) >= self.threshold

    def restore(self, ip: str, until: float, times: int = 1) -> None:
        """A block loaded from the store at start, or decided by an admin (until: inf for none). An
        admin's block ends the pardon of its IP."""
        self._pardoned.pop(ip, None)
        self._untrack(ip)  # the admin's block now: never lifted to make room
        self._set_block(ip, until)
        self._count_block(ip, max(self._times_blocked.get(ip, 0), times))

    def take_state(self, old: Judge) -> None:
        """After a reload: keep what the old judge knew (blocks, repeat counts, open windows)."""
        self._windows, self._blocked_until, self._times_blocked, self._expiry_heap, self._pardoned = (
            old._windows, old._blocked_until, old._times_blocked, old._expiry_heap, old._pardoned)
        self._by_net, self._nets_of = old._by_net, old._nets_of

    def prune(self, now: float) -> None:
        """Forget windows that ended (bounded memory on a long-running gateway). The front is the
        oldest window made, so this pops ended ones until the first that is open: O(windows ended).
        (A window made late for an older index, from evidence that closed late, waits behind it.)"""
        index = int(now // self.window)
        windows = self._windows
        while windows:
            w = next(iter(windows.values()))
            if w.index >= index:
                break
            windows.popitem(last=False)


# IPv6 addresses that stand for IPv4 hosts (their IPv4 address inside): NAT64's well-known and
# local-use prefixes (RFC 6052, RFC 8215), and Teredo. Behind NAT64 every IPv4 server shares one
# /64: bounded by network, unrelated servers would lift each other's blocks. Not bounded, as IPv4.
_EMBEDS_IPV4 = (bytes.fromhex("0064ff9b" + "00" * 8), bytes.fromhex("0064ff9b0001"), bytes.fromhex("20010000"))


def _nets(ip: str) -> tuple[bytes, ...]:
    """The /64 and /48 keys of an IPv6 address (Judge._by_net); () for IPv4 (an IPv4-mapped one too),
    for an IPv6 address standing for an IPv4 host (_EMBEDS_IPV4) and for text that is no address (a
    flow file's)."""
    try:
        addr = parse_ip(ip)
    except ValueError:
        return ()
    if addr.version != 6:
        return ()
    packed = addr.packed
    if packed.startswith(_EMBEDS_IPV4):  # 64:ff9b::/96, 64:ff9b:1::/48, 2001::/32
        return ()
    return (b"/64" + packed[:8], b"/48" + packed[:6])
