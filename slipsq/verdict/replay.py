"""The replay sink: records blocks and unblocks instead of touching the kernel.

Dropping is done by the flow table itself (a blocked IP's later packets are counted as dropped and
never reach the flow table), exactly as the kernel rule will do inline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from slipsq.records import Block, Unblock
from slipsq.sink import Sink


@dataclass
class ReplayRecorder(Sink):
    blocks: list[tuple[float, str, float, str]] = field(default_factory=list)  # ts, ip, duration, detector
    unblocks: list[tuple[float, str, str]] = field(default_factory=list)

    def block(self, block: Block) -> None:
        self.blocks.append((block.ts, block.ip, block.duration, block.detector))

    def unblock(self, unblock: Unblock) -> None:
        self.unblocks.append((unblock.ts, unblock.ip, unblock.reason))

    @property
    def blocked_ips(self) -> list[str]:
        return sorted({ip for _, ip, _, _ in self.blocks})
