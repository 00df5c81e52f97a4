"""A real `slipsq.daemon.Daemon` without a kernel, for the control socket's clients (`slipsq top`) and
the metrics: the real engine, judge, worker thread, block store, control server and request handler;
only the NFQUEUE source (its counters are set by the test) and the firewall (a set in memory) are
stand-ins, and a thread plays the packet loop (it runs what the control thread posts to it).

    with running_daemon(tmp_path) as d:
        d.source.counters["packets"] = 1000
        d.judged_block("203.0.113.7", "beacon")
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from slipsq import runmode
from slipsq.control import ControlServer
from slipsq.daemon import Daemon, Worker
from slipsq.output import inline as inline_outputs
from slipsq.output.metrics import Tally
from slipsq.records import Alert, Decision, Evidence
from slipsq.service import Notifier, Service
from slipsq.sink import Fanout
from slipsq.sources.nfqueue import QueueInfo
from slipsq.verdict.firewall import Firewall, QueueCounters
from slipsq.verdict.store import BlockStore


class FakeSource:
    """The NFQUEUE source's counters, as the test sets them."""

    def __init__(self) -> None:
        self.counters = {"packets": 0, "accepted": 0, "dropped": 0, "errors": 0}
        self.queue = QueueCounters(5, 1234, 0, 2, 0xFFFF, 0, 0, 0)
        self.info = QueueInfo(5, 1024, 0xFFFF, 1 << 20, True, True)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    def kernel(self) -> QueueCounters | None:
        return self.queue


class _Backend:
    name = "fake"


class FakeFirewall:
    def __init__(self) -> None:
        self.set: dict[str, float | None] = {}
        self.backend = _Backend()
        self.allow: Any = None

    def update(self, adds: Any, dels: Any) -> list[tuple[str, str]]:
        for ip in dels:
            self.set.pop(ip, None)
        for ip, seconds in adds:
            self.set[ip] = seconds
        return []

    def members(self) -> dict[str, int]:
        return {ip: int(s or 0) for ip, s in self.set.items()}

    def drop_counters(self) -> tuple[int, int]:
        return 0, 0


class KernelFreeDaemon(Daemon):
    """Daemon.start's wiring, minus the kernel: see the module docstring."""

    def __init__(self, state_dir: Path, config: dict[str, Any] | None = None) -> None:
        super().__init__(5, False, None, str(state_dir))
        self.cfg = runmode.load_config(None, config)
        self.maxlen = 1024
        self.allow = runmode.make_allow(self.cfg)
        self.protected = None
        self.svc = Service(Notifier(None))
        from slipsq.service import RecentAlerts

        self.svc.sinks = [RecentAlerts()]
        self.store = BlockStore(self.state_dir)
        self.fw: Any = FakeFirewall()
        self.tally = Tally()
        self.outputs = inline_outputs.build(self.cfg, self.cfg["output.format"], "NFQ#5", self.svc.log)
        # the fake stands in for the Firewall by its duck type (the worker calls its update)
        self.worker = Worker(cast(Firewall, self.fw), self.store,
                             Fanout([*self.svc.sinks, *self.outputs.sinks, self.tally]))
        self.engine = runmode.build_engine(self.cfg, [], self.allow)
        self.source: Any = FakeSource()
        self.control = ControlServer(self.state_dir, self.handle)

    def serve(self) -> None:
        """Start the worker, the control thread and a thread that plays the packet loop."""
        self.worker.start()
        self._spawn(self._serve_control, "fake-control")
        self._spawn(self._fake_loop, "fake-packet-loop")

    def _fake_loop(self) -> None:
        while not self._threads_stop.wait(0.02):
            self.beat()
            self._run_calls()

    def judged_block(self, ip: str, detector: str, description: str = "beacon every 2 s") -> None:
        """A block as the judge decides one: its alert, then the Block, through the worker."""
        ev = Evidence(time.time(), detector, ip, "192.168.1.66", ip, 443, "tcp", description, 1.0, 0.9)
        alert = Alert(ev, Decision("block", ip, 600.0, 1.8, "score 1.80 >= 1.00"), decided=time.time())
        from slipsq.records import Block

        def decide() -> Any:  # on the loop, as the engine decides; the loop never waits for the worker
            self.engine.counters.alerts += 1
            self.engine.counters.blocks += 1
            self.engine.table.block(ip)
            self.engine.judge.restore(ip, time.time() + 600.0)
            return self.worker.submit([alert, Block(ip, time.time(), 600.0, "beacon", "judge", alert)])

        self.on_loop(decide).result(10)

    def alert(self, ip: str, detector: str, description: str) -> None:
        ev = Evidence(time.time(), detector, ip, ip, "198.51.100.1", 22, "tcp", description, 0.5, 0.5)
        alert = Alert(ev, Decision("alert", "", 0.0, 0.25, "score 0.25 < 1.00"), decided=time.time())

        def decide() -> Any:
            self.engine.counters.alerts += 1
            return self.worker.submit([alert])

        self.on_loop(decide).result(10)

    def close(self) -> None:
        self._threads_stop.set()
        self.control.close()
        self.worker.stop()
        self.store.close()


@contextmanager
def running_daemon(state_dir: Path, config: dict[str, Any] | None = None) -> Iterator[KernelFreeDaemon]:
    d = KernelFreeDaemon(state_dir, config)
    d.serve()
    try:
        yield d
    finally:
        d.close()


def wait_for(pred: Any, timeout: float = 20.0, step: float = 0.05) -> bool:
    """True once pred() is (a bounded loop)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
