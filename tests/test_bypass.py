"""Flow bypass, the pure parts: the table's bypass rules on both twins, the merge of the table's
counts with conntrack's, the conntrack messages (both ways, and fuzzed), the kernel rule's text, and
the differential proof that detections are the same with bypass on and off (tests/bypass_sim.py)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq import runmode
from slipsq.flow import Flow
from slipsq.flowtable import BYPASS, BYPASS_MAX_WAITS, UNBYPASS
from slipsq.flowtable import FlowTable as PyTable
from slipsq.sources.conntrack import Counters, Merger, Timers, get_request, last_packet, merge, parse_answers
from slipsq.verdict.backends import RuleSpec, parse_save
from slipsq.verdict.firewall import bypass_rules, bypass_tag
from tests.bypass_sim import ip_packets, replay
from tests.helpers import tcp

RAW = 101
SYN, ACK, FIN, RST, PSH = 0x02, 0x10, 0x01, 0x04, 0x08
C, S = "10.9.0.2", "10.9.0.9"
DATA = Path(__file__).parent / "data"


def _tables() -> list[Any]:
    out: list[Any] = [pytest.param(PyTable, id="py")]
    try:
        from slipsq._flowtable import FlowTable as CTable
        out.append(pytest.param(CTable, id="c"))
    except ImportError:
        pass
    return out


@pytest.fixture(params=_tables())
def table(request: pytest.FixtureRequest) -> Any:
    t = request.param(runmode.load_config(None))
    t.set_bypass(3, 2)
    return t


def conversation(t: Any, n: int, sport: int = 40000, t0: float = 100.0, dport: int = 8080) -> list[int]:
    """Handshake, then n request/answer pairs; the verdicts."""
    pk = [tcp(C, sport, S, dport, SYN), tcp(S, dport, C, sport, SYN | ACK), tcp(C, sport, S, dport, ACK)]
    for i in range(n):
        pk.append(tcp(C, sport, S, dport, PSH | ACK, b"GET /%d\r\n" % i))
        pk.append(tcp(S, dport, C, sport, PSH | ACK, b"x" * 100))
    return [t.feed(p, t0 + i * 0.01, RAW) for i, p in enumerate(pk)]


def test_bypass_after_packets_each_way_then_unbypass_on_fin(table: Any) -> None:
    v = conversation(table, 4)
    # client: SYN, ACK, 4 requests; server: SYN-ACK, 4 answers. The first packet after both sides
    # have 3 and the client's payload was seen is bypassed, and only that one says so
    assert v.count(BYPASS) == 1 and v.index(BYPASS) == 6
    assert table.stats()["bypassed"] == 1
    # a packet queued before the kernel saw the mark is just accepted, and counted (as were the
    # conversation's packets after the switch)
    assert table.stats()["bypass_late"] == len(v) - 7
    assert table.feed(tcp(C, 40000, S, 8080, ACK), 101.0, RAW) == 1
    assert table.stats()["bypass_late"] == len(v) - 6
    assert table.feed(tcp(C, 40000, S, 8080, FIN | ACK), 101.1, RAW) == UNBYPASS
    assert table.feed(tcp(S, 8080, C, 40000, FIN | ACK), 101.2, RAW) == 1  # unbypassed: plain accept
    table.expire(200.0)
    assert table.pop_closed() == []  # a bypassed flow is held for conntrack's counts
    held = table.pop_held()
    assert [(f.sport, f.closed_by, f.spkts) for f in held] == [(40000, "fin", 8)]
    table.put_closed(held[0])
    assert table.pop_closed() == held


def test_bypassed_flow_never_idles_out_or_is_evicted(table: Any) -> None:
    conversation(table, 4)
    table.expire(100.0 + 10 * 3600)  # far beyond every idle timeout: only active reports come
    assert table.pop_closed() == []
    assert {f.closed_by for f in table.pop_held()} == {"active"}
    assert table.stats()["flows_open"] == 1
    table.close_all(100.0 + 10 * 3600)
    assert [f.closed_by for f in table.pop_held()] == ["end"]


def test_bypass_is_bounded_never_dns_never_before_client_payload(table: Any) -> None:
    assert BYPASS in conversation(table, 4, sport=1)
    assert BYPASS in conversation(table, 4, sport=2)
    assert BYPASS not in conversation(table, 4, sport=3)  # max_open 2 are bypassed now
    assert BYPASS not in conversation(table, 6, sport=4, dport=53)  # DNS over TCP: never
    quiet = [tcp(C, 5, S, 22, SYN), tcp(S, 22, C, 5, SYN | ACK)] + [tcp(C, 5, S, 22, ACK), tcp(S, 22, C, 5, ACK)] * 5
    assert BYPASS not in [table.feed(p, 300.0, RAW) for p in quiet]  # the client said nothing yet


def test_an_upload_to_a_silent_server_is_bypassed_later(table: Any) -> None:
    pk = [tcp(C, 7, S, 9, SYN), tcp(S, 9, C, 7, SYN | ACK), tcp(C, 7, S, 9, ACK)]
    for _ in range(12):
        pk += [tcp(C, 7, S, 9, PSH | ACK, b"u" * 1000), tcp(S, 9, C, 7, ACK)]
    v = [table.feed(p, 400.0, RAW) for p in pk]
    # the server never spoke: bypassed only once the client has sent 4 x 3 packets
    assert v.count(BYPASS) == 1 and v.index(BYPASS) == 2 + 2 * 10 - 1


def test_syn_on_a_bypassed_tuple_is_a_new_connection(table: Any) -> None:
    conversation(table, 4)
    assert table.feed(tcp(C, 40000, S, 8080, SYN), 150.0, RAW) == UNBYPASS
    assert [f.closed_by for f in table.pop_held()] == ["idle"]
    assert table.stats()["flows_open"] == 1


def test_a_ready_flow_switches_only_when_the_gate_opens(table: Any) -> None:
    """The switch waits for a drained queue (the NFQUEUE source's gate): the gate is asked only for
    a flow that is ready, once per packet while it waits; the first packet it lets through switches."""
    answers = [False, False, False, True]
    asked: list[int] = []

    def gate() -> bool:
        asked.append(len(asked))
        return answers[min(len(asked) - 1, len(answers) - 1)]

    table.set_bypass_gate(gate)
    v = conversation(table, 8)
    assert v.count(BYPASS) == 1 and v.index(BYPASS) == 6 + 3  # three packets waited (index 6: no gate)
    assert len(asked) == 4  # nothing asked before the flow was ready, nothing after it switched
    st = table.stats()
    assert (st["bypassed"], st["bypass_waits"], st["bypass_forced"]) == (1, 3, 0)


def test_a_queue_that_never_drains_delays_the_switch_by_a_bounded_number_of_packets(table: Any) -> None:
    table.set_bypass_gate(lambda: False)
    v = conversation(table, BYPASS_MAX_WAITS)
    assert v.count(BYPASS) == 1 and v.index(BYPASS) == 6 + BYPASS_MAX_WAITS  # it waited, then switched anyway
    st = table.stats()
    assert (st["bypassed"], st["bypass_waits"], st["bypass_forced"]) == (1, BYPASS_MAX_WAITS, 1)
    table.set_bypass_gate(None)  # no gate: a ready flow switches at once
    v = conversation(table, 4, sport=40001)
    assert v.index(BYPASS) == 6 and table.stats()["bypass_waits"] == BYPASS_MAX_WAITS


def test_a_gate_that_fails_holds_the_flow_back_and_is_reported(table: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both twins: the packet still gets its verdict (no exception into the packet path), the
    failure goes to sys.unraisablehook, and the flow waits as behind a busy queue."""
    reported: list[Any] = []
    monkeypatch.setattr("sys.unraisablehook", reported.append)

    def gate() -> bool:
        raise OSError("the socket is gone")

    table.set_bypass_gate(gate)
    assert table.bypass_gated
    v = conversation(table, 5)
    assert BYPASS not in v and all(x == 1 for x in v)
    st_ = table.stats()
    assert (st_["bypassed"], st_["bypass_waits"]) == (0, len(v) - 6)
    assert len(reported) == len(v) - 6 and isinstance(reported[0].exc_value, OSError)
    table.set_bypass_gate(None)
    assert not table.bypass_gated


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=40), st.integers(1, 6))
def test_the_twins_wait_alike(answers: list[bool], n: int) -> None:
    """Both tables ask the gate at the same packets and give the same verdicts and counts."""
    ctable = pytest.importorskip("slipsq._flowtable", reason="the compiled table is not built").FlowTable
    out = []
    for make in (PyTable, ctable):
        t = make(runmode.load_config(None))
        t.set_bypass(3, 2)
        t.set_bypass_gate(iter([*answers, *[True] * 200]).__next__)  # the answers, then open
        v = [conversation(t, 10 + n, sport=40000 + k, t0=100.0 + k) for k in range(3)]
        out.append((v, {k: t.stats()[k] for k in ("bypassed", "bypass_waits", "bypass_forced")}))
    assert out[0] == out[1]


def test_off_by_default() -> None:
    t = PyTable(runmode.load_config(None))
    assert BYPASS not in conversation(t, 20)


# --- merge -------------------------------------------------------------------------------------
def flow(**kw: Any) -> Flow:
    base = dict(start=1.0, end=2.0, proto="tcp", saddr=C, sport=40000, daddr=S, dport=8080, spkts=8,
                dpkts=7, sbytes=600, dbytes=900, state="FSPA_FSPA", dir="<->", closed_by="fin")
    base.update(kw)
    return Flow(**base)  # type: ignore[arg-type]


def test_merge_takes_the_kernels_counts_by_direction() -> None:
    f = flow()
    same = merge(f, Counters(C, 40000, 1000, 1_500_000, 500, 26_000))
    assert (same.spkts, same.sbytes, same.dpkts, same.dbytes) == (1000, 1_500_000, 500, 26_000)
    # conntrack's first packet was the server's (a flow the table saw from its SYN-ACK)
    swapped = merge(f, Counters(S, 8080, 500, 26_000, 1000, 1_500_000))
    assert (swapped.spkts, swapped.sbytes, swapped.dpkts, swapped.dbytes) == (1000, 1_500_000, 500, 26_000)
    assert (same.start, same.end, same.state, same.closed_by) == (f.start, f.end, f.state, f.closed_by)


def test_merge_never_lowers_a_count_and_keeps_a_flow_without_counters() -> None:
    f = flow()
    assert merge(f, None) is f
    low = merge(f, Counters(C, 40000, 1, 40, 0, 0))
    assert (low.spkts, low.sbytes, low.dpkts, low.dbytes) == (8, 600, 7, 900)


# --- conntrack messages -----------------------------------------------------------------------------
def answer(seq: int, c: Counters, daddr: str = S, dport: int = 8080, state: int = 3) -> bytes:
    """A conntrack entry message as the kernel sends it (encoded by pyroute2); its TCP state and
    timer when `c.timeout` is set (3: ESTABLISHED)."""
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple, nfct_msg

    fam = socket.AF_INET6 if ":" in c.saddr else socket.AF_INET
    m = nfct_msg()
    m["header"]["type"] = 1 << 8
    m["header"]["sequence_number"] = seq
    m["nfgen_family"] = fam
    tup = NFCTAttrTuple(family=fam, saddr=c.saddr, daddr=daddr, proto=6, sport=c.sport, dport=dport)
    m["attrs"] = [["CTA_TUPLE_ORIG", {"attrs": tup.attrs()}],
                  ["CTA_COUNTERS_ORIG", {"attrs": [["CTA_COUNTERS_PACKETS", c.orig_pkts],
                                                   ["CTA_COUNTERS_BYTES", c.orig_bytes]]}],
                  ["CTA_COUNTERS_REPLY", {"attrs": [["CTA_COUNTERS_PACKETS", c.reply_pkts],
                                                    ["CTA_COUNTERS_BYTES", c.reply_bytes]]}]]
    if c.timeout is not None:
        tcp_info = {"attrs": [["CTA_PROTOINFO_TCP_STATE", state]]}
        m["attrs"] += [["CTA_TIMEOUT", c.timeout], ["CTA_PROTOINFO", {"attrs": [["CTA_PROTOINFO_TCP", tcp_info]]}]]
    m.encode()
    return bytes(m.data)


def test_answers_both_ways_and_errors() -> None:
    c4 = Counters(C, 40000, 10, 20_000, 5, 300)
    c6 = Counters("fd00::2", 5555, 1, 60, 2 ** 40, 2 ** 50)
    err = bytes.fromhex("24000000020000000700000000000000") + bytes(20)  # NLMSG_ERROR, seq 7
    got = parse_answers(answer(5, c4) + answer(6, c6, "fd00::9") + err)
    assert got == [(5, c4), (6, c6), (7, None)]


def test_request_asks_for_the_clients_tuple() -> None:
    from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

    m = nfct_msg(get_request(9, flow()))
    m.decode()
    assert m["header"]["type"] == (1 << 8) | 1 and m["header"]["sequence_number"] == 9
    tup = m.get_attr("CTA_TUPLE_ORIG")
    assert tup.get_attr("CTA_TUPLE_IP").get_attr("CTA_IP_V4_SRC") == C
    assert tup.get_attr("CTA_TUPLE_PROTO").get_attr("CTA_PROTO_DST_PORT") == 8080


def test_the_timer_is_read_only_of_an_established_connection() -> None:
    c = Counters(C, 40000, 10, 20_000, 5, 300, timeout=431_990)
    assert parse_answers(answer(1, c)) == [(1, c)]
    assert parse_answers(answer(2, c, state=5)) == [(2, Counters(C, 40000, 10, 20_000, 5, 300))]  # TIME_WAIT


def test_last_packet_from_the_timer() -> None:
    timers = Timers(established=432_000, short=300)
    at = Counters(C, 40000, 1, 1, 1, 1, timeout=431_990)
    assert last_packet(at, 5_000.0, timers) == 4_990.0  # the timer restarted 10 s ago
    assert last_packet(Counters(C, 40000, 1, 1, 1, 1, timeout=432_000), 5_000.0, timers) == 5_000.0
    for timeout in (None, 300, 12, 432_001):  # not established; shortened (unacknowledged data); odd
        assert last_packet(Counters(C, 40000, 1, 1, 1, 1, timeout=timeout), 5_000.0, timers) is None


def bypassed_report(table: Any) -> Flow:
    """A bypassed conversation whose only report came (at t = 100 + active timeout)."""
    conversation(table, 4)
    table.expire(100.0 + 300.0)
    (report,) = table.pop_held()
    assert report.closed_by == "active" and report.end < 100.2
    return report


@pytest.fixture
def merger(table: Any) -> Iterator[Merger]:
    """The merger of `table`, conntrack's timers as Debian's defaults; answers are handed to it
    directly (_give_back), as its socket would."""
    m = Merger(table, idle=300.0, timers=Timers(established=432_000, short=300))
    yield m
    m.sock.close()


def test_a_report_ends_at_the_last_packet_conntrack_saw(table: Any, merger: Merger) -> None:
    report, m = bypassed_report(table), merger
    # the connection is busy: conntrack's timer restarted 2 s before the report
    m._give_back(report, Counters(C, 40000, 5000, 9_000_000, 4000, 200_000, timeout=431_998), 400.0)
    (back,) = table.pop_closed()
    assert back.closed_by == "active" and back.end == 398.0 and back.spkts == 5000  # a long connection is long
    assert table.stats()["flows_open"] == 1


def test_a_silent_bypassed_connection_closes_as_idle_once(table: Any, merger: Merger) -> None:
    report, m = bypassed_report(table), merger
    # still talking 4 min ago (after the table last saw it), silent since: not idle yet
    m._give_back(report, Counters(C, 40000, 9, 900, 7, 800, timeout=432_000 - 240), 400.0)
    assert [(f.closed_by, f.end) for f in table.pop_closed()] == [("active", 160.0)]
    # silent for 350 s, more than flowtable.tcp_idle: the close the table would have made, at its last packet
    m._give_back(report, Counters(C, 40000, 9, 900, 7, 800, timeout=432_000 - 350), 500.0)
    (back,) = table.pop_closed()
    assert back.closed_by == "idle" and back.end == 150.0 and back.spkts == 9
    assert m.ended_idle == 1 and table.stats()["flows_open"] == 0 and table.stats()["flows_closed"] == 1
    table.expire(100.0 + 3 * 3600)  # the table forgot it: no more reports
    assert table.pop_held() == [] and table.pop_closed() == []


def test_unknown_timer_or_no_timers_keep_the_report(table: Any, merger: Merger) -> None:
    report, m = bypassed_report(table), merger
    m._give_back(report, Counters(C, 40000, 9, 900, 7, 800, timeout=120), 400.0)  # shortened timer
    m.timers = None
    m._give_back(report, Counters(C, 40000, 9, 900, 7, 800, timeout=1000), 400.0)
    assert [(f.closed_by, f.end) for f in table.pop_closed()] == [("active", report.end)] * 2
    assert table.stats()["flows_open"] == 1


def test_end_bypassed_only_forgets_a_bypassed_tcp_flow(table: Any) -> None:
    conversation(table, 4)  # bypassed
    conversation(table, 1, sport=40001)  # too short to be bypassed
    assert not table.end_bypassed(C, 40001, S, 8080)
    assert not table.end_bypassed(C, 40002, S, 8080)  # no such flow
    assert not table.end_bypassed(C, 40000, "fd00::9", 8080)  # other family
    assert table.end_bypassed(S, 8080, C, 40000)  # either way round
    assert not table.end_bypassed(C, 40000, S, 8080)  # once
    assert table.stats()["flows_open"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_answers_never_raise(data: bytes) -> None:
    for seq, c in parse_answers(data):
        assert isinstance(seq, int) and (c is None or isinstance(c, Counters))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.integers(1, 65535), st.integers(0, 2 ** 63), st.integers(0, 2 ** 63))
def test_answers_round_trip(seq: int, port: int, pkts: int, byts: int) -> None:
    c = Counters(C, port, pkts, byts, byts, pkts)
    assert parse_answers(answer(seq, c)) == [(seq, c)]


# --- the kernel rule ---------------------------------------------------------------------------
def test_bypass_rules_text_and_parse_back() -> None:
    specs = bypass_rules("FORWARD", 0, 0x400000, 0x800000)
    tag = ["-m", "comment", "--comment", "slipsq queue 0 bypass"]
    repeat = ["-m", "mark", "--mark", "0x800000/0x800000"]
    assert [s.args() for s in specs] == [
        ["-p", "tcp", "-m", "tcp", "--tcp-flags", "FIN,SYN,RST", "NONE", "-m", "connmark", "--mark",
         "0x400000/0x400000", *tag, "-j", "ACCEPT"],
        repeat + tag + ["-j", "CONNMARK", "--save-mark", "--nfmask", "0x400000", "--ctmask", "0x400000"],
        repeat + tag + ["-j", "ACCEPT"]]
    # what iptables-save prints for them reads back as slipsq's rules, with their tag
    saved = ('-A FORWARD -m mark --mark 0x800000/0x800000 -m comment --comment "slipsq queue 0 bypass" '
             '-j CONNMARK --save-mark --nfmask 0x400000 --ctmask 0x400000\n'
             '-A FORWARD -m mark --mark 0x800000/0x800000 -m comment --comment "slipsq queue 0 bypass" -j ACCEPT\n'
             '-A FORWARD -p tcp -m tcp --tcp-flags FIN,SYN,RST NONE -m connmark --mark 0x400000/0x400000 '
             '-m comment --comment "slipsq queue 0 bypass" -j ACCEPT\n')
    rules, _ = parse_save(saved)
    assert [(r.chain, r.position, r.comment, r.target) for r in rules] == [
        ("FORWARD", 1, bypass_tag(0), "CONNMARK"), ("FORWARD", 2, bypass_tag(0), "ACCEPT"),
        ("FORWARD", 3, bypass_tag(0), "ACCEPT")]
    assert RuleSpec("FORWARD", "ACCEPT").args()[-2:] == ["-j", "ACCEPT"]


def test_marks_must_not_share_a_bit() -> None:
    from slipsq.errors import SystemSetupError
    from slipsq.sources.conntrack import marks

    cfg = runmode.load_config(None, {"bypass.mark": 0x3, "bypass.repeat_mark": 0x2})
    with pytest.raises(SystemSetupError, match="share no bit"):
        marks(cfg)
    assert marks(runmode.load_config(None)) == (0x400000, 0x800000)


# --- detections identical with bypass on and off -------------------------------------------------
def identical(paths: list[Path], after: int) -> tuple[int, int]:
    """Assert each capture's run with bypass equals its run without, line for line; returns the
    packets bypassed and the flows merged, so a caller can show the bypass did happen."""
    bypassed = held = 0
    for path in paths:
        packets = ip_packets(path)
        ref, _ = replay(packets)
        got, seen = replay(packets, after)
        assert got == ref, path.name
        bypassed += seen["bypassed_packets"]
        held += seen["held"]
    return bypassed, held


@pytest.mark.parametrize("after", [2, 10])
def test_detections_identical_with_bypass_bundled(after: int) -> None:
    bypassed, held = identical(sorted(DATA.glob("*.pcap")), after)
    assert bypassed > 100 and held > 10  # not vacuous: many flows took the bypass


@pytest.mark.parametrize("after", [2, 10])
def test_detections_identical_with_bypass_shared(after: int, shared_data: Path) -> None:
    bypassed, held = identical(sorted((shared_data / "pcaps").glob("*.pcap")), after)
    assert bypassed > 0 and held > 0
