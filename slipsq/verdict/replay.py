"""The replay sink: records blocks and unblocks instead of touching the kernel.

Dropping is done by the flow table itself (a blocked IP's later packets are counted as dropped and
never reach the flow table), exactly as the kernel rule will do inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slipsq.records import Alert
from slipsq.sink import Sink


@dataclass
class ReplayRecorder(Sink):
    blocks: list[tuple[float, str, float, str]] = field(default_factory=list)  # ts, ip, duration, detector
    unblocks: list[tuple[float, str, str]] = field(default_factory=list)

    def block(self, ip: str, duration: float, alert: Alert) -> None:
        self.blocks.append((alert.evidence.ts, ip, duration, alert.evidence.detector))

    def unblock(self, ip: str, ts: float, reason: str, who: str) -> None:
        self.unblocks.append((ts, ip, reason))

    @property
    def blocked_ips(self) -> list[str]:
        return sorted({ip for _, ip, _, _ in self.blocks})
