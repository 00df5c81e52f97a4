"""The engine's flow table in a `--queue A:B` daemon (slipsq.multiqueue): what the queue workers'
tables emit arrives here, and what the engine does to its table (blocks, unblocks, app kinds) leaves
from here for every worker. It holds no flow itself and does no I/O: multiqueue.WorkerPool fills
`closed`/`app` and sends `take_ops()`.
"""

from __future__ import annotations

from typing import Any

from slipsq.flow import Flow


class RemoteTable:
    """The engine's flow table in a multi-worker daemon: the workers' closed flows and app packets
    arrive here (WorkerPool), blocks and app kinds leave from here to every worker. The engine
    cannot tell it from a FlowTable: `pending`, `pop_closed`, `pop_app`, `block`, `unblock`,
    `set_app_kinds`, `stats`; expiry happens in each worker, once a second of its own clock."""

    def __init__(self) -> None:
        self.closed: list[Flow] = []
        self.app: list[tuple[float, bytes]] = []
        self.blocked: set[str] = set()
        self.kinds: frozenset[str] = frozenset()
        self.outbox: list[tuple[str, Any]] = []  # ops for every worker, in order, since the last take
        self.worker_tables: dict[int, dict[str, int]] = {}  # queue -> its table's last stats
        self.worker_bytes: dict[int, int] = {}

    @property
    def pending(self) -> bool:
        return bool(self.closed) or bool(self.app)

    def pop_closed(self) -> list[Flow]:
        out, self.closed = self.closed, []
        return out

    def pop_app(self) -> list[tuple[float, bytes]]:
        out, self.app = self.app, []
        return out

    def _op(self, op: str, ip: str) -> None:
        if self.outbox and self.outbox[-1][0] == op:
            self.outbox[-1][1].append(ip)  # a burst of blocks is one op per worker
        else:
            self.outbox.append((op, [ip]))

    def block(self, ip: str) -> None:
        if ip not in self.blocked:
            self.blocked.add(ip)
            self._op("block", ip)

    def unblock(self, ip: str) -> None:
        if ip in self.blocked:
            self.blocked.discard(ip)
            self._op("unblock", ip)

    def is_blocked(self, ip: str) -> bool:
        return ip in self.blocked

    def set_app_kinds(self, kinds: frozenset[str]) -> None:
        self.kinds = frozenset(kinds)
        self.outbox.append(("kinds", sorted(self.kinds)))

    def take_ops(self) -> list[tuple[str, Any]]:
        out, self.outbox = self.outbox, []
        return out

    def state_ops(self) -> list[tuple[str, Any]]:
        """What a new worker must know first: the blocked addresses and the app kinds."""
        return [("block", sorted(self.blocked)), ("kinds", sorted(self.kinds))]

    def expire(self, now: float) -> None:
        """Each worker expires its own flows every second; the engine's call has nothing to do."""

    def close_all(self, now: float) -> None:
        """Workers emit their open flows only when they stop; nothing to do here."""

    def stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.worker_tables.values():
            for k, v in s.items():
                out[k] = out.get(k, 0) + int(v)
        return out

    def memory(self) -> int:
        return sum(self.worker_bytes.values())
