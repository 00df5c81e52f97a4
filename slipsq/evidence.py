"""Evidence: what a detector found, as data. Alerts, blocks and the audit trail are built from it.

Threat levels follow Slips: info 0, low 0.2, medium 0.5, high 0.8, critical 1.0. The judge sums
threat_level × confidence per offender per time window (see judge.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from slipsq.flow import Flow

INFO, LOW, MEDIUM, HIGH, CRITICAL = 0.0, 0.2, 0.5, 0.8, 1.0
THREAT_NAMES = {INFO: "info", LOW: "low", MEDIUM: "medium", HIGH: "high", CRITICAL: "critical"}


def threat_name(level: float) -> str:
    return THREAT_NAMES.get(level, f"{level:.2f}")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One finding against one IP (`offender`, the IP the judge would block).

    `src_ip`/`dst_ip`/`dst_port`/`proto` name the 4-tuple (or the scan's source and one target)
    that shows it. `may_block=False` marks evidence that is reported and counted but can never cause
    a block on its own (the judge needs at least one blocking piece in the window).
    `key` lets a detector say "this is the same finding as before" (e.g. the same tuple matched the
    same model again); the judge counts a key once per window, with its highest score.
    """

    ts: float
    detector: str
    offender: str
    src_ip: str
    dst_ip: str
    dst_port: int
    proto: str
    description: str
    threat_level: float
    confidence: float
    label: str = ""
    may_block: bool = True
    key: str = ""
    flows: tuple[Flow, ...] = ()

    @property
    def score(self) -> float:
        return self.threat_level * self.confidence
