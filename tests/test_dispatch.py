"""The engine's per-flow loop (slipsq/dispatch.py and its compiled twin slipsq/_dispatch.pyx) and the
flow gates detectors declare (detect.base.FlowGate).

Two things must hold for the gates to be a pure shortcut: both loops call the same hooks in the
same order with the same results, errors and evidence routed as the engine's own loop did; and a
gated detector, for every flow its gate turns away, returns no evidence and changes nothing, so
that skipping the call is the same as making it (checked here for each detector that has a gate,
on flows drawn around its thresholds).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq import dispatch, twins
from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.detect import DETECTORS
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, FlowGate
from slipsq.detect.inuse import ServersInUse
from slipsq.flow import AppEvent, Flow
from slipsq.records import Alert, Evidence, Query
from slipsq.runmode import all_options

c_dispatch = pytest.importorskip("slipsq._dispatch", reason="the compiled extension is not built")

TWINS = [dispatch.FlowCalls, c_dispatch.FlowCalls]
ADDRS = ("10.0.0.5", "192.168.1.20", "198.51.100.7", "203.0.113.9", "2001:db8::4")
PORTS = (22, 53, 80, 443, 1023, 1024, 1883, 3478, 5222, 6667, 8080, 40000, 65535)
STATES = ("S_", "S_RA", "SA_SA", "SPA_SPA", "FSPA_FSPA", "S_SA", "CON", "INT", "")

times = st.floats(0, 2e9, allow_nan=False, allow_infinity=False)
flows = st.builds(
    lambda start, dur, proto, src, sport, dst, dport, spkts, dpkts, sbytes, dbytes, state, closed_by:
    Flow(start, start + dur, proto, src, sport, dst, dport, spkts, dpkts, sbytes, dbytes, state,
         "<->" if dpkts else "->", 0, 0, "", closed_by),
    times, st.one_of(st.floats(0, 4000, allow_nan=False), st.sampled_from([0.0, 1499.9, 1500.0, 1500.1])),
    st.sampled_from(("tcp", "udp", "icmp", "ipv6-icmp", "gre")), st.sampled_from(ADDRS), st.sampled_from(PORTS),
    st.sampled_from(ADDRS), st.sampled_from(PORTS), st.integers(0, 40), st.integers(0, 40),
    st.one_of(st.integers(0, 40_000), st.sampled_from([999, 1000, 16_383, 16_384])),
    st.one_of(st.integers(0, 40_000), st.just(0)), st.sampled_from(STATES),
    st.sampled_from(("fin", "rst", "idle", "active", "end", "evict", "file")))
gates = st.one_of(st.none(), st.builds(
    FlowGate, st.one_of(st.none(), st.frozensets(st.sampled_from(("tcp", "udp", "icmp")))), st.booleans(),
    st.sampled_from([0.0, 1.0, 1500.0]), st.sampled_from([0, 1000, 16_384]), st.booleans(),
    st.sampled_from([0, 1024]), st.frozensets(st.sampled_from(PORTS), max_size=4)))


def recorder(calls: list[Any]) -> tuple[Callable[..., Any], Callable[..., Any], Callable[[int], Any]]:
    def evidence(ev: Any) -> None:
        calls.append(("evidence", ev))

    def failed(fn: Any, e: Exception) -> None:
        calls.append(("failed", fn.__name__, str(e)))

    def hook(i: int) -> Callable[[Flow], Any]:
        def on_flow(flow: Flow) -> Any:
            calls.append(("call", i, flow.start))
            if flow.dport == 1883 and i == 1:
                raise ValueError("boom")
            return [f"ev{i}"] if flow.dport == 8080 else NO_EVIDENCE

        on_flow.__name__ = f"hook{i}"
        return on_flow

    return evidence, failed, hook


@settings(max_examples=300, deadline=None)
@given(st.lists(gates, min_size=1, max_size=5), st.lists(flows, max_size=25))
def test_both_loops_call_the_same_hooks_route_the_same_evidence_and_errors(gs: list[FlowGate | None],
                                                                         fs: list[Flow]) -> None:
    seen = []
    for cls in TWINS:
        calls: list[Any] = []
        evidence, failed, hook = recorder(calls)
        loop = cls([(hook(i), g) for i, g in enumerate(gs)], evidence, failed)
        for f in fs:
            loop.run(f)
        seen.append(calls)
    assert seen[0] == seen[1]
    # and the readable definition: a hook is called exactly for the flows its gate admits
    want = [(i, f.start) for f in fs for i, g in enumerate(gs) if g is None or g.admits(f)]
    assert [(c[1], c[2]) for c in seen[0] if c[0] == "call"] == want


@settings(max_examples=200, deadline=None)
@given(st.lists(gates, min_size=1, max_size=4), st.lists(flows, max_size=25), st.booleans())
def test_run_flows_is_the_engines_analyze_for_each_flow(gs: list[FlowGate | None], fs: list[Flow],
                                                         export: bool) -> None:
    """The engine hands each batch of closed flows to run_flows: per flow, in order, count it unless
    it is a report, export it (before its evidence) when asked, then run the hooks; both loops alike,
    and the count kept when a hook's error propagates mid-batch."""
    seen = []
    for cls in TWINS:
        calls: list[Any] = []
        evidence, failed, hook = recorder(calls)
        loop = cls([(hook(i), g) for i, g in enumerate(gs)], evidence, failed)
        counters = type("Counters", (), {"flows": 5})()
        out: list[Any] | None = calls if export else None  # exported flows land among the calls
        loop.run_flows(iter(fs), out, counters)
        seen.append((calls, counters.flows))
    assert seen[0] == seen[1]
    calls, n = seen[0]
    assert n == 5 + sum(f.closed_by != "active" for f in fs)
    if export:
        assert [c for c in calls if isinstance(c, Flow)] == [f for f in fs if f.closed_by != "active"]
    for cls in TWINS:  # an error that propagates (replay: a bug is loud) still leaves the count right
        calls = []
        evidence, _, hook = recorder(calls)

        def strict(fn: Any, e: Exception) -> None:
            raise e

        loop = cls([(hook(1), None)], evidence, strict)
        counters = type("Counters", (), {"flows": 0})()
        batch = [Flow(1.0, 2.0, "tcp", "a", 1, "b", 80), Flow(2.0, 3.0, "tcp", "a", 1, "b", 1883),
                 Flow(3.0, 4.0, "tcp", "a", 1, "b", 80)]
        with pytest.raises(ValueError, match="boom"):
            loop.run_flows(batch, None, counters)
        assert counters.flows == 2 and [c[2] for c in calls] == [1.0, 2.0]


@pytest.mark.parametrize("cls", TWINS)
def test_odd_field_types_reach_the_hook_instead_of_failing(cls: Any) -> None:
    """A flow file may give ints for times, a bool or a huge int for a count: the compiled loop then
    calls the hook (always correct) rather than guess; neither loop raises."""
    gate = FlowGate(protos=frozenset({"tcp"}), min_dur=1500.0, min_bytes=16_384, answered=True, min_dport=1024)
    calls: list[Any] = []
    evidence, failed, hook = recorder(calls)
    loop = cls([(hook(0), gate)], evidence, failed)
    odd = [Flow(0, 4000, "tcp", "a", 1, "b", 40000, 1, 2, 10**30, 10**30),  # int times, huge counts
           Flow(0.0, 4000.0, "tcp", "a", 1, "b", 40000, 1, True, 20_000, 0),  # a bool count
           Flow(0.0, 4000.0, "tcp", "a", 1, "b", None, 1, 2, 20_000, 0),  # type: ignore[arg-type]
           Flow(0.0, 4000.0, ["tcp"], "a", 1, "b", 40000, 1, 2, 20_000, 0)]  # type: ignore[arg-type]  # unhashable
    for f in odd:
        loop.run(f)
    assert [c[0] for c in calls] == ["call", "call", "call", "call"]
    # an unhashable port where ports are skipped: the hook is called too
    skipping = cls([(hook(0), FlowGate(skip_dports=frozenset({80})))], evidence, failed)
    skipping.run(Flow(0.0, 1.0, "tcp", "a", 1, "b", [80]))  # type: ignore[arg-type]
    assert len(calls) == 5
    # a flow the gate turns away on plain fields is not called
    loop.run(Flow(0.0, 10.0, "tcp", "a", 1, "b", 40000, 1, 2, 20_000, 0))
    assert len(calls) == 5


@pytest.mark.parametrize("cls", TWINS)
def test_a_failing_hook_is_reported_and_the_others_still_run(cls: Any) -> None:
    calls: list[Any] = []
    evidence, failed, hook = recorder(calls)
    loop = cls([(hook(0), None), (hook(1), None), (hook(2), None)], evidence, failed)
    loop.run(Flow(1.0, 2.0, "tcp", "a", 1, "b", 1883))
    assert calls == [("call", 0, 1.0), ("call", 1, 1.0), ("failed", "hook1", "boom"), ("call", 2, 1.0)]
    calls.clear()

    def strict(fn: Any, e: Exception) -> None:  # the engine without on_error: the error propagates
        raise e

    loop = cls([(hook(1), None), (hook(2), None)], evidence, strict)
    with pytest.raises(ValueError, match="boom"):
        loop.run(Flow(1.0, 2.0, "tcp", "a", 1, "b", 1883))
    assert calls == [("call", 1, 1.0)]


# --- app events: Engine._app's loop (dispatch.AppCalls and its compiled twin) ----------------------

APP_TWINS = [dispatch.AppCalls, c_dispatch.AppCalls]
NAMES = ("a.example", "b.example", "cdn.example", "")
POOL = tuple(f"n{i}.example" for i in range(20))


def _data(query: str, answers: list[str], response: bool | None, rcode: int | None, shape: str) -> Any:
    """An event's data: every key, some left out (a log's query line has no answers), or behind
    another mapping type than dict (the compiled loop reads a plain dict in C, anything else by .get)."""
    d = {"query": query, "answers": answers, "rcode": rcode, **({} if response is None else {"response": response})}
    if shape == "partial":
        d = {k: v for k, v in d.items() if k not in ("query", "answers")}
    return MappingProxyType(d) if shape == "proxy" else d


TRUSTED, UNTRUSTED = "192.0.2.53", "203.0.113.53"  # resolvers (the answers' senders)


class Trust:
    """ctx.resolvers for these tests: trusts TRUSTED alone (slipsq/detect/resolvers.py is the real one)."""

    def trusts(self, resolver: str, port: int, client: str) -> bool:
        return resolver == TRUSTED


def fake_ctx(names: Any) -> Any:
    ctx = type("Ctx", (), {})()
    ctx.dns_names, ctx.resolvers = names, Trust()
    return ctx


app_events = st.builds(
    lambda ts, kind, resolver, host, data: AppEvent(ts, kind, resolver, 53, host, 40000, "udp", data),
    times, st.sampled_from(("dns", "dns", "tls", "banner", "arp", "mqtt")), st.sampled_from((TRUSTED, TRUSTED,
                                                                                             UNTRUSTED)),
    st.sampled_from(ADDRS),
    st.builds(_data, st.sampled_from(NAMES), st.lists(st.sampled_from(ADDRS), max_size=4),
              st.sampled_from((None, True, False)), st.sampled_from((0, 3, None)),
              st.sampled_from(("dict", "dict", "partial", "proxy"))))


def app_loop(cls: Any, calls: list[Any], ctx: Any, max_dns: int, decode: Any = None) -> Any:
    """An AppCalls whose hooks record (kind-listeners "dns" and "tls", the rest to `other`)."""
    def evidence(ev: Any) -> None:
        calls.append(("evidence", ev))

    def failed(fn: Any, e: Exception) -> None:
        calls.append(("failed", fn if isinstance(fn, str) else fn.__name__, str(e)))

    def hook(name: str) -> Callable[[AppEvent], Any]:
        def on_app(event: AppEvent) -> Any:
            calls.append((name, event.kind, event.ts))
            return ["ev-" + name] if event.data.get("rcode") == 3 else NO_EVIDENCE

        on_app.__name__ = name
        return on_app

    flow_cls = dispatch.FlowCalls if cls is dispatch.AppCalls else c_dispatch.FlowCalls
    by_kind = {"dns": flow_cls([(hook("dga"), None), (hook("port"), None)], evidence, failed),
               "tls": flow_cls([(hook("tls"), None)], evidence, failed)}
    return cls(by_kind, flow_cls([(hook("any"), None)], evidence, failed), decode, ctx, max_dns, failed)


def names_state(names: Any) -> list[Any]:
    return [(ip, sorted(v)) for ip, v in names.items()]


@settings(max_examples=300, deadline=None)
@given(st.lists(app_events, max_size=30), st.integers(1, 4), st.booleans(),
       st.lists(st.tuples(st.sampled_from(ADDRS), st.one_of(  # names already learnt: a few, or about MAX_NAMES
           st.sets(st.sampled_from(NAMES)), st.sets(st.sampled_from(POOL), min_size=14, max_size=17))), max_size=3))
def test_both_app_loops_learn_the_same_names_and_call_the_same_hooks(events: list[AppEvent], max_dns: int,
                                                                     export: bool, before: list[Any]) -> None:
    """Per event, in order: counted; a DNS answer's addresses touched in ctx.dns_names (least recently
    answered first, at most max_dns, at most MAX_NAMES names each, already-full sets left alone); a
    response exported as a Query when asked; then the hooks of its kind. Both twins alike."""
    seen = []
    for cls in APP_TWINS:
        calls: list[Any] = []
        ctx = fake_ctx(OrderedDict((ip, set(ns)) for ip, ns in before))
        loop = app_loop(cls, calls, ctx, max_dns)
        counters = type("Counters", (), {"app_events": 2})()
        for e in events:
            loop.run(e, calls if export else None, counters)
        seen.append((calls, names_state(ctx.dns_names), counters.app_events))
    assert seen[0] == seen[1]
    calls, names, n = seen[0]
    assert n == 2 + len(events)
    had = {ip: len(ns) for ip, ns in before}  # a set learnt before keeps its size: no name is added
    assert len(names) <= max(max_dns, len(had))
    assert all(len(v) <= max(dispatch.MAX_NAMES, had.get(ip, 0)) for ip, v in names)
    dns = [e for e in events if e.kind == "dns"]
    taught = [e for e in dns if e.data.get("answers") and e.saddr == TRUSTED]  # what a trusted resolver said
    if taught:  # the last address a trusted resolver answered is the most recent
        assert names[-1][0] == taught[-1].data["answers"][-1]
    else:  # an untrusted resolver's answers teach nothing
        assert names == names_state(OrderedDict((ip, set(ns)) for ip, ns in before))
    queries = [c for c in calls if isinstance(c, Query)]
    assert len(queries) == (sum(e.data.get("response", True) is not False for e in dns) if export else 0)
    assert [c for c in calls if isinstance(c, tuple) and c[0] == "any"] == [("any", e.kind, e.ts) for e in events
                                                                           if e.kind not in ("dns", "tls")]


@pytest.mark.parametrize("cls", APP_TWINS)
def test_app_packets_are_decoded_in_order_and_a_decoder_error_loses_only_its_packet(cls: Any) -> None:
    calls: list[Any] = []
    ctx = fake_ctx(OrderedDict())

    def decode(packet: bytes, ts: float) -> list[AppEvent]:
        if packet == b"bad":
            raise ValueError("cut short")
        return [AppEvent(ts, "dns", "192.0.2.53", 53, "10.0.0.5", 40000, "udp",
                         {"query": packet.decode(), "answers": ["198.51.100.7"]})]

    loop = app_loop(cls, calls, ctx, 8, decode)
    counters = type("Counters", (), {"app_events": 0})()
    loop.run_packets(iter([(1.0, b"a.example"), (2.0, b"bad"), (3.0, b"b.example")]), None, counters)
    assert calls == [("dga", "dns", 1.0), ("port", "dns", 1.0), ("failed", "app decoder", "cut short"),
                     ("dga", "dns", 3.0), ("port", "dns", 3.0)]
    assert counters.app_events == 2 and names_state(ctx.dns_names) == [("198.51.100.7", ["a.example", "b.example"])]


@pytest.mark.parametrize("cls", APP_TWINS)
def test_an_error_that_propagates_mid_batch_leaves_the_event_count_right(cls: Any) -> None:
    """Replay lets a hook's error propagate (a bug must be loud): the events up to and including the
    failing one are counted, as the engine's own loop counted them, and nothing after it runs."""
    seen: list[float] = []

    def hook(event: AppEvent) -> Any:
        seen.append(event.ts)
        if event.data.get("query") == "boom.example":
            raise ValueError("boom")
        return NO_EVIDENCE

    def strict(fn: Any, e: Exception) -> None:
        raise e

    def decode(packet: bytes, ts: float) -> list[AppEvent]:
        return [AppEvent(ts, "dns", "192.0.2.53", 53, "10.0.0.5", 40000, "udp", {"query": packet.decode()})]

    flow_cls = dispatch.FlowCalls if cls is dispatch.AppCalls else c_dispatch.FlowCalls
    loop = cls({"dns": flow_cls([(hook, None)], print, strict)}, flow_cls([], print, strict), decode,
               fake_ctx(OrderedDict()), 8, strict)
    counters = type("Counters", (), {"app_events": 1})()
    with pytest.raises(ValueError, match="boom"):
        loop.run_packets([(1.0, b"a.example"), (2.0, b"boom.example"), (3.0, b"c.example")], None, counters)
    assert counters.app_events == 3 and seen == [1.0, 2.0]


@pytest.mark.parametrize("cls", APP_TWINS)
def test_a_names_map_of_another_type_is_touched_through_lru(cls: Any) -> None:
    """ctx.dns_names is an OrderedDict; anything else (a subclass) goes through lru.touch itself."""
    class Names(OrderedDict):  # type: ignore[type-arg]
        pass

    ctx = fake_ctx(Names())
    loop = app_loop(cls, [], ctx, 2)
    counters = type("Counters", (), {"app_events": 0})()
    for i, ip in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3")):
        loop.run(AppEvent(float(i), "dns", "192.0.2.53", 53, "10.0.0.5", 40000, "udp",
                          {"query": f"n{i}", "answers": [ip]}), None, counters)
    assert type(ctx.dns_names) is Names
    assert names_state(ctx.dns_names) == [("10.0.0.1", ["n0", "n2"]), ("10.0.0.3", ["n3"])]


# --- every gated detector: what its gate turns away it would have ignored ------------------------

GATED = [d for d in DETECTORS if d.flow_gate is not None or "flow_gate" in d.__init__.__code__.co_names]


def state(obj: Any, depth: int = 0) -> Any:
    """A comparable picture of a detector's own state (its dicts in order, its slot objects)."""
    if depth > 6:
        return repr(obj)
    if isinstance(obj, (str, int, float, bool, type(None), FlowGate)):
        return obj
    if isinstance(obj, (dict, OrderedDict)):
        return [(state(k, depth + 1), state(v, depth + 1)) for k, v in obj.items()]
    if isinstance(obj, (list, tuple)):
        return [state(v, depth + 1) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(map(repr, obj))
    if callable(obj) and hasattr(obj, "__self__"):  # a bound method: what it is bound to (a memo)
        owner = obj.__self__
        return (obj.__name__, None if isinstance(owner, Detector) else state(owner, depth + 1))
    slots = [s for c in type(obj).__mro__ for s in getattr(c, "__slots__", ())]
    if slots:
        return [(s, state(getattr(obj, s, None), depth + 1)) for s in slots]
    if hasattr(obj, "__dict__"):
        return [(k, state(v, depth + 1)) for k, v in sorted(vars(obj).items()) if k not in ("ctx", "cfg")]
    return repr(obj)


def make(cls: type[Detector]) -> Detector:
    """The detector with its readable twins (`state` can read them) and the readable servers-in-use
    table (reconnect writes it)."""
    cfg = Config(all_options())
    old = os.environ.get(twins.ENV)
    os.environ[twins.ENV] = "1"
    try:
        return cls(Context(cfg, AllowList([]), servers=ServersInUse()))
    finally:
        if old is None:
            del os.environ[twins.ENV]
        else:
            os.environ[twins.ENV] = old


def test_the_gated_detectors_are_the_ones_expected() -> None:
    """A guard against a gate added without the check below covering it (or one lost)."""
    names = {d.name for d in DETECTORS if make(d).flow_gate is not None}
    assert names >= {"longconn", "unknownport", "reconnect", "beacon"}
    assert {d.name for d in GATED} == names


@pytest.mark.parametrize("cls", GATED, ids=lambda c: c.name)
@settings(max_examples=150, deadline=None)
@given(fs=st.lists(flows, min_size=1, max_size=60))
def test_a_gated_detector_ignores_every_flow_its_gate_turns_away(cls: type[Detector], fs: list[Flow]) -> None:
    fs = sorted(fs, key=lambda f: f.start)
    always, gated = make(cls), make(cls)
    gate = gated.flow_gate
    assert gate is not None
    for f in fs:
        got: list[Evidence] = list(always.on_flow(f))
        if gate.admits(f):
            assert list(gated.on_flow(f)) == got
        else:
            assert got == [], (f, got)
    assert state(always) == state(gated)


def test_engine_skips_gated_hooks_but_keeps_their_findings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the engine: a long connection is still reported with the gates on, and the hook is
    not called for the short flows around it."""
    from slipsq.detect.longconn import LongConnection
    from slipsq.engine import Engine

    called: list[float] = []
    original = LongConnection.on_flow

    def counting(self: LongConnection, flow: Flow) -> Any:
        called.append(flow.start)
        return original(self, flow)

    monkeypatch.setattr(LongConnection, "on_flow", counting)
    e = Engine(Config(all_options()), detectors=[LongConnection])
    short = [Flow(float(i), i + 1.0, "tcp", "10.0.0.5", 40000 + i, "198.51.100.7", 443, 5, 5, 800, 4000)
             for i in range(50)]
    long = Flow(100.0, 3000.0, "tcp", "10.0.0.5", 41000, "198.51.100.7", 443, 500, 500, 80_000, 400_000)
    alerts = [c for f in [*short, long] for c in e.flow(f) if isinstance(c, Alert)]
    assert called == [100.0]
    assert len(alerts) == 1 and "long connection" in alerts[0].evidence.description
