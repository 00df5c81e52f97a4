"""sources/nfqueue.py: the checks and error messages around the compiled queue (sources/_nfq.pyx).

Each way binding can fail becomes one SystemSetupError line an admin can act on, never a traceback;
the queue's figures reach `info` and `stats` as plain ints. A stand-in for `_nfq.Queue` raises what
the real one raises; one test binds a real queue twice (root only). How real packets get their
verdicts is tests/kernel's job (namespaces, veth, an NFQUEUE rule).
"""

from __future__ import annotations

import os
import secrets
import sys
import types
from typing import Any, ClassVar

import pytest

import slipsq.sources
from slipsq.config import CORE_OPTIONS, Config
from slipsq.errors import SystemSetupError
from slipsq.sources import nfqueue
from slipsq.sources.nfqueue import COPY_RANGE, DEFAULT_MAXLEN, NfqueueSource, QueueInfo, check_system
from slipsq.verdict.firewall import QueueCounters


def test_not_root_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemSetupError, match="inline mode needs root"):
        check_system()


def test_a_kernel_without_netfilter_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real_exists = os.path.exists
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os.path, "exists", lambda p: p != "/proc/net/netfilter" and real_exists(p))
    with pytest.raises(SystemSetupError, match="no netfilter"):
        check_system()


def test_root_with_netfilter_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os.path, "exists", lambda p: p == "/proc/net/netfilter")
    check_system()


class FakeQueue:
    """What sources/_nfq.Queue exposes; `runs` scripts what successive run() calls return."""

    runs: ClassVar[list[int]] = []

    def __init__(self, num: int, table: Any, *, maxlen: int, copy_range: int, gso: bool, bypass_mark: int = 0,
                 repeat_mark: int = 0) -> None:
        self.num, self.table, self.maxlen, self.copy_range = num, table, maxlen, copy_range
        self.bypass_mark, self.repeat_mark = bypass_mark, repeat_mark
        self.rcvbuf, self.fail_open, self.gso = 8_388_608, 1, gso
        self.closed = False
        self.calls: list[tuple[int, float, tuple[int, ...]]] = []

    def run(self, budget: int, timeout: float, fds: tuple[int, ...]) -> int:
        self.calls.append((budget, timeout, fds))
        return FakeQueue.runs.pop(0) if FakeQueue.runs else 0

    def stats(self) -> dict[str, Any]:
        return {"packets": 7, "accepted": 6, "dropped": True}

    def close(self) -> None:
        self.closed = True


def fake_nfq(monkeypatch: pytest.MonkeyPatch, queue: type | None) -> None:
    """`from slipsq.sources import _nfq` gives a module whose Queue is `queue` (None: an ImportError)."""
    fake = None if queue is None else types.SimpleNamespace(Queue=queue)
    monkeypatch.setitem(sys.modules, "slipsq.sources._nfq", fake)
    if fake is None:  # a package attribute left by an earlier import would be found first
        monkeypatch.delattr(slipsq.sources, "_nfq", raising=False)
    else:
        monkeypatch.setattr(slipsq.sources, "_nfq", fake, raising=False)


@pytest.mark.parametrize(("raised", "message"), [
    (BlockingIOError(11, "queue 3 is busy"),
     "another process (slipsq?) is bound to queue 3; stop it or use another --queue"),
    (PermissionError("cannot open nfnetlink_queue: [Errno 1]"),
     "cannot open NFQUEUE: cannot open nfnetlink_queue: [Errno 1] (need root and the nfnetlink_queue module: "
     "modprobe nfnetlink_queue)"),
    (OSError(22, "cannot set the packet copy mode"),
     "cannot bind NFQUEUE 3: [Errno 22] cannot set the packet copy mode"),
])
def test_each_bind_failure_is_one_line_naming_the_queue(monkeypatch: pytest.MonkeyPatch, raised: OSError,
                                                        message: str) -> None:
    class Failing(FakeQueue):
        def __init__(self, *a: Any, **k: Any) -> None:
            raise raised

    fake_nfq(monkeypatch, Failing)
    with pytest.raises(SystemSetupError) as e:
        NfqueueSource(3, object())
    assert str(e.value) == message and e.value.__cause__ is None and e.value.__suppress_context__


def test_a_machine_without_the_compiled_queue_says_how_to_build_it(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nfq(monkeypatch, None)  # the import fails as on a machine where it was never built
    with pytest.raises(SystemSetupError, match=r"inline mode is not built here .*libnetfilter-queue-dev"):
        NfqueueSource(0, object())


def test_info_and_stats_are_plain_values(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nfq(monkeypatch, FakeQueue)
    monkeypatch.setattr(FakeQueue, "runs", [])
    table = object()
    src = NfqueueSource(4, table, maxlen=128, gso=False)
    q = src.q
    assert isinstance(q, FakeQueue) and q.table is table and (q.maxlen, q.copy_range) == (128, COPY_RANGE)
    assert src.info == QueueInfo(4, 128, COPY_RANGE, 8_388_608, True, False)
    assert type(src.info.fail_open) is bool
    assert src.stats() == {"packets": 7, "accepted": 6, "dropped": 1}
    assert all(type(v) is int for v in src.stats().values())
    assert src.run(10, 0.5, [5, 6]) == 0 and q.calls[-1] == (10, 0.5, (5, 6))
    src.close()
    assert q.closed


def test_drain_stops_when_the_queue_is_dry_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nfq(monkeypatch, FakeQueue)
    src = NfqueueSource(1, object())
    assert src.info.maxlen == DEFAULT_MAXLEN
    monkeypatch.setattr(FakeQueue, "runs", [5, 3, 0, 9])
    q = src.q
    assert isinstance(q, FakeQueue)
    assert src.drain(1.0) == 8 and len(q.calls) == 3  # stopped at the first empty run
    monkeypatch.setattr(FakeQueue, "runs", [1] * 100)
    assert src.drain(0.2) == 4  # never more than seconds / 0.05 runs, however busy the queue


def test_kernel_counters_are_this_queues_line(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nfq(monkeypatch, FakeQueue)
    mine = QueueCounters(2, 123, 0, 2, COPY_RANGE, 0, 0, 42)
    monkeypatch.setattr(nfqueue, "queue_counters", lambda: {2: mine, 3: QueueCounters(3, 9, 0, 2, 0, 0, 0, 0)})
    assert NfqueueSource(2, object()).kernel() is mine
    assert NfqueueSource(5, object()).kernel() is None


def _can_bind() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    try:
        from slipsq.sources import _nfq  # noqa: F401
    except ImportError as e:
        return f"slipsq.sources._nfq is not built ({e})"
    return None


@pytest.mark.kernel
@pytest.mark.skipif(_can_bind() is not None, reason=str(_can_bind()))
def test_a_queue_already_bound_is_refused_with_the_real_kernel() -> None:
    from slipsq._flowtable import FlowTable

    num = 40000 + secrets.randbelow(20000)  # no rule sends packets here: binding diverts nothing
    first = NfqueueSource(num, FlowTable(Config(CORE_OPTIONS)))
    try:
        assert first.info.num == num and first.info.rcvbuf > 0
        with pytest.raises(SystemSetupError, match=f"bound to queue {num}"):
            NfqueueSource(num, FlowTable(Config(CORE_OPTIONS)))
        assert first.run(16, 0.01) == 0  # nothing queued: returns after the timeout
    finally:
        first.close()
