"""The engine's one call loop: each closed flow to the detectors' `on_flow` hooks, in order, past
their gates (and likewise each app event to the `on_app` hooks of its kind, each tick to `on_tick`,
with no gates); their evidence to the judge. The readable twin of `slipsq/_dispatch.pyx`
(slipsq.twins chooses; tests/test_dispatch.py holds them equal).

This is the engine's per-flow loop, taken out of engine.py so that it can be compiled: per closed
flow it calls up to a dozen hooks, and a detector whose `FlowGate` turns the flow away (most
detectors, for most flows) is not called at all. Errors go to the engine's `failed` callback as
they did (a failing hook never stops the others); evidence goes to its `evidence` callback in hook
order. No state of its own beyond the call list; no I/O.

`AppCalls` is the same for app events (Engine._app): the app packets the table hands up decoded,
each DNS answer's names learnt into ctx.dns_names, each event to the hooks of its kind. A DNS answer
comes with half of all flows, so this too is one compiled call per batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from slipsq import twins
from slipsq.detect.base import Context, FlowGate
from slipsq.flow import AppEvent, Flow
from slipsq.records import Evidence, Query

Hook = Callable[[Any], Sequence[Evidence]]  # on_flow (a Flow), on_app (an AppEvent), on_tick (the time)


class FlowCalls:
    """The `on_flow` hooks with their gates (None: every flow), and where evidence and errors go."""

    def __init__(self, hooks: Sequence[tuple[Hook, FlowGate | None]], evidence: Callable[[Evidence], None],
                 failed: Callable[[Any, Exception], None]) -> None:
        self.hooks = list(hooks)
        self.evidence = evidence
        self.failed = failed

    def run_flows(self, flows: Iterable[Flow], out: list[Any] | None, counters: Any) -> None:
        """Each of `flows` in order, in one call (Engine._hand_up): a flow that is not an
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


MAX_NAMES = 16  # names kept per answered address (a hostile resolver may give one address endless names)


class AppCalls:
    """App events to the `on_app` hooks of their kind (`by_kind`: kind -> FlowCalls without gates;
    `other` for a kind not in it), each DNS answer's names into `ctx.dns_names` first (bounded at
    `max_dns` addresses, least recently answered first, MAX_NAMES names each, and `max_names` names
    in all: 16 long names an address made an address cost 5.6 kB, not the 410 B the memory budget
    counted, so the least recently answered addresses go while the names are more); each DNS
    response goes to `out` as a Query command (None: nowhere)."""

    def __init__(self, by_kind: dict[str, FlowCalls], other: FlowCalls,
                 decode: Callable[[bytes, float], list[AppEvent]], ctx: Context, max_dns: int,
                 failed: Callable[[Any, Exception], None], max_names: int = 1 << 62) -> None:
        self.by_kind, self.other, self.decode = by_kind, other, decode
        self.ctx = ctx  # read per event: a reload hands the old names map to the new context
        self.max_dns, self.failed, self.max_names = max_dns, failed, max_names
        self._map: Any = None  # the names map `names` counts (counted again when the context has another)
        self.names = 0  # names in it

    def run_packets(self, packets: Iterable[tuple[float, bytes]], out: list[Any] | None, counters: Any) -> None:
        """The table's app packets (pop_app), in order: each decoded (a decoder error goes to
        `failed` as "app decoder" and loses only that packet), its events run as `run` does."""
        for ts, ip_packet in packets:
            try:
                events = self.decode(ip_packet, ts)
            except Exception as e:
                self.failed("app decoder", e)
                continue
            for event in events:
                self.run(event, out, counters)

    def run(self, event: AppEvent, out: list[Any] | None, counters: Any) -> None:
        """One event: counted; a DNS one teaches its answers' names, when a resolver the house trusts
        gave them (ctx.resolvers), and is exported; then the hooks."""
        counters.app_events += 1
        if event.kind == "dns":
            data = event.data
            query = data.get("query", "")
            answers = data.get("answers", ())
            if answers and self.ctx.resolvers.trusts(event.saddr, event.sport, event.daddr):  # sender: the resolver
                self._learn(answers, query)
            if out is not None and data.get("response", True):
                # a response goes to the client that asked (a log's query line has no answer yet)
                out.append(Query(event.ts, event.daddr, query, int(data.get("rcode") or 0), tuple(answers)))
        self.by_kind.get(event.kind, self.other).run(event)

    def _learn(self, answers: Iterable[Any], query: Any) -> None:
        """The query's name for each answered address (bounded: a hostile resolver may answer with
        endless addresses, and endless long names)."""
        names_map = self.ctx.dns_names
        if names_map is not self._map:
            self._map, self.names = names_map, sum(len(v) for v in names_map.values())
        for answer in answers:
            names = names_map.get(answer)
            if names is None:
                if len(names_map) >= self.max_dns:
                    self._forget_first()
                names = names_map[answer] = set()
            else:
                names_map.move_to_end(answer)
            if len(names) < MAX_NAMES and query not in names:
                while self.names >= self.max_names and len(names_map) > 1:
                    self._forget_first()  # never `answer`: it is the most recent
                names.add(query)
                self.names += 1

    def _forget_first(self) -> None:
        self.names -= len(self._map.popitem(last=False)[1])


def run_steps(engine: Any, table: Any, last: int, flows_of: Callable[[bytes], list[Flow]]) -> int:
    """`engine.step` for each message at the head of `table.msgs` (the pipeline's engine process:
    `table` is its RecordedTable, slipsq/pipeline.py, holding the table process's messages) that
    needs nothing else from the caller before or after its step: an "a" message numbered
    table.seq + 1 (then + 2, ...), not past `last` (the next snapshot the table process must hear the
    engine has passed), at whose time no tick is due, taken while the engine holds no command and
    the table process has been told every command in `table.cmds` (`table.told` of them). Each
    message taken becomes `table.seq` before its step, as RecordedTable.next_message makes it (a
    block decided in the step is the table process's at that message). Returns how many it took; a
    message it may not take is left first in `table.msgs` for the caller.

    The caller's loop did this message by message in Python, some 5,000 instructions of it a
    message (~250k messages on a capture of 200k flows); the compiled twin (_dispatch.run_steps)
    runs the same steps without a Python frame a message."""
    msgs, cmds, out = table.msgs, table.cmds, engine._out
    taken = 0
    while table.seq < last and msgs and not out and len(cmds) <= table.told:
        msg = msgs[0]
        if msg[0] != table.seq + 1 or msg[1] != "a":
            break
        now = msg[2]
        if (now if now > engine.now else engine.now) >= engine._next_tick:
            break  # a tick is due: Engine.step's _second, the caller's
        msgs.popleft()
        table.seq = msg[0]
        taken += 1
        if now > engine.now:
            engine.now = now
        engine._hand_up(msg[3], flows_of(msg[4]) if msg[4] else [])
    return taken


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


def make_app_calls(by_kind: dict[str, FlowCalls], other: FlowCalls, decode: Callable[[bytes, float], list[AppEvent]],
                   ctx: Context, max_dns: int, failed: Callable[[Any, Exception], None],
                   max_names: int = 1 << 62) -> AppCalls:
    """The compiled AppCalls, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq._dispatch")
    cls: type[AppCalls] = AppCalls if fast is None else fast.AppCalls
    return cls(by_kind, other, decode, ctx, max_dns, failed, max_names)


def steps_for(flows: Any, apps: Any) -> Callable[..., int]:
    """run_steps compiled when both call lists are (its twin's loop calls theirs in C), else the
    readable one."""
    fast = twins.compiled("slipsq._dispatch")
    if fast is not None and type(flows) is fast.FlowCalls and type(apps) is fast.AppCalls:
        return fast.run_steps  # type: ignore[no-any-return]
    return run_steps
