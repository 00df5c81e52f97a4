"""Flow table rules, run on both tables (ids py and c), and the two tables fed the same packets."""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq.config import CORE_OPTIONS, Config
from slipsq.flow import Flow
from slipsq.flowtable import APP_KINDS
from slipsq.flowtable import FlowTable as PyTable
from tests.helpers import (
    ACK,
    FIN,
    PSH,
    RST,
    SYN,
    arp,
    dns_query,
    dns_response,
    eth,
    icmp,
    ip,
    sll,
    tcp,
    tls_client_hello,
    udp,
    vlan,
)

try:
    from slipsq._flowtable import FlowTable as CTable

    COMPILED = True
except ImportError:  # pragma: no cover - then every test that uses CTable skips
    COMPILED = False

A, B, C, A6, B6 = "10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"
Table = Any
Make = Callable[..., Table]


def config(**flowtable: Any) -> Config:
    return Config(CORE_OPTIONS, {f"flowtable.{k}": v for k, v in flowtable.items()})


@pytest.fixture(params=["py", "c"])
def make(request: pytest.FixtureRequest) -> Make:
    if request.param == "c" and not COMPILED:
        pytest.skip("slipsq._flowtable is not built")
    cls = PyTable if request.param == "py" else CTable

    def build(**flowtable: Any) -> Table:
        return cls(config(**flowtable))

    return build


def feed(t: Table, packets: Sequence[tuple[float, bytes]], linktype: int = 101) -> list[int]:
    return [t.feed(buf, ts, linktype) for ts, buf in packets]


def handshake(c: str = A, cp: int = 40000, s: str = B, sp: int = 80,
              t0: float = 100.0) -> list[tuple[float, bytes]]:
    return [(t0, tcp(c, cp, s, sp, SYN)), (t0 + 0.01, tcp(s, sp, c, cp, SYN | ACK)),
            (t0 + 0.02, tcp(c, cp, s, sp, ACK))]


def only(flows: list[Flow]) -> Flow:
    assert len(flows) == 1, flows
    return flows[0]


# --- states and close reasons ---------------------------------------------------------------------------

def test_fin_both_ways_closes_after_linger(make: Make) -> None:
    t = make(tcp_closed_linger=2.0)
    feed(t, [*handshake(), (100.1, tcp(A, 40000, B, 80, PSH | ACK, b"GET /")),
             (100.2, tcp(B, 80, A, 40000, PSH | ACK, b"200 OK!")),
             (100.3, tcp(A, 40000, B, 80, FIN | ACK)), (100.4, tcp(B, 80, A, 40000, FIN | ACK))])
    t.expire(102.3)
    assert t.pop_closed() == []  # lingering: the last ACK still belongs to it
    feed(t, [(100.5, tcp(A, 40000, B, 80, ACK))])
    t.expire(102.6)
    f = only(t.pop_closed())
    assert (f.saddr, f.sport, f.daddr, f.dport, f.proto) == (A, 40000, B, 80, "tcp")
    assert (f.spkts, f.dpkts, f.sbytes, f.dbytes) == (5, 3, 40 * 4 + 45, 40 * 2 + 47)
    assert (f.state, f.closed_by, f.dir, f.start, f.end) == ("FSPA_FSPA", "fin", "<->", 100.0, 100.5)
    assert t.stats()["flows_open"] == 0 and t.stats()["flows_closed"] == 1


def test_rst_closes(make: Make) -> None:
    t = make(tcp_closed_linger=0.5)
    feed(t, [(10.0, tcp(A, 5000, B, 23, SYN)), (10.1, tcp(B, 23, A, 5000, RST | ACK))])
    t.expire(10.7)
    f = only(t.pop_closed())
    assert (f.state, f.closed_by, f.dir) == ("S_RA", "rst", "<->")


def test_unanswered_syn_uses_the_new_timeout(make: Make) -> None:
    t = make(tcp_new_idle=5.0, tcp_idle=100.0)
    feed(t, [(1.0, tcp(A, 5000, B, 22, SYN)), (2.0, tcp(A, 5000, B, 22, SYN))])
    t.expire(6.9)
    assert t.pop_closed() == []
    t.expire(7.0)
    f = only(t.pop_closed())
    assert (f.state, f.closed_by, f.spkts, f.dpkts, f.dir) == ("S_", "idle", 2, 0, "->")


def test_established_flow_uses_the_established_timeout(make: Make) -> None:
    t = make(tcp_new_idle=5.0, tcp_idle=50.0)
    feed(t, handshake(t0=0.0))
    t.expire(40.0)
    assert t.pop_closed() == []
    t.expire(50.02)
    assert only(t.pop_closed()).state == "SA_SA"


def test_syn_ack_first_makes_its_receiver_the_client(make: Make) -> None:
    t = make()
    feed(t, [(1.0, tcp(B, 443, A, 50000, SYN | ACK)), (1.1, tcp(A, 50000, B, 443, ACK))])
    t.close_all(2.0)
    f = only(t.pop_closed())
    assert (f.saddr, f.sport, f.daddr, f.dport, f.state, f.closed_by) == (A, 50000, B, 443, "A_SA", "end")


def test_first_sender_is_the_client_without_syn(make: Make) -> None:
    t = make()
    feed(t, [(1.0, tcp(B, 443, A, 50000, PSH | ACK, b"x")), (1.1, tcp(A, 50000, B, 443, ACK))])
    t.close_all(2.0)
    assert (only(t.pop_closed()).saddr) == B


def test_udp_states_and_timeout(make: Make) -> None:
    t = make(udp_idle=10.0)
    feed(t, [(0.0, udp(A, 5000, B, 1900, b"a")), (1.0, udp(A, 5001, B, 1900, b"a")),
             (1.5, udp(B, 1900, A, 5001, b"bb"))])
    t.expire(10.0)
    f1 = only(t.pop_closed())
    assert (f1.sport, f1.state, f1.closed_by, f1.sbytes) == (5000, "INT", "idle", 29)
    t.expire(11.5)
    f2 = only(t.pop_closed())
    assert (f2.sport, f2.state, f2.dpkts, f2.dbytes) == (5001, "CON", 1, 30)


def test_icmp_flows(make: Make) -> None:
    t = make(icmp_idle=5.0)
    feed(t, [(0.0, icmp(A, B, 8, ident=1)), (0.1, icmp(B, A, 0, ident=1)),    # answered echo
             (0.2, icmp(A, C, 8, ident=2)),                                      # unanswered
             (0.3, icmp(A, B, 8, ident=3)),                                      # other id: own flow
             (0.4, icmp(C, A, 3, code=3)),                                       # port unreachable
             (0.5, icmp(A6, B6, 128, ident=9)), (0.6, icmp(B6, A6, 129, ident=9)),
             (0.7, icmp(A, B, 11, code=0)), (0.8, icmp(A6, B6, 1, code=4))])
    t.close_all(1.0)
    got = {(f.saddr, f.daddr, f.sport, f.dport): (f.proto, f.state, f.spkts, f.dpkts) for f in t.pop_closed()}
    assert got == {
        (A, B, 8, 1): ("icmp", "ECR", 1, 1), (A, C, 8, 2): ("icmp", "ECO", 1, 0),
        (A, B, 8, 3): ("icmp", "ECO", 1, 0), (C, A, 3, 3): ("icmp", "URP", 1, 0),
        (A6, B6, 128, 9): ("ipv6-icmp", "ECR", 1, 1), (A, B, 11, 0): ("icmp", "TXD", 1, 0),
        (A6, B6, 1, 4): ("ipv6-icmp", "URP", 1, 0),
    }


def test_other_protocols_and_tos(make: Make) -> None:
    t = make()
    feed(t, [(0.0, ip(A, B, 47, b"\0" * 8, tos=0x20)), (0.5, ip(B, A, 47, b"\0" * 4, tos=0x48))])
    t.close_all(1.0)
    f = only(t.pop_closed())
    assert (f.proto, f.state, f.sport, f.dport, f.stos, f.dtos, f.sbytes, f.dbytes) == \
        ("gre", "CON", 0, 0, 0x20, 0x48, 28, 24)


def test_active_timeout_reports_and_goes_on(make: Make) -> None:
    t = make(active_timeout=10.0, udp_idle=5.0)
    feed(t, [(float(s), udp(A, 7000, B, 7001, b"x")) for s in range(0, 25)])
    reports = t.pop_closed()
    assert [(f.closed_by, f.start, f.end, f.spkts) for f in reports] == [("active", 0.0, 9.0, 10),
                                                                       ("active", 0.0, 19.0, 20)]
    assert all(f.is_report for f in reports) and t.stats()["flows_closed"] == 0
    t.expire(30.0)
    f = only(t.pop_closed())
    assert (f.closed_by, f.spkts, f.start, f.end) == ("idle", 25, 0.0, 24.0)


def test_new_syn_on_a_closing_flow_starts_a_new_flow(make: Make) -> None:
    t = make(tcp_closed_linger=30.0)
    feed(t, [*handshake(t0=0.0), (1.0, tcp(A, 40000, B, 80, RST))])
    feed(t, handshake(t0=2.0))
    first = only(t.pop_closed())
    assert (first.closed_by, first.state, first.end) == ("rst", "SRA_SA", 1.0)
    t.close_all(3.0)
    second = only(t.pop_closed())
    assert (second.start, second.spkts, second.closed_by) == (2.0, 2, "end")


def test_eviction_at_the_cap_is_lru(make: Make) -> None:
    t = make(max_flows=3, udp_idle=1000.0, emergency_factor=1.0)
    feed(t, [(0.0, udp(A, 1, B, 1)), (0.1, udp(A, 2, B, 2)), (0.2, udp(A, 3, B, 3)),
             (0.3, udp(A, 1, B, 1)),        # flow 1 is young again: flow 2 is the oldest
             (0.4, udp(A, 4, B, 4))])
    f = only(t.pop_closed())
    assert (f.sport, f.closed_by) == (2, "evict")
    s = t.stats()
    assert (s["evicted"], s["flows_open"], s["flows_closed"]) == (1, 3, 1)


def test_emergency_timeouts_above_90_percent(make: Make) -> None:
    t = make(max_flows=10, udp_idle=100.0, emergency_factor=0.1)
    feed(t, [(0.0, udp(A, p, B, 53)) for p in range(1, 10)])  # 9 flows: 90%, not above
    t.expire(50.0)
    assert t.pop_closed() == []
    feed(t, [(50.0, udp(A, 99, B, 53))])  # 10 flows: above 90%, idle 10 s from now on
    t.expire(50.0)
    closed = t.pop_closed()
    assert len(closed) == 9 and {f.closed_by for f in closed} == {"idle"}  # the one at 50.0 stays


def test_expires_itself_in_packet_time(make: Make) -> None:
    t = make(udp_idle=3.0)
    feed(t, [(0.0, udp(A, 1, B, 2)), (2.5, udp(A, 9, B, 9)), (3.2, udp(A, 9, B, 9))])
    assert t.pending and only(t.pop_closed()).sport == 1
    assert not t.pending


def test_close_all_keeps_closing_reasons(make: Make) -> None:
    t = make()
    feed(t, [*handshake(t0=0.0), (0.5, tcp(A, 40000, B, 80, FIN | ACK)),
             (0.6, tcp(B, 80, A, 40000, FIN | ACK)), (0.7, udp(A, 1, B, 2))])
    t.close_all(1.0)
    assert [f.closed_by for f in t.pop_closed()] == ["fin", "end"]


# --- blocking, counters, app packets ------------------------------------------------------------------

def test_blocked_addresses_drop_and_stay_out_of_flows(make: Make) -> None:
    t = make()
    t.block(B)
    t.block(B6)
    assert t.is_blocked(B) and t.is_blocked(B6) and not t.is_blocked(A)
    assert feed(t, [(0.0, udp(A, 1, B, 2)), (0.1, udp(B6, 1, A6, 2)), (0.2, udp(A, 1, C, 2)),
                    (0.3, ip(B, A, 6, b"\0" * 3))]) == [0, 0, 1, 0]
    t.unblock(B)
    assert feed(t, [(0.4, udp(A, 1, B, 2))]) == [1] and not t.is_blocked(B)
    t.close_all(1.0)
    assert sorted(f.daddr for f in t.pop_closed()) == [B, C]
    assert t.stats()["dropped"] == 3


def test_counters(make: Make) -> None:
    t = make()
    feed(t, [(0.0, eth(udp(A, 1, B, 2, b"abc"))), (0.1, arp()), (0.2, eth(b"\0" * 30, 0x88CC)),
             (0.3, eth(b"\x45" + b"\0" * 5)), (0.4, eth(ip(A, B, 17, b"q" * 16, frag_offset=2))),
             (0.5, eth(ip(A, B, 17, udp(A, 1, B, 2, b"z" * 16)[20:], mf=True))),
             (0.6, eth(tcp(A, 1, B, 2))[:30])], linktype=1)
    s = t.stats()
    assert {k: s[k] for k in ("packets", "arp", "non_ip", "malformed", "fragments", "flows_open")} == \
        {"packets": 7, "arp": 1, "non_ip": 1, "malformed": 2, "fragments": 2, "flows_open": 1}
    assert s["bytes"] == 31 + 44  # the flow's packets only; the later fragment is in no flow


@pytest.mark.parametrize("kinds", [None, APP_KINDS], ids=["default", "all-kinds"])
def test_app_packets(make: Make, kinds: Any) -> None:
    """Every kind asked for (and a table nobody configured) hands up what the table always did: every
    DNS-port packet, every first payload each way, every ARP frame."""
    t = make()
    if kinds is not None:
        t.set_app_kinds(kinds)
    q = udp(A, 5353, B, 5353, dns_query("x.local"))
    data = tcp(A, 40000, B, 80, PSH | ACK, b"GET / HTTP/1.0\r\n\r\n")
    feed(t, [*handshake(t0=0.0), (1.0, data), (1.1, tcp(A, 40000, B, 80, PSH | ACK, b"more")),
             (1.2, tcp(B, 80, A, 40000, PSH | ACK, b"HTTP/1.0 200 OK\r\n\r\n")),
             (1.3, tcp(B, 80, A, 40000, PSH | ACK, b"body")), (1.4, q)])
    feed(t, [(1.5, eth(tcp(A, 40001, B, 53, PSH | ACK, b"\0\x05hello")) + b"\0" * 9),
             (1.6, eth(arp()[14:], 0x0806, tags=[(0x8100, 4)]))], linktype=1)
    got = t.pop_app()
    assert [ts for ts, _ in got] == [1.0, 1.2, 1.4, 1.5, 1.6]
    assert got[0][1] == data and got[2][1] == q
    assert got[3][1] == tcp(A, 40001, B, 53, PSH | ACK, b"\0\x05hello")  # Ethernet padding cut off
    assert got[4][1][:2] == b"\x00\x01" and len(got[4][1]) == 28      # from the ARP header
    assert t.stats()["app_packets"] == 5 and not t.pending


@pytest.mark.parametrize("kinds", [("dns",), ("dns-queries",)])
def test_a_dns_answer_to_no_query_seen_is_not_handed_up(make: Make, kinds: tuple[str, ...]) -> None:
    """Review: NXDOMAIN answers "from" a resolver with no query (forged, e.g. over IPv6 from the
    Internet, where no NAT stops them) counted for DGA and got the laptop blocked. An answer that
    begins its flow is not handed up; one to a query the table saw is, and so is a query a resolver
    sends from port 53 to port 53."""
    t = make()
    t.set_app_kinds(frozenset(kinds))
    nx = dns_response("qx7k2.example", [], rcode=3)
    feed(t, [(1.0, udp(B, 53, A, 40001, nx)),                                  # no query before it
             (2.0, udp(A, 40002, B, 53, dns_query("a.example"))),
             (2.1, udp(B, 53, A, 40002, dns_response("a.example", ["192.0.2.1"]))),
             (3.0, udp(C, 53, B, 53, dns_query("b.example")))])                # resolver to resolver
    got = [ts for ts, _ in t.pop_app()]
    assert got == ([2.1] if kinds == ("dns",) else [2.0, 2.1, 3.0])


@pytest.mark.parametrize("kinds", [("dns",), ("dns-queries",)])
def test_a_dns_response_sent_toward_port_53_is_not_handed_up(make: Make, kinds: tuple[str, ...]) -> None:
    """Review: a host can write a DNS response itself and send it to any port 53 (nobody asked,
    nobody answers) naming its C&C `time.windows.com`; beacon.allow_domains then ignored the C&C.
    A response that travels the way its flow's first packet did is not handed up, whether it
    begins the flow or follows the host's own query; the answer coming back is."""
    t = make()
    t.set_app_kinds(frozenset(kinds))
    lie = dns_response("time.windows.com", ["203.0.113.66"])
    feed(t, [(1.0, udp(A, 40001, B, 53, lie)),                                # begins its flow
             (2.0, udp(A, 40002, B, 53, dns_query("time.windows.com"))),
             (2.1, udp(A, 40002, B, 53, lie)),                                # after its own query
             (2.2, udp(B, 53, A, 40002, dns_response("time.windows.com", ["192.0.2.9"])))])
    got = [ts for ts, _ in t.pop_app()]
    assert got == ([2.2] if kinds == ("dns",) else [2.0, 2.2])


def test_link_types_reach_the_same_flow(make: Make) -> None:
    t = make()
    p = udp(A, 1, B, 2, b"x")
    t.feed(eth(p), 0.0, 1)
    t.feed(vlan(p, 3, 4), 0.1, 1)
    t.feed(sll(p), 0.2, 113)
    t.feed(p, 0.3, 228)
    t.close_all(1.0)
    assert only(t.pop_closed()).spkts == 4


def test_ports_zero_and_same_endpoints(make: Make) -> None:
    t = make()
    feed(t, [(0.0, udp(A, 7, A, 7)), (0.1, udp(A, 7, A, 7)), (0.2, udp(A, 8, A, 7)), (0.3, udp(A, 7, A, 8))])
    t.close_all(1.0)
    got = sorted((f.sport, f.dport, f.spkts, f.dpkts) for f in t.pop_closed())
    assert got == [(7, 7, 2, 0), (8, 7, 1, 1)]


def test_interface_types(make: Make) -> None:
    t = make()
    assert isinstance(t.bytes_per_flow, int)
    assert t.feed(b"", 0.0, 1) == 1 and t.stats()["malformed"] == 1
    assert t.pop_closed() == [] and t.pop_app() == []

def test_an_ipv4_mapped_ipv6_source_is_no_flow_and_no_evidence(make: Make) -> None:
    """::ffff:10.0.0.1 is written as 10.0.0.1: SYNs forged from it were a scan by the IPv4 host
    (review 2026-12-06). Such packets are malformed (RFC 4291 keeps them off the wire): accepted,
    counted, no flow; a block of the address they bear still drops them."""
    t = make()
    mapped = "::ffff:" + A
    assert feed(t, [(100.0 + i, tcp(mapped, 40000 + i, B6, 23, SYN)) for i in range(5)]) == [1] * 5
    t.close_all(200.0)
    assert t.pop_closed() == [] and t.stats()["malformed"] == 5 and t.stats()["flows_open"] == 0
    t.block(A6)
    assert feed(t, [(201.0, tcp(mapped, 40000, A6, 23, SYN))]) == [0]  # dropped: the destination is blocked



# --- memory ---------------------------------------------------------------------------------------------

def traced_flows(make_table: Callable[[], Any], n: int) -> tuple[Any, int]:
    """A table from `make_table` fed one UDP packet for each of `n` new flows, and the bytes
    tracemalloc saw allocated while feeding them."""
    template = udp(A, 1000, B, 2000)
    packets = [template[:12] + i.to_bytes(4, "big") + template[16:] for i in range(n)]
    tracemalloc.start()
    try:
        t = make_table()
        base = tracemalloc.get_traced_memory()[0]
        for buf in packets:
            t.feed(buf, 0.0, 101)
        return t, tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()


@pytest.mark.skipif(not COMPILED, reason="slipsq._flowtable is not built")
def test_compiled_table_memory_per_open_flow() -> None:
    assert CTable.bytes_per_flow <= 200
    n = 100_000
    t, used = traced_flows(lambda: CTable(config(max_flows=200_000)), n)
    assert t.stats()["flows_open"] == n and not t.pending
    assert t.memory() / n <= 200
    assert used / n <= 200  # measured from outside: no Python object per flow


def test_twin_memory_per_open_flow_is_what_it_says() -> None:
    n = 20_000
    _, used = traced_flows(lambda: PyTable(config()), n)
    assert 0.75 * PyTable.bytes_per_flow <= used / n <= 1.25 * PyTable.bytes_per_flow


# --- both tables, same packets, same flows -----------------------------------------------------------

HOSTS = [A, B, C]
HOSTS6 = [A6, B6]


DNS_MSGS = [dns_query("a.example"), dns_response("a.example", ["192.0.2.1"]),
            dns_response("nx.example", [], rcode=3)]
# first payloads of every class the tables tell apart, near misses, and DNS over TCP
PAYLOADS = [b"", b"data", b"SSH-2.0-x\r\n", b"SSH", b"220 ftp ready", b"\xff\xfb\x01", b"RFB 003.008\n",
            b"\x03\x00\x00\x13\x0e\xe0\x00", b"\x03\x00\x00\x0b\x06\xd0", b"\x00\x00\x00\x54\xfeSMB@",
            b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK", b"221 bye", b"SSH2", b"RFB", b"GET", b"\x16\x03",
            tls_client_hello("x.example"), b"\x16\x03\x03\x00\x40\x02",
            *(struct.pack("!H", len(m)) + m for m in DNS_MSGS)]


@st.composite
def packet(draw: st.DrawFn) -> tuple[float, bytes, int]:
    kind = draw(st.sampled_from(["tcp", "udp", "icmp", "tcp6", "other", "frag", "junk", "arp"]))
    dt = draw(st.sampled_from([0.0, 0.001, 0.5, 1.0, 3.0, 40.0]))
    hosts = HOSTS6 if kind == "tcp6" else HOSTS
    s, d = draw(st.sampled_from(hosts)), draw(st.sampled_from(hosts))
    sp, dp = draw(st.sampled_from([53, 80, 1000, 1001])), draw(st.sampled_from([53, 80, 1000, 5353]))
    if kind == "arp":
        return dt, arp(draw(st.sampled_from([1, 2]))), 1
    if kind in ("tcp", "tcp6"):
        flags = draw(st.sampled_from([SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, RST, RST | ACK, FIN]))
        buf = tcp(s, sp, d, dp, flags, draw(st.sampled_from(PAYLOADS)))
        if draw(st.booleans()):  # cut by the capture's snap length, anywhere
            buf = buf[:draw(st.integers(20, len(buf)))]
    elif kind == "udp":
        buf = udp(s, sp, d, dp, draw(st.sampled_from([b"", b"x" * 30, *DNS_MSGS])))
    elif kind == "icmp":
        buf = icmp(s, d, draw(st.sampled_from([0, 8, 3, 11, 13])), ident=draw(st.sampled_from([1, 2])))
    elif kind == "other":
        buf = ip(s, d, 47, b"\0" * 8)
    elif kind == "frag":
        buf = ip(s, d, 17, b"\0" * 16, frag_offset=draw(st.sampled_from([0, 5])), mf=True)
    else:
        buf = draw(st.binary(max_size=60))
    return dt, buf, 101


MANY = [f"10.{i >> 8}.{i & 255}.7" for i in range(200)] + [f"2001:db8::{i:x}" for i in range(1, 60)]


@pytest.mark.skipif(not COMPILED, reason="slipsq._flowtable is not built")
@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from(MANY)), max_size=400))
def test_the_compiled_block_set_drops_exactly_the_blocked_addresses(ops: list[tuple[bool, str]]) -> None:
    """Blocks and unblocks are O(1) inserts and tombstones in an open-addressing set that grows and
    is rebuilt now and then: whatever the order, a packet is dropped exactly when its address is
    in the model set (many addresses, so growth, tombstones and rebuilds all happen)."""
    t, model = CTable(Config(CORE_OPTIONS)), set()
    for add, addr in ops:
        if add:
            t.block(addr)
            model.add(addr)
        else:
            t.unblock(addr)
            model.discard(addr)
    ts = 1000.0
    for addr in MANY:
        ts += 0.001
        peer = "10.99.0.1" if ":" not in addr else "2001:db8:99::1"
        assert t.feed(udp(peer, 1, addr, 2), ts, 101) == (0 if addr in model else 1), addr
        assert t.is_blocked(addr) == (addr in model)


def run_table(table: Table, steps: list[tuple[str, Any]]) -> tuple[list[Any], dict[str, int]]:
    out: list[Any] = []
    ts = 1000.0
    for op, arg in steps:
        if op == "pkt":
            dt, buf, linktype = arg
            ts += dt
            out.append(("v", table.feed(buf, ts, linktype)))
        elif op == "expire":
            out.append(("x", table.expire(ts + arg)))
        elif op == "kinds":
            table.set_app_kinds(arg)
        elif op == "block":
            table.block(arg)
        else:
            table.unblock(arg)
        out.extend(("f", f) for f in table.pop_closed())
        out.extend(("a", a) for a in table.pop_app())
    table.close_all(ts + 1.0)
    out.extend(("f", f) for f in table.pop_closed())
    return out, table.stats()


steps_strategy = st.lists(st.one_of(
    st.tuples(st.just("pkt"), packet()),
    st.tuples(st.just("expire"), st.sampled_from([0.0, 2.0, 31.0, 61.0, 400.0])),
    st.tuples(st.sampled_from(["block", "unblock"]), st.sampled_from(HOSTS)),
    st.tuples(st.just("kinds"), st.frozensets(st.sampled_from(sorted(APP_KINDS)))),
), max_size=80)


@pytest.mark.skipif(not COMPILED, reason="slipsq._flowtable is not built")
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps_strategy, st.sampled_from([3, 5, 1000]), st.sampled_from([0.0, 2.0]),
       st.sampled_from([10.0, 300.0]), st.frozensets(st.sampled_from(sorted(APP_KINDS))))
def test_both_tables_emit_the_same_flows(steps: list[tuple[str, Any]], max_flows: int, linger: float,
                                         active: float, kinds: frozenset[str]) -> None:
    """Same flows, verdicts, app packets and counters, whatever app kinds are asked for (at the start
    and between packets)."""
    opts = {"max_flows": max_flows, "tcp_closed_linger": linger, "active_timeout": active}
    steps = [("kinds", kinds), *steps]
    py = run_table(PyTable(config(**opts)), steps)
    c = run_table(CTable(config(**opts)), steps)
    assert c == py


@st.composite
def app_packet(draw: st.DrawFn) -> tuple[float, bytes, int]:
    """Packets that reach the hand-up rules: payloads of every class on few flows, DNS, ARP."""
    kind = draw(st.sampled_from(["tcp", "tcp", "tcp6", "udp", "arp"]))
    hosts = HOSTS6 if kind == "tcp6" else HOSTS[:2]
    s, d = draw(st.permutations(hosts))[:2]
    # many client ports: most payloads are a first payload
    sp = draw(st.sampled_from([53, 22]) | st.integers(1000, 1015))
    dp = draw(st.sampled_from([53, 5353, 443, 1000]))
    if kind == "arp":
        return 0.01, arp(), 1
    if kind == "udp":
        return 0.01, udp(s, sp, d, dp, draw(st.sampled_from([b"", b"x" * 30, *DNS_MSGS]))), 101
    buf = tcp(s, sp, d, dp, draw(st.sampled_from([ACK, PSH | ACK, SYN])), draw(st.sampled_from(PAYLOADS)))
    if draw(st.booleans()):
        buf = buf[:draw(st.integers(20, len(buf)))]
    return 0.01, buf, 101


@pytest.mark.skipif(not COMPILED, reason="slipsq._flowtable is not built")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(app_packet(), min_size=5, max_size=40),
       st.sampled_from([frozenset({k}) for k in APP_KINDS])
       | st.frozensets(st.sampled_from(sorted(APP_KINDS))))
def test_both_tables_hand_up_the_same_app_packets(packets: list[tuple[float, bytes, int]],
                                                  kinds: frozenset[str]) -> None:
    steps = [("kinds", kinds), *(("pkt", p) for p in packets)]
    py = run_table(PyTable(config()), steps)
    assert run_table(CTable(config()), steps) == py


@pytest.mark.skipif(not COMPILED, reason="slipsq._flowtable is not built")
@settings(max_examples=200, deadline=None)
@given(st.sampled_from(PAYLOADS)
       | st.sampled_from(PAYLOADS).flatmap(lambda p: st.integers(0, len(p)).map(lambda n: p[:n]))
       | st.binary(min_size=1, max_size=12), st.booleans())
def test_both_tables_classify_first_payloads_alike(payload: bytes, cut: bool) -> None:
    """Each class's first bytes, their prefixes and random bytes, under each kind alone, as a first
    payload and as TCP DNS."""
    for port in (53, 443):
        buf = tcp(A, 40000, B, port, PSH | ACK, payload)
        if cut:  # the capture holds less than the IP length says
            buf = buf[:40 + len(payload) // 2]
        for kind in APP_KINDS:
            got = []
            for t in (PyTable(config()), CTable(config())):
                t.set_app_kinds([kind])
                t.feed(buf, 1.0, 101)
                got.append(t.pop_app())
            assert got[0] == got[1], (kind, port)


def test_both_tables_on_shared_captures(shared_data: Any) -> None:
    if not COMPILED:
        pytest.skip("slipsq._flowtable is not built")
    import dpkt

    for path in sorted((shared_data / "pcaps").glob("*.pcap")):
        results = []
        for cls in (PyTable, CTable):
            t = cls(config(max_flows=50))
            out: list[Any] = []
            with path.open("rb") as fh:
                reader = dpkt.pcap.Reader(fh)
                for ts, buf in reader:
                    t.feed(buf, ts, reader.datalink())
                    out += t.pop_closed() + t.pop_app()
            t.close_all(1e12)
            results.append((out + t.pop_closed(), t.stats()))
        assert results[0] == results[1]
        assert results[0][1]["flows_closed"] > 0


@pytest.mark.parametrize("src,dst,itype,code,state", [
    (A, B, 3, 1, "URH"), (A, B, 3, 0, "URN"), (A, B, 3, 13, "URF"), (A, B, 3, 4, "URO"), (A, B, 5, 1, "RED"),
    (A, B, 13, 0, "ECO"), (A, B, 14, 0, "ECR"), (A6, B6, 3, 0, "TXD"), (A6, B6, 1, 3, "URH"),
    (A6, B6, 137, 0, "RED"), (A6, B6, 135, 0, "INT"),
])
def test_icmp_state_labels(make: Make, src: str, dst: str, itype: int, code: int, state: str) -> None:
    t = make()
    feed(t, [(0.0, icmp(src, dst, itype, code=code))])
    t.close_all(1.0)
    f = only(t.pop_closed())
    assert (f.state, f.sport) == (state, itype)


# --- the compiled table builds its Flows by writing their slots (_flowslots.pxd) ------------------------

def test_a_flow_the_compiled_table_builds_is_an_ordinary_flow() -> None:
    """_emit fills a Flow's slots in C instead of calling Flow(...): the object must be exactly what
    the constructor makes (every field set, equal, hashable as a dataclass is not, copyable, known
    to the cycle collector, released with its fields)."""
    import copy
    import dataclasses
    import gc
    import sys
    from collections import Counter

    if not COMPILED:
        pytest.skip("slipsq._flowtable is not built")
    t = CTable(config())
    feed(t, [*handshake(), (100.5, tcp(A, 40000, B, 80, PSH | ACK, b"data")), (101.0, tcp(A, 40000, B, 80, FIN | ACK)),
             (101.01, tcp(B, 80, A, 40000, FIN | ACK)), (101.02, tcp(A, 40000, B, 80, ACK))])
    t.close_all(200.0)
    f = only(t.pop_closed())
    assert type(f) is Flow
    values = {k.name: getattr(f, k.name) for k in dataclasses.fields(Flow)}  # AttributeError if one is unset
    assert Flow(**values) == f and dataclasses.astuple(f) == tuple(values.values())
    assert copy.copy(f) == f and dataclasses.replace(f, label="x").label == "x"
    assert (f.saddr, f.daddr, f.sport, f.dport, f.proto, f.label) == (A, B, 40000, 80, "tcp", "")
    assert gc.is_tracked(f)
    # each field holds one reference, released when the flow goes: no leak, no double release
    held = [getattr(f, k.name) for k in dataclasses.fields(Flow)]
    del values
    refs = Counter(id(v) for v in held)
    before = {id(v): sys.getrefcount(v) for v in held}
    del f
    after = {id(v): sys.getrefcount(v) for v in held}
    mortal = [i for i, n in before.items() if n < 1 << 20]  # not the interpreter's static "" or small ints
    assert len(mortal) >= 8 and all(after[i] == before[i] - refs[i] for i in mortal)


# --- address text: one form everywhere ---------------------------------------------------------------

# IPv6 addresses whose text libc and Python disagree on unless handled (::a.b.c.d, ::ffff:a.b.c.d),
# their neighbours, and anything else
_ADDRESSES = st.one_of(
    st.binary(min_size=4, max_size=4),
    st.binary(min_size=16, max_size=16),
    st.tuples(st.sampled_from([bytes(10) + b"\xff\xff", bytes(12), bytes(10) + b"\x00\x01", bytes(11) + b"\x01",
                               b"\x01" + bytes(11)]),
              st.binary(min_size=4, max_size=4)).map(lambda t: t[0] + t[1]),
)


@settings(max_examples=500, deadline=None)
@given(_ADDRESSES)
def test_address_text_is_pythons_in_both_tables(packed: bytes) -> None:
    # flows, DNS answers, alerts and the block store all carry this text; `slipsq unblock` writes
    # what ipaddress writes, so the table must write the same or an unblock would miss the record
    import ipaddress

    from slipsq._flowtable import address_text
    from slipsq.appdecode import ip_str

    expected = str(ipaddress.ip_address(packed))
    assert address_text(packed) == expected and address_text(packed) == expected  # miss, then cache hit
    assert ip_str(packed) == expected


def test_ipv4_embedding_ipv6_flow_gets_pythons_text(make: Make) -> None:
    # libc would write these dotted (IPv4-compatible, deprecated; an IPv4-mapped one is malformed on
    # the wire: test_an_ipv4_mapped_ipv6_source_is_no_flow_and_no_evidence)
    src, dst = "::10.0.0.1", "::1.2.3.4"
    t = make()
    t.feed(eth(udp(src, 5000, dst, 53)), 1.0, 1)
    t.close_all(2.0)
    (f,) = t.pop_closed()
    assert (f.saddr, f.daddr) == ("::a00:1", "::102:304")


# --- floods: mass expiry in batches, memory given back ----------------------------------------------

def test_a_mass_expiry_comes_in_batches(make: Make) -> None:
    t = make(udp_idle=10.0, expire_batch=100)
    feed(t, [(0.0, udp(A, p, B, 53)) for p in range(1, 351)])
    t.pop_closed()
    sizes = []
    t.expire(20.0)
    while True:  # the engine's ticks (or packets, a tenth of a second apart) take the rest
        sizes.append(len(t.pop_closed()))
        if not t.expiry_behind:
            break
        t.expire(20.0)
    assert sizes == [100, 100, 100, 50] and t.stats()["flows_open"] == 0


def test_packets_take_the_next_batch_a_tenth_of_a_second_later(make: Make) -> None:
    t = make(udp_idle=10.0, expire_batch=100)
    feed(t, [(0.0, udp(A, p, B, 53)) for p in range(1, 251)])
    feed(t, [(20.0, udp(C, 9, B, 9))])
    assert len(t.pop_closed()) == 100 and t.expiry_behind
    feed(t, [(20.05, udp(C, 9, B, 9))])
    assert t.pop_closed() == []  # not yet: the engine analyses the first batch in between
    feed(t, [(20.1, udp(C, 9, B, 9))])
    assert len(t.pop_closed()) == 100


def test_compiled_table_gives_memory_back_after_a_flood_and_keeps_its_flows() -> None:
    if not COMPILED:
        pytest.skip("slipsq._flowtable is not built")
    t = CTable(config(udp_idle=10.0, tcp_idle=1000.0, max_flows=100_000))
    feed(t, handshake(t0=0.0))  # one flow that outlives the flood, created first (low index)
    template = udp(A, 1000, B, 2000)
    feed(t, [(1.0, template[:12] + i.to_bytes(4, "big") + template[16:]) for i in range(1, 60_000)])
    feed(t, handshake(C, 41000, B, 443, t0=2.0))  # another one, created last (highest index: it moves)
    peak = t.memory()
    while True:
        t.expire(30.0)
        t.pop_closed()
        if not t.expiry_behind:
            break
    assert t.stats()["flows_open"] == 2
    assert t.memory() < peak / 10
    # both survivors still found by their packets, counted on, and closed with the right totals
    feed(t, [(31.0, tcp(A, 40000, B, 80, ACK)), (31.5, tcp(C, 41000, B, 443, ACK))])
    assert t.stats()["flows_open"] == 2
    t.close_all(40.0)
    flows = sorted(t.pop_closed(), key=lambda f: f.saddr)
    assert [(f.saddr, f.spkts, f.dpkts) for f in flows] == [(A, 3, 1), (C, 3, 1)]


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32 - 1), st.lists(st.tuples(st.integers(0, 9000), st.integers(0, 3)), min_size=1,
                                           max_size=60))
def test_both_tables_agree_across_a_shrink(seed: int, later: list[tuple[int, int]]) -> None:
    """A flood of 9,000 UDP flows (three chunks) expires, the compiled table moves its survivors;
    packets of survivors and of new flows afterwards give both tables the same flows."""
    if not COMPILED:
        pytest.skip("slipsq._flowtable is not built")
    import random

    rnd = random.Random(seed)
    survivors = set(rnd.sample(range(9000), 40))
    compiled = CTable(config(udp_idle=10.0, expire_batch=2500))
    tables = [PyTable(config(udp_idle=10.0, expire_batch=2500)), compiled]
    outs: list[list[Any]] = [[], []]
    for t, out in zip(tables, outs):
        feed(t, [(0.0, udp(A, 1 + i, B, 53)) for i in range(9000)])
        feed(t, [(5.0, udp(B, 53, A, 1 + i)) for i in sorted(survivors)])  # these live until 15 s
        for _ in range(6):  # 8,960 flows due, 2,500 a pass: the last passes shrink the table
            t.expire(12.0)
            out.extend(t.pop_closed())
        feed(t, [(13.0 + j * 0.01, udp(B if d else A, 53 if d else 1 + i, A if d else B, 1 + i if d else 53))
                 for j, (i, d) in enumerate(later)])
        t.close_all(14.0)
        out.extend(t.pop_closed())
    assert outs[0] == outs[1]
    assert compiled.memory() < 9000 * CTable.bytes_per_flow / 2
