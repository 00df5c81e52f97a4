"""The queue's idle wait on a real NFQUEUE (gateway namespace): `Queue.run` with nothing queued
returns at its timeout, never before it. The daemon's loop ticks the engine when `now >= next_tick`
(next_tick = last tick + IDLE_WAKE) after each `run(…, IDLE_WAKE)`; a run that came back even 1 ms
early (the poll's milliseconds were rounded down) missed every other idle turn, so flows expired,
blocks ended and detectors ticked once in 2 s instead of once a second."""

from __future__ import annotations

import json
import sys

import pytest

from tests.kernel.lab import Lab

pytestmark = pytest.mark.kernel

IDLE = r"""
import json, time
from slipsq._flowtable import FlowTable
from slipsq.runmode import load_config
from slipsq.sources._nfq import Queue
q = Queue(8, FlowTable(load_config(None)))
waits = []
for timeout in (0.3, 0.25, 0.2, 0.3, 0.05):
    t0 = time.time()  # the clock the daemon compares with next_tick (and the queue's deadline)
    handled = q.run(budget=16, timeout=timeout)
    waits.append([timeout, time.time() - t0, handled])
q.close()
print(json.dumps(waits))
"""


def test_an_idle_queue_waits_its_whole_timeout(lab: Lab) -> None:
    waits = json.loads(lab.sh(lab.gw, sys.executable, "-c", IDLE).stdout)
    for timeout, took, handled in waits:
        assert handled == 0  # no rule sends anything to queue 8: the wait was idle
        # never early; late by at most a busy machine's scheduling
        assert timeout <= took < timeout + 0.5, waits
