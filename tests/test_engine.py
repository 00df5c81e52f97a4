"""The sans-io engine driven by scripted packets and times: flows out, evidence judged, verdicts in.

Runs on both flow tables (`py`: the readable twin, `c`: the compiled one), since the engine must not
care which one it drives.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import dpkt
import pytest

from slipsq.config import CORE_OPTIONS, Config
from slipsq.detect.base import Detector
from slipsq.engine import Engine
from slipsq.flow import AppEvent, Flow
from slipsq.records import CRITICAL, Block, Evidence
from slipsq.runmode import Offline
from slipsq.sink import Fanout
from slipsq.verdict.replay import ReplayRecorder
from tests.helpers import ACK, FIN, SYN, tcp, udp

RAW = 101
BAD = "203.0.113.9"
T0 = 1_700_000_000.0


class FlagBad(Detector):
    """Critical evidence against BAD on every closed flow that touches it; records what it saw."""

    name = "flagbad"
    seen_flows: ClassVar[list[Flow]] = []
    seen_apps: ClassVar[list[AppEvent]] = []

    def on_flow(self, flow: Flow) -> list[Evidence]:
        FlagBad.seen_flows.append(flow)
        if BAD not in (flow.saddr, flow.daddr) or flow.is_report:
            return []
        return [Evidence(flow.end, self.name, BAD, flow.saddr, flow.daddr, flow.dport, flow.proto,
                         "talks to a known bad host", CRITICAL, 1.0)]

    def on_app(self, event: AppEvent) -> list[Evidence]:
        FlagBad.seen_apps.append(event)
        return []


@pytest.fixture(params=["py", "c"])
def table_cls(request: pytest.FixtureRequest) -> Any:
    if request.param == "py":
        return importlib.import_module("slipsq.flowtable").FlowTable
    try:
        return importlib.import_module("slipsq._flowtable").FlowTable
    except ImportError:
        pytest.skip("compiled flow table not built")


@pytest.fixture
def engine(table_cls: Any) -> tuple[Offline, ReplayRecorder]:
    FlagBad.seen_flows.clear()
    FlagBad.seen_apps.clear()
    cfg = Config(CORE_OPTIONS)
    rec = ReplayRecorder()
    return Offline(Engine(cfg, detectors=[FlagBad], table=table_cls(cfg)), [rec]), rec


def session(e: Offline, client: str, server: str, sport: int, t: float, payload: bytes = b"x" * 100) -> list[int]:
    """A whole TCP connection, packet by packet; returns the verdicts."""
    pkts = [
        tcp(client, sport, server, 443, SYN),
        tcp(server, 443, client, sport, SYN | ACK),
        tcp(client, sport, server, 443, ACK),
        tcp(client, sport, server, 443, ACK, payload),
        tcp(server, 443, client, sport, ACK, payload * 3),
        tcp(client, sport, server, 443, FIN | ACK),
        tcp(server, 443, client, sport, FIN | ACK),
        tcp(client, sport, server, 443, ACK),
    ]
    return [e.packet(p, t + i * 0.01, RAW) for i, p in enumerate(pkts)]


def test_a_connection_becomes_one_flow_after_the_linger(engine: tuple[Offline, ReplayRecorder]) -> None:
    e, _ = engine
    assert session(e, "192.168.1.5", "198.51.100.7", 40000, T0) == [1] * 8
    assert FlagBad.seen_flows == []  # still lingering after FIN both ways
    e.advance(T0 + 5)
    [f] = FlagBad.seen_flows
    assert (f.saddr, f.sport, f.daddr, f.dport, f.proto) == ("192.168.1.5", 40000, "198.51.100.7", 443, "tcp")
    assert (f.spkts, f.dpkts) == (5, 3)
    assert f.sbytes == 5 * 40 + 100 and f.dbytes == 3 * 40 + 300  # IP total lengths, both ways
    assert f.closed_by == "fin"
    assert e.engine.counters.flows == 1


def test_block_drops_every_later_packet_and_unblock_restores(engine: tuple[Offline, ReplayRecorder]) -> None:
    e, rec = engine
    session(e, "192.168.1.5", BAD, 40000, T0)
    e.advance(T0 + 5)  # the flow closes, critical evidence, block
    assert rec.blocked_ips == [BAD]
    assert rec.blocks[0][2] == 14400.0
    # both directions of new traffic are dropped, and never reach the flow table
    assert session(e, "192.168.1.5", BAD, 40001, T0 + 10) == [0] * 8
    assert e.packet(udp(BAD, 53, "192.168.1.6", 5000, b"hi"), T0 + 11, RAW) == 0
    e.advance(T0 + 100)
    assert len(FlagBad.seen_flows) == 1
    assert e.table.stats()["dropped"] == 9
    # other hosts are untouched
    assert session(e, "192.168.1.5", "198.51.100.7", 40002, T0 + 101) == [1] * 8
    commands = e.engine.unblock(BAD, T0 + 150)
    assert [type(c).__name__ for c in commands] == ["Unblock"]  # returned, not carried out by the engine
    assert rec.unblocks == []
    e.apply(commands)
    assert rec.unblocks[-1] == (T0 + 150, BAD, "unblocked by admin")
    assert session(e, "192.168.1.5", BAD, 40003, T0 + 200) == [1] * 8


def test_blocks_expire_in_time(engine: tuple[Offline, ReplayRecorder]) -> None:
    e, rec = engine
    session(e, "192.168.1.5", BAD, 40000, T0)
    e.advance(T0 + 5)
    assert e.table.is_blocked(BAD)
    e.advance(T0 + 5 + 14400 + 1)
    assert not e.table.is_blocked(BAD)
    assert rec.unblocks and rec.unblocks[0][1:] == (BAD, "block expired")


def test_restored_and_manual_blocks_drop_at_once_and_are_the_judges_command(
        engine: tuple[Offline, ReplayRecorder]) -> None:
    e, _ = engine
    [restored] = e.engine.block(BAD, T0, 3600.0, "old block", "store", times=2)
    assert isinstance(restored, Block)
    assert (restored.ip, restored.expires, restored.by, restored.times, restored.alert) == (
        BAD, T0 + 3600, "store", 2, None)
    assert session(e, "192.168.1.5", BAD, 40000, T0) == [0] * 8
    assert e.engine.judge.is_blocked(BAD, T0 + 1)
    [manual] = e.engine.block("198.51.100.99", T0, 0.0, "manual", "admin:alice")
    assert isinstance(manual, Block) and manual.expires is None and manual.detector == "manual"
    assert e.engine.judge.is_blocked("198.51.100.99", T0 + 10**9)  # 0: until unblocked


def test_dns_answers_become_app_events_and_names(engine: tuple[Offline, ReplayRecorder]) -> None:
    e, _ = engine
    q = dpkt.dns.DNS(id=7, qd=[dpkt.dns.DNS.Q(name="c2.example.net", type=dpkt.dns.DNS_A)])
    r = dpkt.dns.DNS(id=7, qr=dpkt.dns.DNS_R, qd=q.qd, an=[dpkt.dns.DNS.RR(
        name="c2.example.net", type=dpkt.dns.DNS_A, rdata=bytes([203, 0, 113, 9]), ttl=60)])
    e.packet(udp("192.168.1.5", 5353 + 1, "192.168.1.1", 53, bytes(q)), T0, RAW)
    e.packet(udp("192.168.1.1", 53, "192.168.1.5", 5354, bytes(r)), T0 + 0.01, RAW)
    e.advance(T0 + 1)
    dns = [a for a in FlagBad.seen_apps if a.kind == "dns"]
    assert any(a.data.get("answers") == ["203.0.113.9"] for a in dns)
    assert e.engine.ctx.dns_names[BAD] == {"c2.example.net"}


def test_finish_closes_open_flows(engine: tuple[Offline, ReplayRecorder]) -> None:
    e, _ = engine
    e.packet(udp("192.168.1.5", 5000, "198.51.100.7", 9999, b"x" * 10), T0, RAW)
    e.packet(udp("198.51.100.7", 9999, "192.168.1.5", 5000, b"y" * 20), T0 + 0.5, RAW)
    assert FlagBad.seen_flows == []
    e.finish()
    [f] = FlagBad.seen_flows
    assert f.closed_by == "end" and f.pkts == 2 and f.bytes == 28 + 10 + 28 + 20


def test_flows_from_files_skip_the_table(engine: tuple[Offline, ReplayRecorder]) -> None:
    e, rec = engine
    e.flow(Flow(T0, T0 + 1, "tcp", "192.168.1.5", 4000, BAD, 80, 3, 3, 300, 900, "FIN"))
    assert rec.blocked_ips == [BAD]
    assert e.table.stats()["packets"] == 0


def test_tune_gc_keeps_collecting_cycles() -> None:
    # run in a child: tune_gc freezes the objects of the process that calls it
    code = """
import gc, weakref
from slipsq.engine import tune_gc
tune_gc()
assert gc.isenabled() and gc.get_threshold() == (50_000, 20, 20) and gc.get_freeze_count() > 0
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a  # a reference cycle made after start-up
gone = weakref.ref(a)
del a, b
keep = [[] for _ in range(60_000)]  # more live new containers than the young threshold
assert gone() is None, "a cycle made after tune_gc() was never collected"
print("ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


# --- a failing detector or sink (see Engine's on_error) ---------------------------------------------

class Explodes(Detector):
    """A buggy detector: raises on every flow to port 666 and on every tick."""

    name = "explodes"

    def on_flow(self, flow: Flow) -> list[Evidence]:
        if flow.dport == 666:
            raise KeyError("bug")
        return []

    def on_tick(self, now: float) -> list[Evidence]:
        raise ZeroDivisionError("bug")


class BrokenSink(ReplayRecorder):
    def alert(self, alert: Any) -> None:
        raise OSError("stdout is gone")


def _batch(e: Engine) -> list[Any]:
    """Five UDP flows closed in one batch (the end of input); the middle one goes to port 666."""
    for i, port in enumerate((53, 80, 666, 123, 443)):
        e.packet(udp("192.168.1.5", 5000 + i, BAD, port, b"q"), T0 + i * 0.001, RAW)
    return e.finish()


def test_with_on_error_a_failing_detector_loses_only_its_own_call(table_cls: Any) -> None:
    FlagBad.seen_flows.clear()
    cfg = Config(CORE_OPTIONS)
    errors: list[tuple[str, Exception]] = []
    broken, rec = BrokenSink(), ReplayRecorder()
    e = Engine(cfg, detectors=[Explodes, FlagBad], table=table_cls(cfg),
               on_error=lambda where, exc: errors.append((where, exc)))
    Fanout([broken, rec], on_error=lambda where, exc: errors.append((where, exc)))(_batch(e))
    # every flow of the batch reached the next detector, the one that made the buggy one raise too
    assert sorted(f.dport for f in FlagBad.seen_flows) == [53, 80, 123, 443, 666]
    assert rec.blocked_ips == [BAD]  # the sink after the broken one still got the block
    where = [w for w, _ in errors]
    assert "explodes.on_flow" in where and "explodes.on_tick" in where and "BrokenSink.alert" in where
    assert all(isinstance(x, (KeyError, ZeroDivisionError, OSError)) for _, x in errors)


class _Path:
    """A per-flow path object a detector hands the engine as its hook (as portscan does)."""

    def on_flow(self, flow: Flow) -> list[Evidence]:
        raise KeyError("bug")


class Delegates(Detector):
    name = "delegates"

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.on_flow = _Path().on_flow  # type: ignore[method-assign]

    def on_flow(self, flow: Flow) -> list[Evidence]:  # (replaced per instance above)
        return []


def test_a_failure_in_a_delegated_hook_is_named_by_its_detector(table_cls: Any) -> None:
    cfg = Config(CORE_OPTIONS)
    errors: list[str] = []
    e = Engine(cfg, detectors=[Delegates], table=table_cls(cfg), on_error=lambda where, exc: errors.append(where))
    _batch(e)
    assert errors and set(errors) == {"delegates.on_flow"}


def test_without_on_error_a_failing_detector_is_loud(table_cls: Any) -> None:
    cfg = Config(CORE_OPTIONS)
    e = Engine(cfg, detectors=[Explodes], table=table_cls(cfg))
    with pytest.raises((KeyError, ZeroDivisionError)):
        _batch(e)


def _dns_answer(e: Engine, query: str, *answers: str) -> None:
    e.app(AppEvent(T0, "dns", "192.168.1.1", 53, "192.168.1.5", 40000, "udp",
                   {"query": query, "qtype": 1, "answers": list(answers), "rcode": 0, "response": True}))


def test_dns_names_stay_bounded_and_keep_the_recently_answered() -> None:
    # answers come from the network: a hostile resolver must not grow the map without end
    cfg = Config(CORE_OPTIONS, {"dns.max_addresses": 3})
    e = Engine(cfg, detectors=[])
    _dns_answer(e, "a.example", "198.51.100.1", "198.51.100.2")
    _dns_answer(e, "b.example", "198.51.100.3")
    _dns_answer(e, "a.example", "198.51.100.1")  # answered again: the most recent now
    _dns_answer(e, "c.example", "198.51.100.4")  # the map is full: the least recently answered goes
    assert set(e.ctx.dns_names) == {"198.51.100.1", "198.51.100.3", "198.51.100.4"}
    assert e.ctx.dns_names["198.51.100.1"] == {"a.example"}
    _dns_answer(e, "flood.example", *(f"203.0.113.{i}" for i in range(200)))
    assert len(e.ctx.dns_names) == 3
    e.reconfigure(Config(CORE_OPTIONS, {"dns.max_addresses": 2}), [], e.allow)  # a smaller bound at reload
    assert list(e.ctx.dns_names) == ["203.0.113.198", "203.0.113.199"]


def _listener(name: str, kinds: frozenset[str], seen: list[tuple[str, str]]) -> type[Detector]:
    class Listens(Detector):
        app_kinds = kinds

        def on_app(self, event: AppEvent) -> list[Evidence]:
            seen.append((name, event.kind))
            return []

    Listens.name = name
    return Listens


def test_app_events_reach_only_the_detectors_that_declared_their_kind() -> None:
    """One event of each kind, through Engine.app (as a log's events arrive): a detector hears the
    kinds it names ("payload" names every first-payload kind, "dns-queries" DNS), one that names
    none hears all, and an event of a kind no table hands up still reaches every listener."""
    seen: list[tuple[str, str]] = []
    dets = [_listener("dns", frozenset({"dns"}), seen), _listener("arp", frozenset({"arp"}), seen),
            _listener("queries", frozenset({"dns-queries"}), seen),
            _listener("payload", frozenset({"payload"}), seen),
            _listener("login", frozenset({"banner", "http"}), seen), _listener("all", frozenset(), seen)]
    e = Engine(Config(CORE_OPTIONS), detectors=dets)
    for i, kind in enumerate(("dns", "banner", "tls", "http", "arp", "smtp")):
        e.app(AppEvent(float(i), kind, "10.0.0.1", 53, "10.0.0.2", 40000, "udp", {}))
    heard: dict[str, list[str]] = {}
    for name, kind in seen:
        heard.setdefault(name, []).append(kind)
    assert heard == {
        "dns": ["dns", "smtp"], "queries": ["dns", "smtp"], "arp": ["arp", "smtp"],
        "payload": ["banner", "tls", "http", "smtp"], "login": ["banner", "http", "smtp"],
        "all": ["dns", "banner", "tls", "http", "arp", "smtp"]}
    # and in detector order within one event
    assert [n for n, k in seen if k == "dns"] == ["dns", "queries", "all"]


def test_step_is_advance_with_the_hand_up_given(table_cls: Any) -> None:
    """Engine.step (slipsq.pipeline's engine process, which holds the table's hand-up already) decides
    what advance decides, command for command: DNS answers, closed flows, a block, ticks, expiry."""
    from tests.helpers import dns_query, dns_response

    pkts: list[tuple[bytes, float]] = []
    t = T0
    for i in range(40):
        client = f"192.168.1.{5 + i % 3}"
        pkts.append((udp(client, 4000 + i, "192.168.1.1", 53, dns_query(f"h{i}.example.net", ident=i)), t))
        server = BAD if i >= 30 else f"198.51.100.{i}"
        answer = dns_response(f"h{i}.example.net", [server], ident=i)
        pkts.append((udp("192.168.1.1", 53, client, 4000 + i, answer), t + 0.01))
        for again in (0.0, 65.0):  # twice on one port, a minute apart: the new SYN hands the first
            # up at that packet, in a step whose new second also expires the DNS flow (order matters)
            for j, (src, dst, sport, dport, flags) in enumerate([(client, server, 40000 + i, 443, SYN),
                                                                (server, client, 443, 40000 + i, SYN | ACK),
                                                                (client, server, 40000 + i, 443, FIN | ACK),
                                                                (server, client, 443, 40000 + i, FIN | ACK)]):
                pkts.append((tcp(src, sport, dst, dport, flags, b"x" * 10 * j), t + again + 0.02 + 0.01 * j))
        t += 66.3

    def run(stepwise: bool) -> list[str]:
        cfg = Config(CORE_OPTIONS, {"judge.block_duration": 200.0})  # blocks expire at a tick
        e = Engine(cfg, detectors=[FlagBad], table=table_cls(cfg), export_flows=True, export_queries=True)
        out: list[Any] = []
        for pkt, ts in pkts:
            e.table.feed(pkt, ts, RAW)
            if e.table.pending or ts >= e._next_tick:
                out += e.step(ts, e.table.pop_app(), e.table.pop_closed()) if stepwise else e.advance(ts)
        out += e.finish()
        return [repr(c) for c in out]

    by_advance = run(False)
    # 40 DNS flows, 2 x 30 connections, and 5 to BAD while it was not blocked (blocked, unblocked at
    # a tick 200 s later, blocked again)
    kinds = [c.split("(")[0] for c in by_advance]
    assert kinds.count("Flow") == 105 and kinds.count("Block") == 2 and kinds.count("Unblock") == 1
    assert any("Query(" in c for c in by_advance)
    assert run(True) == by_advance


def test_a_reload_that_fails_leaves_the_engine_as_it_was(engine: tuple[Offline, ReplayRecorder],
                                                         tmp_path: Path) -> None:
    """A detector that cannot be made (a threat-intelligence list it cannot read) fails the reload
    whole: the engine keeps its configuration, detectors, judge and site networks, and goes on
    detecting (it used to keep the new config and site beside the old detectors)."""
    from slipsq.detect.prefixes import is_local
    from slipsq.detect.threatintel import ThreatIntel
    from slipsq.errors import ConfigError

    e, rec = engine
    eng = e.engine
    before = {k: getattr(eng, k) for k in ("config", "allow", "ctx", "detectors", "_flows", "_apps", "judge")}
    (tmp_path / "feed.csv").write_text("ip,note\n1.2.3.4," + "x" * 200_000 + "\n")
    eng._detector_classes = [FlagBad, ThreatIntel]
    cfg = Config([*CORE_OPTIONS, *ThreatIntel.options],
                 {"threatintel.folder": str(tmp_path), "network.local": ["198.51.100.0/24"]})
    with pytest.raises(ConfigError, match=r"threatintel\.folder.*feed\.csv"):
        eng.reconfigure(cfg, [], eng.allow)
    assert {k: getattr(eng, k) for k in before} == before
    assert not is_local("198.51.100.7")  # the failed configuration's network.local is not in force
    session(e, "192.168.1.5", BAD, 40000, T0)
    e.advance(T0 + 5)
    assert len(FlagBad.seen_flows) == 1 and rec.blocked_ips == [BAD]
