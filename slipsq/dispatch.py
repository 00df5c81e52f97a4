"""The engine's one call loop: each closed flow to the detectors' `on_flow` hooks, in order, past
their gates (and likewise each app event to the `on_app` hooks of its kind, each tick to `on_tick`,
with no gates); their evidence to the judge. The readable twin of `slipsq/_dispatch.pyx`
(slipsq.twins chooses; tests/test_dispatch.py holds them equal).

This is the engine's per-flow loop, taken out of engine.py so that it can be compiled: per closed
flow it calls up to a dozen hooks, and a detector whose `FlowGate` turns the flow away (most
detectors, for most flows) is not called at all. Errors go to the engine's `failed` callback as
they did (a failing hook never stops the others); evidence goes to its `evidence` callback in hook
order. No state of its own beyond the call list; no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from slipsq import twins
from slipsq.detect.base import FlowGate
from slipsq.flow import Flow
from slipsq.records import Evidence

Hook = Callable[[Any], Sequence[Evidence]]  # on_flow (a Flow), on_app (an AppEvent), on_tick (the time)


class FlowCalls:
    """The `on_flow` hooks with their gates (None: every flow), and where evidence and errors go."""

    def __init__(self, hooks: Sequence[tuple[Hook, FlowGate | None]], evidence: Callable[[Evidence], None],
                 failed: Callable[[Any, Exception], None]) -> None:
        self.hooks = list(hooks)
        self.evidence = evidence
        self.failed = failed

    def run_flows(self, flows: Iterable[Flow], out: list[Any] | None, counters: Any) -> None:
        """Each of `flows` in order, in one call (Engine._analyze): a flow that is not an
        active-timeout report counts in counters.flows and goes to `out` (None: nowhere) before
        the hooks see it."""
        n = 0
        try:
            for flow in flows:
                if flow.closed_by != "active":  # not flow.is_report
                    n += 1
                    if out is not None:
                        out.append(flow)
                self.run(flow)
        finally:
            counters.flows += n

    def run(self, arg: Any) -> None:
        """Each hook on `arg`, in order (a gate is given a Flow only: on_flow's)."""
        for fn, gate in self.hooks:
            if gate is not None and not _admits(gate, arg):
                continue
            try:
                evs = fn(arg)
            except Exception as e:
                self.failed(fn, e)
                continue
            if evs:  # most calls find nothing
                for ev in evs:
                    self.evidence(ev)


def _admits(gate: FlowGate, flow: Flow) -> bool:
    """The gate's answer; a flow it cannot judge (a field of an odd type) goes to the hook, as it
    would without a gate."""
    try:
        return gate.admits(flow)
    except Exception:
        return True


def make_flow_calls(hooks: Sequence[tuple[Hook, FlowGate | None]], evidence: Callable[[Evidence], None],
                    failed: Callable[[Any, Exception], None]) -> FlowCalls:
    """The compiled FlowCalls, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq._dispatch")
    cls: type[FlowCalls] = FlowCalls if fast is None else fast.FlowCalls
    return cls(hooks, evidence, failed)
