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

import struct
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
        head = msgs[0]
        # a message tuple, or a Run (either twin's) of plain "a" messages
        number, kind, now = head[:3] if type(head) is tuple else (head.seq, "a", head.now)
        if number != table.seq + 1 or kind != "a":
            break
        if (now if now > engine.now else engine.now) >= engine._next_tick:
            break  # a tick is due: Engine.step's _second, the caller's
        msg = take_first(msgs)
        table.seq = number
        taken += 1
        if now > engine.now:
            engine.now = now
        engine._hand_up(msg[3], flows_of(msg[4]) if msg[4] else [])
    return taken


# --- the pipeline's wire: a run of plain advances in one bytes (slipsq/pipeline.py, "Wire") ------
# The table process sends most of its messages as runs: a stretch of consecutive plain "a" messages
# (number, "a", now, [(ts, packet), ...], records, offset) in one bytes, which marshal reads as one
# object and the engine process's run_steps reads in place, where each message was a tuple of six
# objects and its app packets (~20,000 messages on a 300k-packet capture, one an app packet).
_RUN = struct.Struct("=qI")     # the first message's number, how many messages
_MSG = struct.Struct("=dqII")   # now, the capture's offset, app packets, bytes of records
_APP = struct.Struct("=dI")     # an app packet's time and length (its bytes follow)
_INT64 = (-(1 << 63), (1 << 63) - 1)
_MAX_NUMBER = 1 << 62


def _plain(m: Any) -> bool:
    """Whether message `m` is a plain advance a run can hold: (number, "a", float, [(float, bytes),
    ...], bytes, int): its number in [0, 2**62) (a run's numbers and the next one's stay far from
    the int64 edge; the table process counts from 1), its offset in int64, its counts and lengths
    in uint32."""
    if type(m) is not tuple or len(m) != 6:
        return False
    number, kind, now, app, recs, offset = m
    if not (type(number) is int and 0 <= number < _MAX_NUMBER and type(kind) is str and kind == "a"
            and type(now) is float and type(app) is list and len(app) <= 0xFFFFFFFF and type(recs) is bytes
            and len(recs) <= 0xFFFFFFFF and type(offset) is int and _INT64[0] <= offset <= _INT64[1]):
        return False
    return all(type(p) is tuple and len(p) == 2 and type(p[0]) is float and type(p[1]) is bytes
               and len(p[1]) <= 0xFFFFFFFF for p in app)


def pack_messages(msgs: list[Any]) -> list[Any]:
    """`msgs` (consecutive messages of the table process) for the wire: each stretch of consecutive
    plain "a" messages as one run's bytes (Run reads it), any other message as it is."""
    items: list[Any] = []
    i = 0
    while i < len(msgs):
        if not _plain(msgs[i]):
            items.append(msgs[i])
            i += 1
            continue
        j = i + 1
        while j < len(msgs) and _plain(msgs[j]) and msgs[j][0] == msgs[i][0] + (j - i):
            j += 1
        parts = [_RUN.pack(msgs[i][0], j - i)]
        for _, _, now, app, recs, offset in msgs[i:j]:
            parts.append(_MSG.pack(now, offset, len(app), len(recs)))
            for ts, packet in app:
                parts += [_APP.pack(ts, len(packet)), packet]
            parts.append(recs)
        items.append(b"".join(parts))
        i = j
    return items


class Run:
    """A run of plain "a" messages as the table process sent it (pack_messages), taken one by one:
    `seq` is the next one's number, `left` how many are left, `now` the next one's time, `take()`
    the next one as the message tuple it stands for. ValueError for bytes no run of this build's."""

    def __init__(self, blob: bytes) -> None:
        if len(blob) < _RUN.size:
            raise ValueError("a run of messages shorter than its head")
        self.blob = blob
        self.seq, self.left = _RUN.unpack_from(blob)
        self.off = _RUN.size

    def _head(self) -> tuple[float, int, int, int]:
        if self.left <= 0 or self.off + _MSG.size > len(self.blob):
            raise ValueError("a run of messages ends inside a message")
        head: tuple[float, int, int, int] = _MSG.unpack_from(self.blob, self.off)
        return head

    @property
    def now(self) -> float:
        return self._head()[0]

    def take(self) -> tuple[Any, ...]:
        """The next message, (number, "a", now, [(ts, packet), ...], records, offset), taken."""
        now, offset, napps, nrecs = self._head()
        p = self.off + _MSG.size
        app = []
        for _ in range(napps):
            if p + _APP.size > len(self.blob):
                raise ValueError("a run of messages ends inside an app packet")
            ts, length = _APP.unpack_from(self.blob, p)
            if p + _APP.size + length > len(self.blob):
                raise ValueError("a run of messages ends inside an app packet")
            app.append((ts, self.blob[p + _APP.size:p + _APP.size + length]))
            p += _APP.size + length
        if p + nrecs > len(self.blob):
            raise ValueError("a run of messages ends inside a message")
        msg = (self.seq, "a", now, app, self.blob[p:p + nrecs], offset)
        self.off, self.seq, self.left = p + nrecs, self.seq + 1, self.left - 1
        return msg


def take_first(msgs: Any) -> tuple[Any, ...]:
    """The first message of the deque `msgs` taken: a message tuple, or the next one of the run
    first in it (the run goes when its last is taken)."""
    head = msgs[0]
    if type(head) is tuple:
        return msgs.popleft()  # type: ignore[no-any-return]
    msg: tuple[Any, ...] = head.take()
    if not head.left:
        msgs.popleft()
    return msg


def make_run(blob: bytes) -> Any:
    """The compiled Run, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq._dispatch")
    return Run(blob) if fast is None else fast.Run(blob)


def packer() -> Callable[[list[Any]], list[Any]]:
    """The compiled pack_messages, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq._dispatch")
    return pack_messages if fast is None else fast.pack_messages  # type: ignore[no-any-return]


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
