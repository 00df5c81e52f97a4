"""Sink: where the engine's decisions go (alert outputs, the replay recorder, the firewall and block
store). Subclass it and override only the hooks you need; the others do nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from slipsq.flow import Flow
    from slipsq.records import Alert


class Sink:
    def alert(self, alert: Alert) -> None:
        """Every alert (evidence plus the judge's decision), in decision order."""

    def block(self, ip: str, duration: float, alert: Alert) -> None:
        """The judge blocked `ip` for `duration` seconds (0: until unblocked) because of `alert`."""

    def unblock(self, ip: str, ts: float, reason: str, who: str) -> None:
        """A block ended: expired (`who` is "expiry"), or lifted by an admin (`who` names them)."""

    def flow(self, flow: Flow) -> None:
        """Every closed flow (not active-timeout reports)."""
