"""The judge: adds evidence up per offending IP per time window and decides alert or block.

The arithmetic, so an admin can check any decision by hand:

    score(ip, window) = sum over distinct findings of threat_level x confidence
    block when score >= judge.threshold, at least one finding may block, and the IP is not protected

Windows are `judge.window` seconds wide (1 hour by default, like Slips), aligned on multiples of the
width in flow time, so replay is deterministic. A finding that a detector reports again with the
same `key` counts once per window, at its highest score. A block lasts `judge.block_duration`;
each new block of the same IP lasts `judge.repeat_factor` times longer, up to
`judge.max_block_duration`. The judge decides only; the engine carries decisions to the sinks.
"""

from __future__ import annotations

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

    @property
    def score(self) -> float:
        return sum(self.findings.values())


class Judge:
    def __init__(self, config: Config, allow: AllowList) -> None:
        self.window = config["judge.window"]
        self.threshold = config["judge.threshold"]
        self.enabled = config["judge.block"]
        self.base_duration = config["judge.block_duration"]
        self.repeat_factor = config["judge.repeat_factor"]
        self.max_duration = config["judge.max_block_duration"]
        self.allow = allow
        self._windows: dict[str, _Window] = {}
        self._blocked_until: dict[str, float] = {}  # ip -> expiry (inf: no expiry)
        self._times_blocked: dict[str, int] = {}
        self._unique = count()

    def add(self, ev: Evidence) -> Decision:
        ip = ev.offender
        index = int(ev.ts // self.window)
        w = self._windows.get(ip)
        if w is None or w.index < index:
            w = self._windows[ip] = _Window(index)
        # else: evidence from a flow that closed late, after the window moved on: it joins the
        # current window rather than wiping it

        key = ev.key or f"#{next(self._unique)}"
        w.findings[key] = max(w.findings.get(key, 0.0), ev.score)
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

        n = self._times_blocked.get(ip, 0)
        duration = 0.0
        if self.base_duration > 0:
            duration = min(self.base_duration * self.repeat_factor**n, self.max_duration)
        self._times_blocked[ip] = n + 1
        self._blocked_until[ip] = ev.ts + duration if duration else float("inf")
        parts = ", ".join(f"{c} x {d}" for d, c in sorted(w.detectors.items()))
        return Decision("block", ip, duration, score,
                        f"score {score:.2f} >= threshold {self.threshold:g} in this window ({parts})")

    def is_blocked(self, ip: str, now: float) -> bool:
        until = self._blocked_until.get(ip)
        return until is not None and now < until

    def expired(self, now: float) -> list[str]:
        """IPs whose block has run out at `now`; they are forgotten here (the sink removes the rule)."""
        gone = [ip for ip, until in self._blocked_until.items() if now >= until]
        for ip in gone:
            del self._blocked_until[ip]
        return gone

    def forget(self, ip: str) -> None:
        """An admin unblocked `ip`: drop its block and the evidence that led to it."""
        self._blocked_until.pop(ip, None)
        self._windows.pop(ip, None)

    def restore(self, ip: str, until: float, times: int = 1) -> None:
        """A block loaded from the store at start (until: inf for no expiry)."""
        self._blocked_until[ip] = until
        self._times_blocked[ip] = max(self._times_blocked.get(ip, 0), times)

    def take_state(self, old: Judge) -> None:
        """After a reload: keep what the old judge knew (blocks, repeat counts, open windows)."""
        self._windows, self._blocked_until, self._times_blocked = (
            old._windows, old._blocked_until, old._times_blocked)

    def prune(self, now: float) -> None:
        """Forget windows that ended (bounded memory on a long-running gateway)."""
        index = int(now // self.window)
        for ip in [ip for ip, w in self._windows.items() if w.index < index]:
            del self._windows[ip]
