"""The judge: adds evidence up per offending IP per time window and decides alert or block.

The arithmetic, so an admin can check any decision by hand:

    score(ip, window) = sum over distinct findings of threat_level x confidence
    block when score >= judge.threshold, at least one finding may block, and the IP is not protected

Windows are `judge.window` seconds wide (1 hour by default, like Slips), aligned on multiples of the
width in flow time, so replay is deterministic. A finding that a detector reports again with the
same `key` counts once per window, at its highest score. A block lasts `judge.block_duration`;
each new block of the same IP lasts `judge.repeat_factor` times longer, up to
`judge.max_block_duration`. The judge decides only; the engine carries decisions to the sinks.

Bounded, because evidence comes from the network (forged sources make an offender per packet):
at most `judge.max_offenders` open windows and repeat counts (the least recently judged offender's
are forgotten first: that loses evidence or a repeat count, never a block), at most
`judge.max_findings` findings per window (later ones still alert, they no longer add), and at most
`judge.max_blocks` active blocks: past it a new block is refused and said so, so the bound never
forgets an active block. Every operation is O(1) (amortized): block expiry is a heap, windows are
pruned from the front of their creation order.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import count

from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.records import Decision, Evidence


@dataclass
class _Window:
    index: int
    findings: dict[str, float] = field(default_factory=dict)  # key -> best score
    may_block: bool = False
    detectors: dict[str, int] = field(default_factory=dict)  # detector -> pieces of evidence
    score: float = 0.0  # sum of findings, kept as they change (no sum per piece of evidence)


class Judge:
    def __init__(self, config: Config, allow: AllowList) -> None:
        self.window = config["judge.window"]
        self.threshold = config["judge.threshold"]
        self.enabled = config["judge.block"]
        self.base_duration = config["judge.block_duration"]
        self.repeat_factor = config["judge.repeat_factor"]
        self.max_duration = config["judge.max_block_duration"]
        self.max_offenders = config["judge.max_offenders"]
        self.max_findings = config["judge.max_findings"]
        self.max_blocks = config["judge.max_blocks"]
        self.allow = allow
        # ip -> its window, in order of window creation (pruning pops the front)
        self._windows: OrderedDict[str, _Window] = OrderedDict()
        self._blocked_until: dict[str, float] = {}  # ip -> expiry (inf: no expiry)
        self._expiry: list[tuple[float, str]] = []  # heap of (until, ip); stale entries skipped
        self._times_blocked: OrderedDict[str, int] = OrderedDict()  # least recently blocked first
        self._unique = count()

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
        findings = w.findings
        before = findings.get(key)
        if before is None:
            if len(findings) < self.max_findings:
                findings[key] = ev.score
                w.score += ev.score
        elif ev.score > before:
            findings[key] = ev.score
            w.score += ev.score - before
        w.may_block = w.may_block or ev.may_block
        w.detectors[ev.detector] = w.detectors.get(ev.detector, 0) + 1
        score = w.score

        if self.is_blocked(ip, ev.ts):
            return Decision("alert", "", 0.0, score, f"{ip} is already blocked")
        if score < self.threshold:
            return Decision("alert", "", 0.0, score, f"score {score:.2f} below threshold {self.threshold:g}")
        if not w.may_block:
            return Decision("alert", "", 0.0, score,
                            f"score {score:.2f} >= {self.threshold:g} but no evidence that may block on its own")
        protected = self.allow.why_protected(ip)
        if protected is not None:
            return Decision("alert", "", 0.0, score, f"not blocked: {ip} is {protected}")
        if not self.enabled:
            return Decision("alert", "", 0.0, score, "not blocked: blocking is disabled (judge.block = false)")
        if len(self._blocked_until) >= self.max_blocks:
            return Decision("alert", "", 0.0, score, f"not blocked: {len(self._blocked_until)} blocks are "
                            f"active, the most judge.max_blocks allows")

        n = self._times_blocked.pop(ip, 0)
        duration = 0.0
        if self.base_duration > 0:
            duration = min(self.base_duration * self.repeat_factor**n, self.max_duration)
        self._count_block(ip, n + 1)
        self._set_block(ip, ev.ts + duration if duration else float("inf"))
        parts = ", ".join(f"{c} x {d}" for d, c in sorted(w.detectors.items()))
        return Decision("block", ip, duration, score,
                        f"score {score:.2f} >= threshold {self.threshold:g} in this window ({parts})")

    def is_blocked(self, ip: str, now: float) -> bool:
        until = self._blocked_until.get(ip)
        return until is not None and now < until

    def _set_block(self, ip: str, until: float) -> None:
        self._blocked_until[ip] = until
        if until != float("inf"):
            heapq.heappush(self._expiry, (until, ip))
            if len(self._expiry) > 2 * len(self._blocked_until) + 64:  # stale entries: rebuild (amortized)
                self._expiry = [(u, i) for i, u in self._blocked_until.items() if u != float("inf")]
                heapq.heapify(self._expiry)

    def _count_block(self, ip: str, times: int) -> None:
        counts = self._times_blocked
        counts.pop(ip, None)
        if len(counts) >= self.max_offenders:
            counts.popitem(last=False)  # a repeat count, never a block (those are in _blocked_until)
        counts[ip] = times

    def expired(self, now: float) -> list[str]:
        """IPs whose block has run out at `now`; they are forgotten here (the sink removes the rule)."""
        gone = []
        heap, blocked = self._expiry, self._blocked_until
        while heap and heap[0][0] <= now:
            until, ip = heapq.heappop(heap)
            if blocked.get(ip) == until:  # else stale: unblocked or re-blocked since
                del blocked[ip]
                gone.append(ip)
        return gone

    def blocked(self) -> dict[str, float]:
        """The active blocks the judge knows: ip -> until (inf: no expiry). A copy."""
        return dict(self._blocked_until)

    def forget(self, ip: str) -> None:
        """An admin unblocked `ip`: drop its block and the evidence that led to it."""
        self._blocked_until.pop(ip, None)
        self._windows.pop(ip, None)

    def restore(self, ip: str, until: float, times: int = 1) -> None:
        """A block loaded from the store at start (until: inf for no expiry)."""
        self._set_block(ip, until)
        self._count_block(ip, max(self._times_blocked.get(ip, 0), times))

    def take_state(self, old: Judge) -> None:
        """After a reload: keep what the old judge knew (blocks, repeat counts, open windows)."""
        self._windows, self._blocked_until, self._times_blocked, self._expiry = (
            old._windows, old._blocked_until, old._times_blocked, old._expiry)

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
