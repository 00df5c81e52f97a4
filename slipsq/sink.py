"""Sinks: where the engine's commands end up (alert writers, the flow writer, the replay recorder,
the inline firewall and block store), and `Fanout`, the one place that carries a batch of commands
to a list of sinks. Subclass Sink and override only the hooks you need; the others do nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from slipsq.flow import Flow
from slipsq.records import Alert, Block, Command, Query, Unblock


class Sink:
    def alert(self, alert: Alert) -> None:
        """Every alert (evidence plus the judge's decision), in decision order."""

    def block(self, block: Block) -> None:
        """A block was decided (by the judge, an admin, or re-applied from the store)."""

    def unblock(self, unblock: Unblock) -> None:
        """A block ended: expired (`who` is "expiry"), or lifted by an admin (`who` names them)."""

    def flow(self, flow: Flow) -> None:
        """Every closed flow (not active-timeout reports), when the engine exports flows."""

    def query(self, query: Query) -> None:
        """Every DNS answer (who asked which name), when the engine exports queries."""


class Fanout:
    """Carries commands to sinks, in order: each command to every sink before the next command.

    `on_error`: None lets a sink's exception propagate (replay: a bug must be loud). Given (the
    daemon), the exception is handed to on_error(what, exception) and only that one call is lost:
    the other sinks (the block store) still get the command."""

    def __init__(self, sinks: Sequence[Sink], on_error: Callable[[str, Exception], None] | None = None) -> None:
        self.sinks = list(sinks)
        self.on_error = on_error
        # dispatch by record type, built once: only the sinks that override a hook are called
        self._calls: dict[type, list[tuple[str, Callable[[Any], None]]]] = {
            kind: [(f"{type(s).__name__}.{hook}", getattr(s, hook)) for s in self.sinks
                   if getattr(type(s), hook) is not getattr(Sink, hook)]
            for kind, hook in ((Alert, "alert"), (Block, "block"), (Unblock, "unblock"), (Flow, "flow"),
                                    (Query, "query"))}

    def wants(self, kind: type) -> bool:
        """True when some sink takes commands of this kind (e.g. Flow: export flows at all?)."""
        return bool(self._calls[kind])

    def __call__(self, commands: Iterable[Command]) -> None:
        calls = self._calls
        for cmd in commands:
            for name, fn in calls[type(cmd)]:
                if self.on_error is None:
                    fn(cmd)
                    continue
                try:
                    fn(cmd)
                except Exception as e:
                    self.on_error(name, e)
