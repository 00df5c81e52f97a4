"""The compiled per-flow state of the port scan, beacon, P2P, brute force, exfiltration and
reconnection-storm detectors (slipsq/detect/_portscan.pyx, _beacon.pyx, _p2p.pyx, _bruteforce.pyx,
_exfil.pyx, _reconnect.pyx, and _dns.pyx for the DGA and unknown-port detectors' DNS answers) against
their readable twins (portscan.Tally, beacon.Tuples and beacon.Intake, p2p.Intake, bruteforce.Intake,
exfil.Intake, reconnect.Intake, dga.Intake, unknownport.DnsIntake): the same calls give
the same answers and leave the same state, bounds and LRU order included; the beacon intake's C
address tests give the answers of prefixes.is_local and the allow list; and the whole detectors,
fed the same flows, give the same evidence. (Every test of test_detect_portscan.py,
test_detect_beacon.py, test_detect_p2p.py, test_detect_bruteforce.py, test_detect_exfil.py and
test_detect_reconnect.py also runs on both: see their `implementation` fixtures.)
"""

from __future__ import annotations

import gc
import math
import random
import sys
from typing import Any

import pytest
from flowgen import T0, beacon, browsing, config, flow, run, sort_flows
from hypothesis import example, given, settings
from hypothesis import strategies as st

from slipsq.addr import parse_ip_int
from slipsq.allow import AllowList
from slipsq.detect import beacon as py_beacon
from slipsq.detect import bruteforce as py_bruteforce
from slipsq.detect import exfil as py_exfil
from slipsq.detect import inuse as py_inuse
from slipsq.detect import p2p as py_p2p
from slipsq.detect import portscan as py_portscan
from slipsq.detect import reconnect as py_reconnect
from slipsq.detect.base import NO_EVIDENCE, Context
from slipsq.detect.beacon import Beacon
from slipsq.detect.portscan import PortScan
from slipsq.detect.prefixes import _local, is_local
from slipsq.detect.reconnect import Reconnect
from slipsq.flow import AppEvent, Flow

c_portscan = pytest.importorskip("slipsq.detect._portscan", reason="the compiled extension is not built "
                                 "(python setup.py build_ext --inplace)")
c_beacon = pytest.importorskip("slipsq.detect._beacon", reason="the compiled extension is not built")
c_p2p = pytest.importorskip("slipsq.detect._p2p", reason="the compiled extension is not built")
c_bruteforce = pytest.importorskip("slipsq.detect._bruteforce", reason="the compiled extension is not built")
c_exfil = pytest.importorskip("slipsq.detect._exfil", reason="the compiled extension is not built")
c_reconnect = pytest.importorskip("slipsq.detect._reconnect", reason="the compiled extension is not built")
c_prefixes = pytest.importorskip("slipsq.detect._prefixes", reason="the compiled extension is not built")

SOURCES = ("10.0.0.1", "10.0.0.2", "198.51.100.9")
HOSTS = ("198.51.100.1", "198.51.100.2", "10.0.0.7", "2001:db8::1")
PORTS = (22, 80, 443, 445)


def tally_state(t: Any) -> Any:
    """Everything a tally keeps (targets in insertion order do not matter: compare as a dict)."""
    return None if t is None else (t.first, t.last, dict(t.targets), t.failed, t.answered, t.emitted,
                                   t.emitted_threat)


def portscan_state(tally: Any) -> Any:
    return tally.total, [{k: tally_state(v) for k, v in seen.items()} for seen in tally.seen]


count_op = st.tuples(st.just("count"), st.integers(0, 2), st.sampled_from(SOURCES),
                     st.sampled_from(HOSTS + PORTS), st.sampled_from(HOSTS + PORTS), st.booleans(),
                     st.floats(0, 100))
pair_op = st.tuples(st.just("pair"), st.sampled_from(SOURCES), st.sampled_from(HOSTS), st.sampled_from(PORTS),
                    st.sampled_from(("tcp", "udp")), st.booleans(), st.floats(0, 100))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(count_op, pair_op, st.just(("reset",))), max_size=120),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 12))
def test_tally_twins_agree(ops: list[tuple[Any, ...]], max_keys: int, max_targets: int, max_total: int) -> None:
    py, c = py_portscan.Tally(max_keys, max_targets, max_total), c_portscan.Tally(max_keys, max_targets, max_total)
    for op in ops:
        if op[0] == "count":
            _, kind, src, what, target, failed, start = op
            a = py.count(kind, (src, what, "tcp"), target, failed, start)
            b = c.count(kind, (src, what, "tcp"), target, failed, start)
            assert tally_state(a) == tally_state(b)
        elif op[0] == "pair":
            a2, b2 = py.pair(*op[1:]), c.pair(*op[1:])
            assert (a2 is None) == (b2 is None)
            if a2 is not None and b2 is not None:
                assert [tally_state(x) for x in a2] == [tally_state(x) for x in b2]
        else:
            py.reset()
            c.reset()
        assert portscan_state(py) == portscan_state(c)


# parts whose hashes collide (hash(-1) == hash(-2), hash(0) == hash(2**61 - 1)) or that are equal in
# another type or object (443 and 443.0, a text and its copy): the compiled key map must tell apart
# what a tuple key tells apart, and join what it joins
MANY_SOURCES = tuple(f"10.0.{i}.{j}" for i in range(3) for j in range(40))
ODD_PARTS = (-1, -2, 0, 2**61 - 1, 443, 443.0, "443", "tcp", "".join(["t", "cp"]))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.sampled_from(MANY_SOURCES), st.sampled_from(ODD_PARTS),
                          st.sampled_from(("tcp", "udp")), st.sampled_from(HOSTS + PORTS), st.booleans(),
                          st.floats(0, 100)), min_size=50, max_size=400), st.integers(20, 500))
def test_tally_twins_agree_as_the_key_map_grows(ops: list[tuple[Any, ...]], max_keys: int) -> None:
    py, c = py_portscan.Tally(max_keys, 50, 100_000), c_portscan.Tally(max_keys, 50, 100_000)
    for kind, src, what, proto, target, failed, start in ops:
        a = py.count(kind, (src, what, proto), target, failed, start)
        b = c.count(kind, (src, what, proto), target, failed, start)
        assert tally_state(a) == tally_state(b)
    assert portscan_state(py) == portscan_state(c)
    assert [len(s) for s in c.seen] == [len(s) for s in py.seen]


def tuples_state(ts: Any) -> Any:
    """The keys in LRU order, each with everything its tuple keeps, and the prune hint."""
    return ts.oldest_last, [(k, tuple_state(ts.get(k))) for k in ts]


def tuple_state(t: Any) -> Any:
    return (list(t.starts), list(t.sizes), t.total, t.emitted_n, t.emitted_window, t.emitted_threat, t.last)


add_op = st.tuples(st.just("add"), st.sampled_from(SOURCES), st.sampled_from(HOSTS), st.sampled_from(PORTS),
                   st.one_of(st.floats(0, 1000), st.sampled_from((1.0, 2.0, 3.0))),  # ties: their order
                   st.integers(0, 10_000))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(add_op, st.tuples(st.just("prune"), st.floats(0, 1200))), max_size=150),
       st.integers(1, 5), st.integers(2, 9))
def test_tuples_twins_agree(ops: list[tuple[Any, ...]], bound: int, history: int) -> None:
    py, c = py_beacon.Tuples(history, bound), c_beacon.Tuples(history, bound)
    for op in ops:
        if op[0] == "add":
            _, src, dst, port, start, size = op
            key = (src, dst, port, "tcp")
            assert tuple_state(py.add(key, start, size)) == tuple_state(c.add(key, start, size))
        else:
            py.prune(op[1])
            c.prune(op[1])
        assert tuples_state(py) == tuples_state(c)
        assert len(py) == len(c) <= bound
    assert math.isinf(py_beacon.Tuples(history, bound).oldest_last)


# text that may or may not be an address: plain forms (the C parse), IPv4-mapped ones, and what
# only ipaddress reads or nobody does (left to the Python functions)
address_text = st.one_of(
    st.ip_addresses().map(str), st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"),
    st.ip_addresses(v=6).map(lambda a: a.exploded), st.ip_addresses().map(lambda a: f" {a}"),
    st.from_regex(r"\A[0-9a-f:.]{0,20}\Z"), st.text(max_size=12))


@settings(max_examples=2000, deadline=None)
@given(address_text)
def test_the_c_address_tests_answer_as_python(text: str) -> None:
    local, fixed = c_beacon.local_address(text), c_beacon.fixed_never(text)
    assert local is None or local == _local(text)
    # with nothing own, protected or listed, the allow list protects exactly its fixed ranges
    assert fixed is None or fixed == (AllowList().why_protected(text) is not None)
    assert (local is None) == (fixed is None)


@given(st.ip_addresses())
def test_the_c_parse_reads_every_plain_address(a: Any) -> None:
    assert c_beacon.local_address(str(a)) is not None  # so the tests above test the C path


OWN, PROTECTED, LISTED = "203.0.113.1", "198.51.100.53", "192.0.2.0/28"
ADDRESSES = ("10.0.0.1", "10.0.0.2", "192.168.1.255", "224.0.0.251", "127.0.0.1", "8.8.8.8", OWN, PROTECTED,
             "192.0.2.7", "198.51.100.255", "2001:db8::1", "fe80::1", "::ffff:10.0.0.3", " 8.8.4.4", "host")
intake_flow = st.builds(
    flow, st.floats(0, 500), st.sampled_from(ADDRESSES), st.sampled_from(ADDRESSES),
    st.sampled_from((53, 123, 443, 853, 1900, 5353, 8080)), st.sampled_from(("tcp", "udp", "icmp")),
    sport=st.sampled_from((123, 40000)), closed_by=st.sampled_from(("fin", "active")),
    sbytes=st.integers(0, 5000), dbytes=st.integers(0, 5000),
    state=st.sampled_from(("", "", "SPA_SPA", "SA_SA", "S_RA", "SR_SA", "PA_PA", "PA_RA", "OTH", "SF", "S0", "new",
                           "REQ", "FIN")))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(intake_flow, st.sampled_from((0.2, 0.8, 1.0)), st.booleans()), max_size=80),
       st.integers(1, 4), st.integers(2, 6), st.sampled_from((1.0, 50.0, 3600.0)),
       st.sampled_from(("all", "none", "own", "own-v6", "own-both", "own-protected", "own-listed-v6", "many-own",
                        "protected", "listed-v6")))
def test_intake_twins_agree(ops: list[tuple[Flow, float, bool]], min_n: int, full_n: int, window: float,
                            lists: str) -> None:
    # an allow list with own, protected and listed addresses (every `never` miss asks allow.listed),
    # none at all, or one kind alone (own addresses only, as replay's: the compiled side answers
    # them in C and asks allow.listed nothing)
    allow = {"all": AllowList([LISTED], [OWN], {PROTECTED: "a resolver"}), "none": AllowList(),
             "own": AllowList([], [OWN]), "protected": AllowList([], [], {PROTECTED: "a resolver"}),
             "own-v6": AllowList([], ["2001:db8::1"]), "own-both": AllowList([], [OWN, "2001:db8::1", "10.0.0.2"]),
             "own-protected": AllowList([], [OWN], {PROTECTED: "a resolver"}),
             "own-listed-v6": AllowList(["2001:db8::/32"], [OWN]),
             # more own addresses than the compiled intake copies: it asks allow.listed
             "many-own": AllowList([], [OWN, *(f"198.18.0.{i}" for i in range(40))]),
             "listed-v6": AllowList(["2001:db8::/32"])}[lists]
    own = {OWN} if lists in ("all", "own", "own-both", "own-protected", "own-listed-v6", "many-own") else set()
    py = py_beacon.Intake(py_beacon.Tuples(8, 3), min_n, full_n, window, own, is_local, allow)
    c = c_beacon.Intake(c_beacon.Tuples(8, 3), min_n, full_n, window, own, is_local, allow)
    for f, threat, report in ops:
        assert py.ignored(f) == c.ignored(f)
        a, b = py.add(f), c.add(f)
        assert (a is None) == (b is None)
        if a is not None and b is not None:
            assert tuple_state(a) == tuple_state(b)
            if report:  # as Beacon._score does when it reports: what the intake asks next time
                for t in (a, b):
                    t.emitted_n, t.emitted_window, t.emitted_threat = t.total, int(t.last // window), threat
        assert tuples_state(py.tuples) == tuples_state(c.tuples)
    memo = is_local.__self__  # type: ignore[attr-defined]
    assert all(memo[ip] == _local(ip) for ip in ADDRESSES if ip in memo)  # what the C side put there


@pytest.mark.parametrize("mod", [py_beacon, c_beacon])
def test_a_connection_that_closes_late_goes_after_those_that_started_with_it(mod: Any) -> None:
    """Out of start order, a connection is inserted as bisect.bisect_right does: after every one with
    the same start (the sizes show the order)."""
    ts = mod.Tuples(9, 10)
    key = ("10.0.0.1", "198.51.100.1", 443, "tcp")
    for start, size in ((1.0, 1), (3.0, 2), (2.0, 3), (2.0, 4), (1.0, 5)):
        t = ts.add(key, start, size)
    assert (list(t.starts), list(t.sizes)) == ([1.0, 1.0, 2.0, 2.0, 3.0], [1, 5, 3, 4, 2])


def test_a_compiled_tuple_holds_each_size_while_it_keeps_the_connection() -> None:
    """The C array of connections holds a reference to each size it keeps: taken on insert, let go
    when the connection falls out of the history and when the tuple is freed."""
    size = int("9" * 30)  # an object only this test holds
    before = sys.getrefcount(size)
    ts = c_beacon.Tuples(3, 10)
    key = ("10.0.0.1", "198.51.100.1", 443, "tcp")
    ts.add(key, 1.0, size)
    assert sys.getrefcount(size) == before + 1 and ts.get(key).sizes == [size]
    ts.add(key, 0.5, size)  # before the first: inserted in front
    assert sys.getrefcount(size) == before + 2 and ts.get(key).starts == [0.5, 1.0]
    for i in range(3):  # a history of 3: both fall out
        ts.add(key, 10.0 + i, 7)
    assert sys.getrefcount(size) == before and ts.get(key).starts == [10.0, 11.0, 12.0]
    ts.add(("10.0.0.2", "198.51.100.1", 443, "tcp"), 1.0, size)
    assert sys.getrefcount(size) == before + 1
    del ts
    gc.collect()
    assert sys.getrefcount(size) == before


@pytest.mark.parametrize("mod", [py_beacon, c_beacon])
def test_an_address_protected_while_running_is_ignored_from_then_on(mod: Any) -> None:
    """The daemon replaces the protected addresses as it learns them (AllowList.set_protected): a
    destination first seen after that is never tracked, also when the allow list started empty (the
    compiled intake then skips allow.listed for what it knows cannot be listed)."""
    allow = AllowList()
    intake = mod.Intake(mod.Tuples(8, 100), 1, 4, 3600.0, set(), is_local, allow)
    assert intake.add(flow(T0, "192.168.1.5", "198.51.100.61", 443)) is not None  # tracked
    allow.set_protected({"198.51.100.62": "a resolver"})
    assert intake.add(flow(T0 + 1, "192.168.1.5", "198.51.100.62", 443)) is None  # protected now
    assert intake.add(flow(T0 + 2, "192.168.1.5", "198.51.100.63", 443)) is not None


@pytest.mark.parametrize("in_a_cycle", [False, True])
def test_dropped_compiled_tuples_free_every_tuple(in_a_cycle: bool) -> None:
    # the compiled tuples are outside the cycle collector: their LRU links must be broken when the
    # map goes, by refcount or by the collector (a cycle through it), or every tuple would leak
    marker = "".join(["198.51.100.", "77"])  # a string only this test holds
    before = sys.getrefcount(marker)
    ts = c_beacon.Tuples(8, 100)
    for i in range(5):
        ts.add((marker, f"198.51.100.{i}", 443, "tcp"), float(i), 10)
    assert sys.getrefcount(marker) == before + 5
    if in_a_cycle:
        holder: list[Any] = [ts]
        holder.append(holder)
        del holder
    del ts
    gc.collect()
    assert sys.getrefcount(marker) == before


def mixed_flows(seed: int) -> list[Flow]:
    """Scans (answered and not, out of start order), beacons, browsing, pings: every branch."""
    rng = random.Random(seed)
    scanner = rng.choice(SOURCES)
    scans = [flow(T0 + rng.uniform(0, 7200), scanner, rng.choice(HOSTS[:2]) if rng.random() < 0.5 else
                  f"198.51.100.{rng.randrange(1, 60)}", rng.randrange(1, 200), rng.choice(("tcp", "udp")),
                  state=rng.choice(("S_", "S_RA", "SF", "", "INT")), dbytes=rng.choice((0, 400)))
             for _ in range(600)]
    pings = [flow(T0 + rng.uniform(0, 7200), scanner, f"10.0.1.{i}", 7, "icmp", sport=8,
                  state=rng.choice(("ECO", "ECR")), dbytes=rng.choice((0, 84))) for i in range(60)]
    return sort_flows(scans, pings, beacon("10.0.0.5", "203.0.113.9", 443, 30.0, 60, jitter=0.1),
                      beacon("10.0.0.6", "203.0.113.10", 8080, 5.0, 200, jitter=0.4),
                      browsing("10.0.0.8", [f"198.51.100.{i}" for i in range(1, 40)], 300))


def evidence_on_both(detectors: list[Any], flows: list[Flow], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """impl ("py": the readable twins, "c": compiled) -> (evidence, decision) of every alert."""
    evidence = {}
    for impl in ("py", "c"):
        if impl == "py":
            monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1")
        else:
            monkeypatch.delenv("SLIPSQ_PURE_PYTHON", raising=False)
        rec, _ = run(detectors, flows)
        evidence[impl] = [(a.evidence, a.decision) for a in rec.seen]
    return evidence


@pytest.mark.parametrize("detector", [PortScan, Beacon])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_detectors_give_the_same_evidence_on_both(detector: Any, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    evidence = evidence_on_both([detector], mixed_flows(seed), monkeypatch)
    assert evidence["py"], "the mix must make some evidence, or the comparison proves nothing"
    assert evidence["py"] == evidence["c"]


# --- the per-flow path (portscan.Counts) and the servers in use (inuse.ServersInUse) ----------------

LAN = ("10.0.0.1", "192.168.1.9", "fe80::2", "::ffff:10.0.0.3")
WAN = ("198.51.100.1", "2001:db8::1", "::ffff:8.8.8.8", "203.0.113.77")
STATES = ("", "S_", "S_RA", "SF", "S0", "REJ", "CON", "INT", "ECO", "ECR", "FSPA_FSPA", "SPA_", "ZZ", "X_Y",
          # how far a connection got (portscan.opened, conversed): a handshake, data back, neither
          "SA_SA", "SA_SPA", "SR_SA", "R_SA", "PA_PA", "PA_RA", "OTH", "RSTRH", "S1", "new", "established",
          "closed", "REQ", "FIN", ".AP.SF")
PROTOS = ("tcp", "udp", "icmp", "ipv6-icmp", "gre")

flows = st.builds(
    lambda start, proto, saddr, daddr, dport, sport, state, dpkts, dur, closed_by: Flow(
        start, start + dur, proto, saddr, sport, daddr, dport, 1, dpkts, 100, 100 * dpkts, state=state,
        closed_by=closed_by),
    st.floats(0, 20_000), st.sampled_from(PROTOS), st.sampled_from(LAN + WAN), st.sampled_from(LAN + WAN),
    st.sampled_from(PORTS), st.sampled_from((8, 128, 0, 40000)), st.sampled_from(STATES), st.integers(0, 2),
    st.sampled_from((0.0, 1.0, 400.0)), st.sampled_from(("fin", "rst", "active", "idle")))


def servers_state(s: Any) -> Any:
    return list(s.when.items()), s.bound


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(flows, st.tuples(st.sampled_from(LAN + WAN), st.floats(0, 20_000))), max_size=80),
       st.integers(1, 5))
def test_servers_twins_agree(ops: list[Any], bound: int) -> None:
    py, c = py_inuse.ServersInUse(bound), c_portscan.Servers(bound)
    for op in ops:
        if isinstance(op, Flow):
            py.note(op)
            c.note(op)
        else:
            assert py.in_use(op[0], op[1], 3600) == c.in_use(op[0], op[1], 3600)
        assert servers_state(py) == servers_state(c)  # LRU order included


def hits_state(hits: Any) -> Any:
    return None if hits is None else [(k, key, tally_state(t)) for k, key, t in hits]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(flows, st.floats(0, 20_000)), max_size=100), st.sampled_from((600.0, 3600.0, 0.1)),
       st.booleans(), st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3)),
       st.integers(1, 6), st.integers(1, 4), st.integers(1, 12))
def test_counts_twins_agree(ops: list[Any], window: float, note_servers: bool, thresholds: tuple[int, int, int],
                            max_keys: int, max_targets: int, max_total: int) -> None:
    """The one call per flow: same hits, same window, same counts, same servers noted (a float in
    `ops` is a reset to that time's window, as on_tick does)."""
    def judge(hits: Any, f: Flow) -> Any:  # what the detector's judge would be handed
        return [(f, hits_state(hits))]

    py = py_portscan.Counts(py_portscan.Tally(max_keys, max_targets, max_total), py_inuse.ServersInUse(3),
                            window, note_servers, thresholds, judge)
    c = c_portscan.Counts(c_portscan.Tally(max_keys, max_targets, max_total), c_portscan.Servers(3),
                          window, note_servers, thresholds, judge)
    for op in ops:
        if isinstance(op, Flow):
            assert py.on_flow(op) == c.on_flow(op)  # () for most flows
        else:
            py.reset(int(op // window))
            c.reset(int(op // window))
        assert py.index == c.index and type(py.index) is type(c.index)
        assert portscan_state(py.tally) == portscan_state(c.tally)
        assert servers_state(py.servers) == servers_state(c.servers)


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1e11), st.integers(0, 2**40)),
       st.one_of(st.floats(1e-3, 1e6), st.sampled_from((0.1, 0.7, 3600.0, 0.0))))
def test_the_window_index_is_pythons_floor_division(start: float, window: float) -> None:
    """The compiled path finds the window in C: the same integer as int(start // window), and the same
    error where Python raises (NaN, infinity, a zero window)."""
    f = Flow(start, start, "gre", "10.0.0.1", 0, "10.0.0.2", 0)
    answers = []
    for mod in (py_portscan, c_portscan):
        counts = mod.Counts(mod.Tally(5, 5, 5), py_inuse.ServersInUse(), window, True, (1, 1, 1), list)
        try:
            counts.add(f)
            answers.append(counts.index)
        except (ValueError, OverflowError, ZeroDivisionError) as e:
            answers.append(type(e))
    assert answers[0] == answers[1]
    if not isinstance(answers[0], type):
        assert answers[0] == max(-1, int(start // window))


@given(st.one_of(st.ip_addresses().map(str), st.text("0123456789abcdef:.% ", max_size=45),
                 st.sampled_from(("::ffff:10.0.0.1", "fe80::1", "febf::1", "fec0::1", "fc00::", "ff02::1", "::",
                                  "::1", "::2", "255.255.255.255", "100.64.0.1", "01.2.3.4", "1.2.3.4\0", " ::1"))))
def test_the_compiled_local_test_is_is_local(ip: str) -> None:
    """What the compiled servers table parses itself (inet_pton in C) is what prefixes.is_local says;
    text it does not parse it leaves to is_local."""
    got = c_portscan.local_text(ip)
    assert got is None or got == _local(ip)
    if "%" not in ip and " " not in ip and "\0" not in ip and parse_ip_int(ip) is not None and ip.isascii():
        assert got is not None or ip.strip() != ip  # the plain form of an address: parsed in C


class _Text(str):  # a str subclass: never cached, always asked of is_local
    pass


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.one_of(address_text, address_text.map(_Text)), min_size=1, max_size=8))
def test_the_shared_local_cache_answers_as_is_local(texts: list[str]) -> None:
    """detect/_prefixes.text_local, which every compiled detector asks: the answer of
    prefixes.is_local for any text, on a miss (parsed in C), on a hit by identity, and on a hit by
    an equal text in another object (a flow file's rows); asked in any order and again."""
    for text in texts + texts[::-1]:
        want = _local(text)
        assert c_prefixes.cached_local(text) is want
        twin = "".join(list(text))  # an equal text, most often another object
        assert c_prefixes.cached_local(twin) is want


def test_the_shared_local_cache_stays_within_its_slots_and_forgets_nothing_it_needs() -> None:
    """A flood of invented addresses only replaces slots (16,384 at most, each a reference to one
    text); every answer stays right after its slot was taken by another address."""
    first = ([f"10.{i >> 8 & 255}.{i & 255}.1" for i in range(20000)]
             + [f"85.1.{i >> 8 & 255}.{i & 255}" for i in range(20000)])
    for ip in first:
        assert c_prefixes.cached_local(ip) is ip.startswith("10.")
    assert 0 < c_prefixes.cache_size() <= c_prefixes.CACHE_SLOTS == 16384
    for ip in reversed(first):
        assert c_prefixes.cached_local(ip) is ip.startswith("10.")
    marker = "".join(["203.0.113.", "99"])  # held by the cache while in its slot, let go when replaced
    before = sys.getrefcount(marker)
    c_prefixes.cached_local(marker)
    assert sys.getrefcount(marker) == before + 1
    # an address whose text hashes to the marker's slot (a slot is the str hash modulo the slots) takes
    # it (16 million candidates: one of them hashes there, whatever the process's hash seed)
    slots = c_prefixes.CACHE_SLOTS
    rival = next(ip for ip in (f"198.{i >> 16}.{i >> 8 & 255}.{i & 255}" for i in range(1 << 24))
                 if hash(ip) % slots == hash(marker) % slots)
    c_prefixes.cached_local(rival)
    assert sys.getrefcount(marker) == before


# --- the P2P detector's per-flow tests (p2p.Intake) ------------------------------------------------

P2P_ADDRESSES = ("192.168.1.40", "10.0.0.2", "85.1.2.7", "203.0.113.9", "2001:db8::7", "fe80::1",
                 "::ffff:10.0.0.3", "::ffff:8.8.8.8", " 8.8.4.4", "host")
p2p_flow = st.builds(
    lambda start, proto, saddr, daddr, sport, dport, spkts, dpkts: Flow(
        start, start + 1.0, proto, saddr, sport, daddr, dport, spkts, dpkts, 100 * spkts, 100 * dpkts),
    st.floats(0, 5000), st.sampled_from(("tcp", "udp", "icmp", "gre")), st.sampled_from(P2P_ADDRESSES),
    st.sampled_from(P2P_ADDRESSES), st.sampled_from((80, 1023, 1024, 3389, 8080, 51413, 60000)),
    st.sampled_from((22, 443, 1023, 1024, 4444, 6881, 40000)), st.integers(0, 2), st.integers(0, 2))


@settings(max_examples=300, deadline=None)
@given(st.lists(p2p_flow, max_size=60), st.sets(st.sampled_from(P2P_ADDRESSES)))
def test_p2p_intake_twins_agree(ops: list[Flow], named: set[str]) -> None:
    """The same flows handed to `count` with the same arguments, the others answered NO_EVIDENCE."""
    ctx = Context(config([]), AllowList())
    ctx.dns_names.update((ip, {"x.example"}) for ip in named)
    calls: dict[str, list[Any]] = {"py": [], "c": []}

    def counter(impl: str) -> Any:
        def count(*args: Any) -> Any:
            calls[impl].append(args)
            return [args]
        return count

    py, c = py_p2p.Intake(ctx, is_local, counter("py")), c_p2p.Intake(ctx, is_local, counter("c"))
    for f in ops:
        a, b = py.on_flow(f), c.on_flow(f)
        assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
        assert calls["py"] == calls["c"]
    memo = is_local.__self__  # type: ignore[attr-defined]
    assert all(memo[ip] == _local(ip) for ip in P2P_ADDRESSES if ip in memo)  # what the C side put there


# --- what each DNS answer costs the DGA and unknown-port detectors (dga.Intake, unknownport.DnsIntake) ---

DNS_HOSTS = ("192.168.1.7", "10.0.0.9", "8.8.8.8", "2001:db8::53")


class _SubEvent(AppEvent):  # not an AppEvent itself: the compiled side reads it through getattr
    __slots__ = ()


dns_event = st.builds(
    lambda ts, kind, resolver, sport, client, rcode, answers, query, sub, extra: (_SubEvent if sub else AppEvent)(
        ts, kind, resolver, sport, client, 40000, "udp",
        {"query": query, "answers": answers, **({} if rcode == "absent" else {"rcode": rcode}), **extra}),
    # times on and around the refresh intervals (60 s, 300 s), ints too, and anything
    st.one_of(st.sampled_from([0, 0.0, 59.9, 60, 60.1, 299.9, 300, 300.0, 300.1, 360, 600, 600.5]), st.floats(0, 2000)),
    st.sampled_from(("dns", "dns", "dns", "tls", "arp")), st.sampled_from(DNS_HOSTS[:2] * 3 + DNS_HOSTS[2:]),
    st.sampled_from((53, 53, 53, 5353, 853)),
    st.sampled_from(DNS_HOSTS[:2] * 3 + DNS_HOSTS[2:]), st.sampled_from((0, 0, 0, 3, 2, None, "absent", 0.0, False)),
    st.sampled_from(([], ["1.2.3.4"], ["1.2.3.4", "::1"])), st.sampled_from(("a.example", "x7k2p9qmz.example", "")),
    st.booleans(), st.sampled_from(({}, {"response": False})))


@settings(max_examples=500, deadline=None)
@given(st.lists(dns_event, max_size=50), st.sets(st.sampled_from(DNS_HOSTS)), st.integers(1, 3))
def test_dns_intakes_twins_agree(events: list[AppEvent], counted: set[str], bound: int) -> None:
    """Both DGA intakes refresh the same resolvers in the same LRU order, hand the same answers to
    `resolved` and the same NXDOMAINs to `nxdomain`; both unknown-port intakes keep the same clients
    (with need_dns on and off)."""
    from collections import OrderedDict

    from slipsq.detect import dga as py_dga
    from slipsq.detect import unknownport as py_unknownport

    c_dns = pytest.importorskip("slipsq.detect._dns")
    seen: dict[str, list[Any]] = {"py": [], "c": []}
    resolvers: dict[str, OrderedDict[tuple[str, str], float]] = {"py": OrderedDict(), "c": OrderedDict()}
    clients: dict[tuple[str, bool], OrderedDict[str, float]] = {
        (impl, need): OrderedDict() for impl in ("py", "c") for need in (True, False)}

    def hooks(impl: str) -> tuple[Any, Any]:
        def resolved(client: str, query: object) -> None:
            seen[impl].append(("resolved", client, query))

        def nxdomain(event: AppEvent) -> Any:
            seen[impl].append(("nxdomain", event))
            return [event.data.get("query")]
        return resolved, nxdomain

    dga = {"py": py_dga.Intake(resolvers["py"], set(counted), *hooks("py")),
           "c": c_dns.DgaIntake(resolvers["c"], set(counted), *hooks("c"))}
    kinds = {"py": py_unknownport.DnsIntake, "c": c_dns.ClientsIntake}
    ports = {(impl, need): kinds[impl](clients[impl, need], need) for impl in ("py", "c") for need in (True, False)}
    with pytest.MonkeyPatch.context() as mp:  # small bounds, so that the eviction order is compared too
        for module in (py_dga, c_dns):
            mp.setattr(module, "_MAX_RESOLVERS", bound)
        for module in (py_unknownport, c_dns):
            mp.setattr(module, "_MAX_CLIENTS", bound)
        for ev in events:
            a, b = dga["py"].on_app(ev), dga["c"].on_app(ev)
            assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
            for need in (True, False):
                assert ports["py", need].on_app(ev) is NO_EVIDENCE and ports["c", need].on_app(ev) is NO_EVIDENCE
            assert len(resolvers["c"]) <= bound and len(clients["c", True]) <= bound
    assert seen["py"] == seen["c"]
    assert list(resolvers["py"].items()) == list(resolvers["c"].items())
    for need in (True, False):
        assert list(clients["py", need].items()) == list(clients["c", need].items())
    assert not clients["py", False]


@pytest.mark.parametrize("impl", ["py", "c"])
def test_dns_intakes_refresh_strictly_after_their_interval(impl: str) -> None:
    """The refresh boundaries, which a random search rarely lands on: a resolver is refreshed only
    more than 300 s after its last refresh, a client more than 60 s; each refresh moves it last."""
    from collections import OrderedDict

    from slipsq.detect import dga as py_dga
    from slipsq.detect import unknownport as py_unknownport

    c_dns = pytest.importorskip("slipsq.detect._dns")
    resolvers: OrderedDict[tuple[str, str], float] = OrderedDict()
    clients: OrderedDict[str, float] = OrderedDict()
    def never(*args: Any) -> Any:
        raise AssertionError(f"called with {args}")

    dga = (py_dga.Intake if impl == "py" else c_dns.DgaIntake)(resolvers, set(), never, never)
    port = (py_unknownport.DnsIntake if impl == "py" else c_dns.ClientsIntake)(clients, True)

    def answer(ts: float, client: str = "192.168.1.7") -> AppEvent:
        return AppEvent(ts, "dns", "8.8.8.8", 53, client, 40000, "udp", {"query": "a.example", "rcode": 0,
                                                                        "answers": ["1.2.3.4"]})

    for ts, client in [(0.0, "192.168.1.7"), (1.0, "10.0.0.9"), (60.0, "192.168.1.7"), (60.5, "192.168.1.7"),
                       (300.0, "192.168.1.7"), (300.5, "192.168.1.7")]:
        dga.on_app(answer(ts, client))
        port.on_app(answer(ts, client))
        if ts == 60.0:  # exactly the client interval: not yet refreshed, not moved
            assert list(clients.items()) == [("192.168.1.7", 0.0), ("10.0.0.9", 1.0)]
    assert list(resolvers.items()) == [(("10.0.0.9", "8.8.8.8"), 1.0), (("192.168.1.7", "8.8.8.8"), 300.5)]
    assert list(clients.items()) == [("10.0.0.9", 1.0), ("192.168.1.7", 300.0)]  # 60.5, then 300.0
    dga.on_app(answer(300.5 + 300.0))  # exactly the interval: not yet
    port.on_app(answer(300.5 + 60.0, "10.0.0.9"))  # 10.0.0.9 last at 1.0: due, and moves last
    assert resolvers["192.168.1.7", "8.8.8.8"] == 300.5
    assert list(clients) == ["192.168.1.7", "10.0.0.9"] and clients["10.0.0.9"] == 360.5


def test_the_app_intakes_are_the_detectors_hooks() -> None:
    """The engine calls each detector's on_app: with the compiled build, that is the intake itself
    (DGA's, unknownport's, dnstunnel's and beacon's)."""
    from slipsq.detect.dga import DGA
    from slipsq.detect.dnstunnel import DnsTunnel
    from slipsq.detect.unknownport import UnknownPort

    c_dns = pytest.importorskip("slipsq.detect._dns")
    ctx = Context(config([DGA, UnknownPort, Beacon, DnsTunnel]), AllowList())
    d, u, b, t = DGA(ctx), UnknownPort(ctx), Beacon(ctx), DnsTunnel(ctx)
    assert isinstance(d.intake, c_dns.DgaIntake) and d.on_app == d.intake.on_app
    assert isinstance(u.dns_intake, c_dns.ClientsIntake) and u.on_app == u.dns_intake.on_app
    assert isinstance(b.intake, c_beacon.Intake) and b.on_app == b.intake.on_app
    assert isinstance(t.intake, c_dns.TunnelIntake) and t.on_app == t.intake.on_app


tunnel_event = st.builds(
    lambda ts, kind, sport, query, qtype, sub: (_SubEvent if sub else AppEvent)(
        ts, kind, "10.0.0.1", sport, "10.0.0.9", 40000, "udp",
        {"query": query, **({} if qtype == "absent" else {"qtype": qtype})}),
    st.floats(0, 2000), st.sampled_from(("dns", "dns", "tls")), st.sampled_from((53, 53, 5353)),
    st.one_of(st.sampled_from(("a.example", "x" * 23 + ".example", "x" * 24, "x" * 30 + ".c2.example.", "")),
              st.text(max_size=40), st.none(), st.integers()),
    st.sampled_from((1, 16, 10, 15, 33, 65399, 28, None, "absent", 16.0, True)), st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(tunnel_event, max_size=30))
def test_dnstunnel_intake_twins_agree(events: list[AppEvent]) -> None:
    """Both DNS tunnel intakes hand the same events, with the same query, to `named`, and answer
    what it answers (NO_EVIDENCE itself for the rest)."""
    from slipsq.detect import dnstunnel as py_dnstunnel

    c_dns = pytest.importorskip("slipsq.detect._dns")
    seen: dict[str, list[Any]] = {"py": [], "c": []}

    def named(impl: str) -> Any:
        def hook(event: AppEvent, query: str) -> Any:
            seen[impl].append((event, query))
            return [query]
        return hook

    py, c = py_dnstunnel.Intake(named("py")), c_dns.TunnelIntake(named("c"))
    for ev in events:
        a, b = py.on_app(ev), c.on_app(ev)
        assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
    assert seen["py"] == seen["c"]


banner_event = st.builds(
    lambda ts, kind, server, sport, client, cport, data, sub: (_SubEvent if sub else AppEvent)(
        ts, kind, server, sport, client, cport, "tcp", data),
    st.floats(0, 2000), st.sampled_from(("banner", "banner", "http", "tls")),
    st.sampled_from(("198.51.100.1", "10.0.0.7")), st.sampled_from((22, 21, 8080)),
    st.sampled_from(("10.0.0.1", "10.0.0.2")), st.sampled_from((40000, 40001, 40002)),
    st.one_of(st.fixed_dictionaries({"service": st.sampled_from(("ssh", "ftp", "smtp", "vnc", "telnet", "http",
                                                                  None, 3))}),
              st.fixed_dictionaries({"method": st.sampled_from(("POST", "GET", "post", None)),
                                     "uri": st.sampled_from(("/inform", "/inform?x=1", "/")),
                                     "user_agent": st.sampled_from(("AirControl Agent v1.0", "curl/8"))}),
              st.just({})),
    st.booleans())


@settings(max_examples=300, deadline=None)
@given(st.lists(banner_event, max_size=30), st.integers(1, 3))
def test_beacon_app_intake_twins_agree(events: list[AppEvent], bound: int) -> None:
    """Both beacon intakes remember the same connections' banners in the same LRU order (bounded
    the same way), and hand the same HTTP POSTs to `post`."""
    seen: dict[str, list[Any]] = {"py": [], "c": []}

    def post(impl: str) -> Any:
        def hook(event: AppEvent) -> Any:
            seen[impl].append(event)
            return [event.ts]
        return hook

    intakes = {}
    for impl, mod in (("py", py_beacon), ("c", c_beacon)):
        tuples = mod.Tuples(10, 100)
        intakes[impl] = mod.Intake(tuples, 4, 8, 3600.0, set(), is_local, AllowList())
        intakes[impl].post = post(impl)
    with pytest.MonkeyPatch.context() as mp:  # a small bound, so that the eviction order is compared too
        mp.setattr(py_beacon, "MAX_SPEAKS_FIRST", bound)
        mp.setattr(c_beacon, "MAX_SPEAKS_FIRST", bound)
        for ev in events:
            a, b = intakes["py"].on_app(ev), intakes["c"].on_app(ev)
            assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
    assert seen["py"] == seen["c"]
    assert list(intakes["py"].speaks_first.items()) == list(intakes["c"].speaks_first.items())


# --- the brute force detector's per-flow and per-event tests (bruteforce.Intake) ---------------------

BF_SERVERS = ("192.168.1.10", "198.51.100.66")
BF_PORTS = (21, 22, 80, 2222, 3389, 8080)
bf_flow = st.builds(
    lambda start, proto, saddr, daddr, dport, state, dpkts, dur, closed_by: Flow(
        start, start + dur, proto, saddr, 40000, daddr, dport, 3, dpkts, 300, 300 * dpkts, state=state,
        closed_by=closed_by),
    st.floats(0, 5000), st.sampled_from(("tcp", "udp", "icmp")), st.sampled_from(BF_SERVERS),
    st.sampled_from(BF_SERVERS), st.sampled_from(BF_PORTS), st.sampled_from(STATES), st.integers(0, 2),
    st.sampled_from((0.0, 2.5, 400.0, -1.0)), st.sampled_from(("fin", "rst", "active", "idle")))
bf_event = st.builds(
    lambda kind, saddr, daddr, dport, service: AppEvent(T0, kind, saddr, 40000, daddr, dport, "tcp",
                                                        {"service": service}),
    st.sampled_from(("banner", "http", "dns")), st.sampled_from(BF_SERVERS), st.sampled_from(BF_SERVERS),
    st.sampled_from(BF_PORTS), st.sampled_from(("ssh", "ftp", "http", "tls", "vnc", "rdp", "telnet")))


def count_state(c: Any) -> Any:
    return c.first, c.last, c.short, c.long, c.emitted, c.emitted_threat, c.run, c.run_last, c.longest


def bruteforce_state(i: Any) -> Any:
    return i.index, {k: count_state(c) for k, c in i.counts.items()}, list(i.banners.items())


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(bf_flow, bf_event, st.sampled_from(BF_PORTS)), max_size=80),
       st.sampled_from((600.0, 3600.0, 0.7)), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3),
       st.booleans(), st.sampled_from((120.0, 0.5, 1000.0, float("inf"))))
def test_bruteforce_intake_twins_agree(ops: list[Any], window: float, min_n: int, max_keys: int, max_banners: int,
                                       report: bool, max_gap: float) -> None:
    """The same counts judged; the same counts, window and banners kept (the banners' LRU order
    included); every other flow and event answered NO_EVIDENCE. (A port in `ops` asks `service`.)"""
    def judge(service: str, key: Any, c: Any, f: Flow) -> Any:
        if report:  # as BruteForce._judge does when it reports
            c.emitted, c.emitted_threat = c.short, 0.8
        return [(service, key, count_state(c), f)]

    ports = dict(py_bruteforce.DEFAULT_PORTS)
    py = py_bruteforce.Intake(ports, window, min_n, 30.0, max_keys, max_banners, judge, max_gap)
    c = c_bruteforce.Intake(ports, window, min_n, 30.0, max_keys, max_banners, judge, max_gap)
    for op in ops:
        a: Any
        b: Any
        if isinstance(op, Flow):
            a, b = py.on_flow(op), c.on_flow(op)
        elif isinstance(op, AppEvent):
            a, b = py.on_app(op), c.on_app(op)
        else:
            a, b = [py.service(s, op) for s in BF_SERVERS], [c.service(s, op) for s in BF_SERVERS]
        assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
        assert bruteforce_state(py) == bruteforce_state(c)
        assert len(py.banners) <= max_banners and len(py.counts) <= max_keys


# --- the exfiltration detector's per-flow tests (exfil.Intake) -------------------------------------

EXFIL_HOSTS = ("192.168.1.66", "10.0.0.2", "203.0.113.77", "198.51.100.9", "2001:db8::1")
exfil_flow = st.builds(
    lambda start, proto, saddr, daddr, sport, dport, dpkts, sbytes, dbytes, closed_by, state: Flow(
        start, start + 60, proto, saddr, sport, daddr, dport, 10, dpkts, sbytes, dbytes, state=state,
        closed_by=closed_by),
    st.floats(0, 20_000), st.sampled_from(("tcp", "tcp", "udp")), st.sampled_from(EXFIL_HOSTS),
    st.sampled_from(EXFIL_HOSTS), st.sampled_from((443, 1023, 40000)), st.sampled_from((443, 1023, 1024, 40000)),
    st.integers(0, 2), st.one_of(st.integers(0, 20_000), st.sampled_from((16_384, 10**6, 10**9))),
    st.one_of(st.integers(0, 20_000), st.just(0), st.just(10**6)), st.sampled_from(("fin", "active", "active")),
    st.sampled_from(("", "", "SPA_SPA", "SA_SA", "PA_PA", "PA_RA", "SR_SA", "OTH", "SF", "new", "FIN")))


def pair_state(p: Any) -> Any:
    return p.index, p.up, p.down, p.emitted, p.emitted_threat, p.first, p.last


def exfil_state(i: Any) -> Any:
    return [(k, pair_state(p)) for k, p in i.pairs.items()], list(i.open.items())


@settings(max_examples=300, deadline=None)
@given(st.lists(exfil_flow, max_size=60), st.sampled_from((600.0, 3600.0, 0.7)), st.sampled_from((16_384, 10**6)),
       st.sampled_from((1.0, 10.0)), st.integers(1, 4), st.booleans())
def test_exfil_intake_twins_agree(ops: list[Flow], window: float, bar: int, ratio: float, max_pairs: int,
                                  report: bool) -> None:
    """The same pairs judged with the same sums; the same pairs and open reports kept, in the same
    LRU order; every other flow answered NO_EVIDENCE."""
    def judge(src: str, dst: str, p: Any, f: Flow) -> Any:
        if report:  # as Exfil._judge does when it reports
            p.emitted, p.emitted_threat = p.up, 0.5
        return [(src, dst, pair_state(p), f)]

    py = py_exfil.Intake(window, bar, ratio, max_pairs, is_local, judge)
    c = c_exfil.Intake(window, bar, ratio, max_pairs, is_local, judge)
    for f in ops:
        a, b = py.on_flow(f), c.on_flow(f)
        assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
        assert exfil_state(py) == exfil_state(c)
        assert len(py.pairs) <= max_pairs


tls_event = st.builds(
    lambda kind, saddr, daddr, data: AppEvent(1.0, kind, saddr, 40000, daddr, 22000, "tcp", data),
    st.sampled_from(("tls", "tls", "banner")), st.sampled_from(EXFIL_HOSTS), st.sampled_from(EXFIL_HOSTS),
    st.sampled_from(({"sni": "a.example"}, {"sni": ""}, {"sni": None}, {"sni": 7}, {"alpn": "bep/1.0"},
                     {"alpn": "bep-relay"}, {"alpn": "h2"}, {"alpn": 5}, {"sni": "", "alpn": "bep/1.0"},
                     {"sni": "b.example", "alpn": "bep/1.0"}, {})))


@settings(max_examples=300, deadline=None)
@given(st.lists(tls_event, max_size=30), st.integers(1, 3))
def test_exfil_tls_names_twins_agree(events: list[AppEvent], bound: int) -> None:
    """The same names kept for the same pairs, in the same LRU order: a hello's server name, else an
    application protocol of APP_PROTOCOLS it offered (Syncthing's), else nothing."""
    py = py_exfil.Intake(3600.0, 10**6, 10.0, 4, is_local, lambda *a: [], max_tls_names=bound)
    c = c_exfil.Intake(3600.0, 10**6, 10.0, 4, is_local, lambda *a: [], max_tls_names=bound)
    for ev in events:
        assert py.on_app(ev) is NO_EVIDENCE and c.on_app(ev) is NO_EVIDENCE
        assert list(py.tls_names.items()) == list(c.tls_names.items())
        assert all(v in py_exfil.APP_PROTOCOLS or v.endswith(".example") for v in py.tls_names.values())
    assert len(py.tls_names) <= bound


# few connections, so that a tunnel's event and its flows meet (from many, they never did): two
# clients of ours, two servers, two client ports, a VPN's port and a web port
VPN_CONN = (st.sampled_from(("192.168.1.66", "10.0.0.2")), st.sampled_from((40000, 40001)),
            st.sampled_from(("203.0.113.77", "2001:db8::1")), st.sampled_from((443, 1194)))
vpn_event = st.builds(
    lambda saddr, sport, daddr, dport, protocol: AppEvent(1.0, "tunnel", saddr, sport, daddr, dport, "tcp",
                                                          {"protocol": protocol}),
    *VPN_CONN, st.sampled_from(("openvpn", "openvpn", "wireguard")))
vpn_flow = st.builds(
    lambda saddr, sport, daddr, dport, start, sbytes, dbytes, closed_by: Flow(
        start, start + 60, "tcp", saddr, sport, daddr, dport, 10, 8, sbytes, dbytes, state="SPA_SPA",
        closed_by=closed_by),
    *VPN_CONN, st.floats(0, 20_000), st.sampled_from((1_000, 40_000, 10**6)), st.sampled_from((0, 2_000, 10**6)),
    st.sampled_from(("fin", "rst", "idle", "active")))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(vpn_event, vpn_flow), max_size=60), st.integers(1, 4))
@example([AppEvent(1.0, "tunnel", "192.168.1.66", 40000, "203.0.113.77", 1194, "tcp", {"protocol": "openvpn"}),
          Flow(5.0, 65.0, "tcp", "192.168.1.66", 40000, "203.0.113.77", 1194, 10, 8, 10**6, 0, state="SPA_SPA",
               closed_by="active"),
          Flow(5.0, 125.0, "tcp", "192.168.1.66", 40000, "203.0.113.77", 1194, 10, 8, 2 * 10**6, 0,
               state="SPA_SPA", closed_by="fin")], 2)  # a tunnel's report, then its end: always run
def test_exfil_tunnel_twins_agree(ops: list[Any], bound: int) -> None:
    """A VPN client's first bytes ("tunnel" events) mark that connection's 5-tuple; its flows sum in a
    pair of their own, with the tunnel named; a FIN or RST frees the 5-tuple: the same pairs, the
    same marks, in the same LRU order, on both twins."""
    def judge(src: str, dst: str, p: Any, f: Flow) -> Any:
        return [(src, dst, pair_state(p), p.tunnel, f)]

    py = py_exfil.Intake(3600.0, 16_384, 1.0, 4, is_local, judge, max_tls_names=bound)
    c = c_exfil.Intake(3600.0, 16_384, 1.0, 4, is_local, judge, max_tls_names=bound)
    for op in ops:
        a, b = (py.on_app(op), c.on_app(op)) if isinstance(op, AppEvent) else (py.on_flow(op), c.on_flow(op))
        assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
        assert exfil_state(py) == exfil_state(c)
        assert [p.tunnel for p in py.pairs.values()] == [p.tunnel for p in c.pairs.values()]
        assert list(py.tunnels.items()) == list(c.tunnels.items()) and len(py.tunnels) <= bound
        assert all(len(k) == 2 or k[2] == "openvpn" for k in py.pairs)


# --- the reconnection-storm detector's per-flow tests (reconnect.Intake) ----------------------------

class SubFlow(Flow):
    """A Flow of another class: the compiled readers take every field of it through getattr."""

    __slots__ = ()


RC_ADDRESSES = ("192.168.1.66", "10.0.0.2", "203.0.113.50", "2001:db8::1", "fe80::1", "::ffff:8.8.8.8",
                " 8.8.4.4", "host")
RC_STATES = ("S_", "S_RA", "S0", "REJ", "INT", "SF", "FSPA_FSPA", "", "ZZ")  # mostly unanswered: the packets decide
rc_flow = st.builds(
    lambda cls, start, dur, proto, saddr, daddr, dport, dpkts, extra, state, closed_by: cls(
        start, start + dur, proto, saddr, 40000, daddr, dport, 1, dpkts, 60, 60 * dpkts + extra, state=state,
        closed_by=closed_by),
    st.sampled_from((Flow, Flow, Flow, SubFlow)),
    st.one_of(st.floats(0, 20_000), st.integers(0, 20_000)),  # int times too (a flow file's)
    st.sampled_from((0.0, 1.0, 400.0, 0)), st.sampled_from(("tcp", "tcp", "tcp", "udp", "icmp")),
    st.sampled_from(RC_ADDRESSES), st.sampled_from(RC_ADDRESSES), st.sampled_from((22, 53, 443, 853, 1604, 53.0)),
    # the packets back around the "answered" line: 0..3, a bool, a float, past a C long / 64
    st.one_of(st.integers(0, 3), st.integers(2, 3), st.booleans(), st.just(2.0), st.just(2**60)),
    # the bytes back around 60 x packets (a huge count: Python's arithmetic)
    st.sampled_from((-1, 0, 0, 1, 100, 10**20)),
    st.sampled_from(RC_STATES), st.sampled_from(("fin", "rst", "rst", "active", "idle")))


class RecordingServers(py_inuse.ServersInUse):
    """A servers table of another class: the compiled intake calls its `note` (recorded here)."""

    __slots__ = ("notes",)

    def __init__(self, bound: int) -> None:
        super().__init__(bound)
        self.notes: list[Flow] = []

    def note(self, flow: Flow) -> None:
        self.notes.append(flow)
        super().note(flow)


@settings(max_examples=400, deadline=None)
@given(st.lists(rc_flow, max_size=60), st.sampled_from(("py", "c", "recording")), st.integers(1, 4), st.booleans())
def test_reconnect_intake_twins_agree(ops: list[Flow], table: str, bound: int, memo_local: bool) -> None:
    """The same flows handed to `count`; the same answered flows noted, leaving the same servers in
    use (in the same LRU order), through the compiled table's C call or any other table's `note`;
    every other flow answered NO_EVIDENCE."""
    calls: dict[str, list[Any]] = {"py": [], "c": []}

    def counter(impl: str) -> Any:
        def count(f: Flow) -> Any:
            calls[impl].append(f)
            return [f]
        return count

    def servers() -> Any:
        return {"py": py_inuse.ServersInUse, "c": c_portscan.Servers, "recording": RecordingServers}[table](bound)

    local = is_local if memo_local else (lambda ip: ip.startswith(("192.168.", "10.", "fe80")))
    py_table, c_table = servers(), servers()
    py = py_reconnect.Intake(py_table, local, counter("py"))
    c = c_reconnect.Intake(c_table, local, counter("c"))
    for f in ops:
        a, b = py.on_flow(f), c.on_flow(f)
        assert a == b and (a is NO_EVIDENCE) == (b is NO_EVIDENCE)
        assert calls["py"] == calls["c"]
        assert servers_state(py_table) == servers_state(c_table)
        if table == "recording":
            assert py_table.notes == c_table.notes
    memo = is_local.__self__  # type: ignore[attr-defined]
    assert all(memo[ip] == _local(ip) for ip in RC_ADDRESSES if ip in memo)  # what the C side put there


def test_reconnect_intake_notes_through_the_compiled_table_and_counts_a_failed_attempt() -> None:
    """Not a vacuous agreement: an answered outbound flow lands in the compiled table (by its C
    call), a rejected one reaches `count`, an inbound or DNS or report one neither."""
    counted: list[Flow] = []

    def count(f: Flow) -> Any:
        counted.append(f)
        return [f]

    table = c_portscan.Servers(8)
    intake = c_reconnect.Intake(table, is_local, count)
    lan, cc = "192.168.1.66", "203.0.113.50"
    answered = Flow(T0, T0 + 5, "tcp", lan, 40000, cc, 443, 10, 10, 900, 9000, state="FSPA_FSPA")
    rejected = Flow(T0, T0 + 0.1, "tcp", lan, 40001, cc, 1604, 1, 1, 60, 40, state="S_RA", closed_by="rst")
    inbound = Flow(T0, T0 + 0.1, "tcp", cc, 40002, lan, 22, 1, 1, 60, 40, state="S_RA")
    dns = Flow(T0, T0 + 0.1, "tcp", lan, 40003, cc, 53, 1, 0, 60, 0, state="S_")
    report = Flow(T0, T0 + 0.1, "tcp", lan, 40004, cc, 1604, 1, 0, 60, 0, state="S_", closed_by="active")
    assert intake.on_flow(answered) is NO_EVIDENCE and list(table.when) == [cc]
    assert intake.on_flow(rejected) == [rejected] and counted == [rejected]
    for f in (inbound, dns, report):
        assert intake.on_flow(f) is NO_EVIDENCE
    assert counted == [rejected]


def storm_flows(seed: int) -> list[Flow]:
    """Storms (rejected, unanswered, to a server some host uses, inbound, to DNS, between LAN hosts)
    among answered sessions, out of start order: every branch of the reconnect detector."""
    rng = random.Random(seed)
    out = []
    for _ in range(1500):
        src = rng.choice(("10.0.0.1", "10.0.0.2", "198.51.100.9"))
        answered = rng.random() < 0.3
        # nobody uses .50 (its storms may block); .51 answers some flows (its storms never block)
        dst = rng.choice(("203.0.113.51", "10.0.0.7", "2001:db8::1", *(() if answered else ("203.0.113.50",) * 3)))
        port = rng.choice((1604, 4444, 53, 443))
        out.append(flow(T0 + rng.uniform(0, 7200), src, dst, port, dur=rng.choice((0.03, 30.0)),
                        dbytes=rng.choice((3000, 400)) if answered else rng.choice((0, 40)),
                        state="" if answered else rng.choice(("S_RA", "S_", "REJ", "S0")),
                        sport=rng.randrange(32768, 61000), closed_by=rng.choice(("fin", "rst", "active"))))
    return sort_flows(out)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reconnect_gives_the_same_evidence_on_both(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole detector, beside port scan (the servers-in-use table they share), on both."""
    evidence = evidence_on_both([PortScan, Reconnect], storm_flows(seed), monkeypatch)
    storms = [e for e, _ in evidence["py"] if e.detector == "reconnect"]
    assert {e.may_block for e in storms} == {True, False}, "the mix must make storms that block and that do not"
    assert evidence["py"] == evidence["c"]


# --- keys kept by the compiled maps are out of the cycle collector (slipsq/_gckeys.pxd) -------------

def test_kept_keys_of_texts_and_numbers_are_untracked_and_others_stay_tracked() -> None:
    """A 4-tuple or pair the compiled detectors keep as a key, made of texts and numbers, is out of
    the cycle collector from the start (it can be in no cycle; the collector walked every new one
    at the next young collection); a key holding anything else stays tracked."""
    c_letters = pytest.importorskip("slipsq.detect.stratosphere._letters")
    table = c_letters.LetterTable()
    assert table.add(flow(T0, "10.0.0.1", "198.51.100.1", 443)) is not None
    (kept,) = [t.key for t in table]
    assert kept == ("10.0.0.1", "198.51.100.1", 443, "tcp") and not gc.is_tracked(kept)

    class Proto:  # an instance: a key item the collector must see
        pass

    tuples = c_beacon.Tuples(10, 100)
    port = 443
    atomic = tuple(["10.0.0.1", "198.51.100.1", port, "tcp"])  # made at run time: tracked
    other = tuple(["10.0.0.1", "198.51.100.1", port, Proto()])
    assert gc.is_tracked(atomic) and gc.is_tracked(other)
    tuples.add(atomic, T0, 100)
    tuples.add(other, T0, 100)
    assert list(tuples) == [atomic, other]
    assert not gc.is_tracked(atomic) and gc.is_tracked(other)
