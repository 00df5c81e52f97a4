"""decode.parse (dpkt reference) rules, the compiled parser agreeing with it, and app_events."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dpkt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq import appdecode, decode
from slipsq.decode import Packet, app_events, parse
from tests.helpers import (
    ACK,
    FIN,
    PSH,
    SYN,
    arp,
    dns_query,
    dns_response,
    eth,
    icmp,
    ip,
    ipv6_ext,
    ipv6_fragment,
    packed,
    sll,
    sll2,
    tcp,
    tls_client_hello,
    udp,
    vlan,
)

try:
    from slipsq._decode import parse_packet

    COMPILED = True
except ImportError:  # pragma: no cover - the extension is built by `make` / setup.py
    COMPILED = False

needs_c = pytest.mark.skipif(not COMPILED, reason="slipsq._decode is not built")

A, B, A6, B6 = "10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"


def frames() -> Iterator[tuple[str, bytes, int]]:
    """(name, frame, link type): every shape the parsers must handle, good and bad."""
    t4 = tcp(A, 1234, B, 80, SYN)
    yield "tcp4", eth(t4), 1
    yield "tcp4-payload", eth(tcp(A, 1234, B, 80, PSH | ACK, b"hello")), 1
    yield "tcp-options", eth(tcp(A, 1, B, 2, SYN, options=b"\x02\x04\x05\xb4")), 1
    yield "udp6", eth(udp(A6, 5353, B6, 5353, b"x")), 1
    yield "vlan", vlan(t4, 10), 1
    yield "qinq", vlan(t4, 10, 20), 1
    yield "triple-tag", eth(t4, tags=[(0x9100, 1), (0x88A8, 2), (0x8100, 3)]), 1
    yield "sll", sll(t4), 113
    yield "sll-vlan", sll(struct.pack("!HH", 7, 0x0800) + t4, 0x8100), 113
    yield "sll2", sll2(udp(A6, 1, B6, 2), 0x86DD), 276
    yield "raw4", t4, 101
    yield "raw6", icmp(A6, B6, 128), 101
    yield "raw-12", t4, 12
    yield "linktype-ipv4", t4, 228
    yield "linktype-ipv6", udp(A6, 1, B6, 53), 229
    yield "ipv6-in-ipv4-linktype", udp(A6, 1, B6, 53), 228
    yield "icmp-echo", eth(icmp(A, B, 8, ident=99)), 1
    yield "icmp-unreach", eth(icmp(A, B, 3, code=3)), 1
    yield "icmp6-unreach", eth(icmp(A6, B6, 1, code=4)), 1
    yield "icmp-short", eth(ip(A, B, 1, b"\x08\x00\x00\x00")), 1
    yield "arp", arp(), 1
    yield "non-ip", eth(b"\x00" * 40, 0x88CC), 1
    yield "llc", eth(b"\x00" * 40, 0x0026), 1
    yield "unknown-linktype", t4, 147
    yield "empty", b"", 1
    yield "empty-raw", b"", 101
    yield "short-eth", b"\x00" * 10, 1
    yield "short-vlan", eth(b"", 0x8100)[:15], 1
    yield "raw-bad-version", b"\x50" + t4[1:], 101
    yield "eth-v6-header-in-v4", eth(udp(A6, 1, B6, 2), 0x0800), 1
    yield "bad-ihl", eth(bytes([0x44]) + t4[1:]), 1
    yield "ihl-beyond-capture", eth(bytes([0x4F]) + t4[1:])[:40], 1
    yield "totlen-below-ihl", eth(t4[:2] + struct.pack("!H", 12) + t4[4:]), 1
    yield "tcp-cut", eth(t4[:30]), 1
    yield "tcp-bad-doff", eth(t4[:32] + bytes([0x20]) + t4[33:]), 1
    yield "tcp-doff-too-long", eth(t4[:32] + bytes([0xF0]) + t4[33:]), 1
    yield "udp-cut", eth(udp(A, 1, B, 2)[:24]), 1
    yield "ip-header-cut", eth(t4[:15]), 1
    yield "padding", eth(udp(A, 1, B, 2, b"ab")) + b"\x00" * 20, 1
    yield "snaplen-cut", eth(tcp(A, 1, B, 2, ACK, b"y" * 500))[:80], 1
    yield "frag4-first", eth(ip(A, B, 17, udp(A, 1, B, 2, b"z" * 16)[20:], mf=True)), 1
    yield "frag4-later", eth(ip(A, B, 17, b"q" * 24, frag_offset=3)), 1
    yield "frag6-first", eth(ipv6_ext(A6, B6, 6, tcp(A6, 5, B6, 6, SYN)[40:], [44])), 1
    yield "frag6-later", eth(ipv6_fragment(A6, B6, 17, b"w" * 16, 10, False)), 1
    yield "ext6-chain", eth(ipv6_ext(A6, B6, 17, udp(A6, 9, B6, 10)[40:], [0, 43, 60, 51])), 1
    yield "ext6-too-many", eth(ipv6_ext(A6, B6, 17, udp(A6, 9, B6, 10)[40:], [60] * 9)), 1
    yield "ext6-cut", eth(ipv6_ext(A6, B6, 17, b"", [0]))[:60], 1
    yield "ext6-len-beyond", eth(ipv6_ext(A6, B6, 17, b"", [0])[:41] + b"\x20" * 7), 1
    yield "no-next6", eth(ip(A6, B6, 59, b"")), 1
    yield "gre", eth(ip(A, B, 47, b"\x00" * 8)), 1
    yield "icmp-in-v6", eth(ip(A6, B6, 1, b"\x08\x00\x00\x00\x00\x01\x00\x01")), 1
    yield "v4-mapped-src6", eth(tcp("::ffff:10.71.1.2", 40000, B6, 23, SYN)), 1
    yield "v4-mapped-dst6", eth(udp(A6, 5353, "::ffff:192.168.1.1", 53)), 1
    yield "v4-compatible-src6", eth(tcp("::10.71.1.2", 40000, B6, 23, SYN)), 1  # deprecated, not mapped


FRAMES = list(frames())


def as_tuple(p: Packet) -> tuple[object, ...]:
    return dataclasses.astuple(p)


def check_same(buf: bytes, linktype: int) -> None:
    ref = as_tuple(parse(buf, linktype))
    assert parse_packet(buf, linktype) == ref


# --- the rules, pinned on the reference --------------------------------------------------------------

def test_tcp_fields_and_lengths() -> None:
    p = parse(eth(tcp(A, 1234, B, 80, PSH | ACK, b"hello", tos=0x10)), 1)
    assert (p.family, p.src, p.dst, p.proto, p.sport, p.dport) == (4, packed(A), packed(B), 6, 1234, 80)
    assert (p.tcp_flags, p.ip_len, p.payload_len, p.tos, p.ip_off) == (PSH | ACK, 45, 5, 0x10, 14)
    assert not p.malformed and p.frag == 0


@pytest.mark.parametrize("name,expect_off", [("vlan", 18), ("qinq", 22), ("triple-tag", 26), ("sll", 16),
                                             ("sll-vlan", 20), ("sll2", 20), ("raw4", 0), ("raw-12", 0)])
def test_link_layers_find_the_ip_header(name: str, expect_off: int) -> None:
    buf, lt = next((b, lt) for n, b, lt in FRAMES if n == name)
    p = parse(buf, lt)
    assert p.ip_off == expect_off and p.family in (4, 6) and not p.malformed


@pytest.mark.parametrize("name", ["bad-ihl", "ihl-beyond-capture", "totlen-below-ihl", "tcp-cut",
                                  "tcp-bad-doff", "tcp-doff-too-long", "udp-cut", "ext6-cut",
                                  "ext6-len-beyond", "ext6-too-many",
                                  "icmp-short", "v4-mapped-src6", "v4-mapped-dst6"])
def test_malformed_with_addresses(name: str) -> None:
    buf, lt = next((b, lt) for n, b, lt in FRAMES if n == name)
    p = parse(buf, lt)
    assert p.malformed and p.family in (4, 6) and p.src  # addresses known: a block still applies


def test_an_ipv4_mapped_ipv6_address_makes_a_packet_malformed() -> None:
    """slipsq writes ::ffff:a.b.c.d as a.b.c.d: a packet forged from it was evidence against the IPv4
    host (and blocked it). Only the mapped form: ::a.b.c.d (IPv4-compatible) is an IPv6 address."""
    for name, malformed in (("v4-mapped-src6", True), ("v4-mapped-dst6", True), ("v4-compatible-src6", False)):
        buf, lt = next((b, lt) for n, b, lt in FRAMES if n == name)
        assert parse(buf, lt).malformed is malformed, name
        check_same(buf, lt)


@pytest.mark.parametrize("name", ["empty", "empty-raw", "short-eth", "short-vlan", "raw-bad-version",
                                  "eth-v6-header-in-v4", "ip-header-cut", "ipv6-in-ipv4-linktype"])
def test_malformed_without_addresses(name: str) -> None:
    buf, lt = next((b, lt) for n, b, lt in FRAMES if n == name)
    p = parse(buf, lt)
    assert p.malformed and p.family == 0


@pytest.mark.parametrize("name", ["non-ip", "llc", "unknown-linktype"])
def test_non_ip(name: str) -> None:
    buf, lt = next((b, lt) for n, b, lt in FRAMES if n == name)
    p = parse(buf, lt)
    assert not p.malformed and p.family == 0 and not p.arp


def test_ip_len_is_the_header_length_not_the_capture() -> None:
    assert parse(eth(udp(A, 1, B, 2, b"ab")) + b"\0" * 20, 1).ip_len == 30
    p = parse(eth(tcp(A, 1, B, 2, ACK, b"y" * 500))[:80], 1)
    assert (p.ip_len, p.payload_len, p.malformed) == (540, 500, False)


def test_fragments() -> None:
    first = parse(dict((n, b) for n, b, _ in FRAMES)["frag4-first"], 1)
    assert (first.frag, first.sport, first.dport) == (1, 1, 2)
    later = parse(dict((n, b) for n, b, _ in FRAMES)["frag4-later"], 1)
    assert (later.frag, later.proto, later.sport, later.dport, later.malformed) == (2, 17, 0, 0, False)
    f6 = parse(dict((n, b) for n, b, _ in FRAMES)["frag6-first"], 1)
    assert (f6.frag, f6.proto, f6.sport, f6.dport) == (1, 6, 5, 6)
    l6 = parse(dict((n, b) for n, b, _ in FRAMES)["frag6-later"], 1)
    assert (l6.frag, l6.proto, l6.sport) == (2, 17, 0)


def test_ipv6_extension_headers_are_skipped() -> None:
    p = parse(dict((n, b) for n, b, _ in FRAMES)["ext6-chain"], 1)
    assert (p.proto, p.sport, p.dport, p.malformed) == (17, 9, 10, False)


def test_icmp_ports() -> None:
    echo = parse(eth(icmp(A, B, 8, ident=99)), 1)
    assert (echo.proto, echo.sport, echo.dport) == (1, 8, 99)
    unreach = parse(eth(icmp(A6, B6, 1, code=4)), 1)
    assert (unreach.proto, unreach.sport, unreach.dport) == (58, 1, 4)
    other = parse(dict((n, b) for n, b, _ in FRAMES)["icmp-in-v6"], 1)
    assert (other.proto, other.sport, other.dport) == (1, 0, 0)  # ICMPv4 inside IPv6 is not ICMP


def test_arp_is_handed_from_its_header() -> None:
    p = parse(arp(), 1)
    assert p.arp and p.ip_off == 14 and p.family == 0


# --- the compiled parser agrees with the reference ---------------------------------------------------

@needs_c
@pytest.mark.parametrize("name,buf,linktype", FRAMES, ids=[f[0] for f in FRAMES])
def test_compiled_parser_agrees(name: str, buf: bytes, linktype: int) -> None:
    check_same(buf, linktype)


@needs_c
def test_compiled_parser_agrees_on_shared_captures(shared_data: Path) -> None:
    checked = 0
    for path in sorted((shared_data / "pcaps").glob("*.pcap")):
        with path.open("rb") as fh:
            reader = dpkt.pcap.Reader(fh)
            for _, buf in reader:
                check_same(buf, reader.datalink())
                checked += 1
    assert checked > 0


@needs_c
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.sampled_from([1, 101, 113, 276, 228, 229, 0]))
def test_random_bytes_agree(buf: bytes, linktype: int) -> None:
    check_same(buf, linktype)


@needs_c
@settings(max_examples=600, deadline=None)
@given(st.sampled_from(FRAMES), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)), max_size=4),
       st.integers(0, 220))
def test_mutated_frames_agree(frame: tuple[str, bytes, int], edits: list[tuple[int, int]], cut: int) -> None:
    _, buf, linktype = frame
    b = bytearray(buf)
    for pos, val in edits:
        if pos < len(b):
            b[pos] = val
    check_same(bytes(b[:cut] if cut < len(b) else b), linktype)


# --- app events ----------------------------------------------------------------------------------------

def test_dns_query_and_response() -> None:
    (q,) = app_events(udp(A, 5555, "8.8.8.8", 53, dns_query("Example.COM", 28)), 5.0)
    assert (q.kind, q.saddr, q.sport, q.daddr, q.dport, q.proto) == ("dns", A, 5555, "8.8.8.8", 53, "udp")
    assert q.data == {"query": "example.com", "qtype": 28, "answers": [], "rcode": 0, "response": False}
    (r,) = app_events(udp("8.8.8.8", 53, A, 5555, dns_response("example.com", ["1.2.3.4", A6], rcode=0)), 6.0)
    assert r.data["answers"] == ["1.2.3.4", A6] and r.data["response"] and r.ts == 6.0
    (nx,) = app_events(udp("8.8.8.8", 53, A, 5555, dns_response("nope.example", [], rcode=3)), 6.0)
    assert nx.data["rcode"] == 3


def test_dns_over_tcp_and_mdns() -> None:
    msg = dns_query("tcp.example")
    (ev,) = app_events(tcp(A, 40000, B, 53, PSH | ACK, struct.pack("!H", len(msg)) + msg), 1.0)
    assert ev.kind == "dns" and ev.data["query"] == "tcp.example" and ev.proto == "tcp"
    (md,) = app_events(udp(A6, 5353, "ff02::fb", 5353, dns_query("printer.local")), 1.0)
    assert md.data["query"] == "printer.local"


def test_tls_sni_and_http() -> None:
    evs = app_events(tcp(A, 5000, B, 443, PSH | ACK, tls_client_hello("Secure.Example")), 2.0)
    assert [e.kind for e in evs] == ["banner", "tls"]
    assert evs[0].data["service"] == "tls" and evs[1].data == {"sni": "secure.example"}
    req = b"POST /up?x=1 HTTP/1.1\r\nHost: WWW.Example.org\r\nUser-Agent: curl/8.0\r\n\r\nbody"
    evs = app_events(tcp(A, 5001, B, 80, PSH | ACK, req), 2.0)
    assert [e.kind for e in evs] == ["banner", "http"]
    assert evs[1].data == {"method": "POST", "uri": "/up?x=1", "host": "www.example.org",
                           "user_agent": "curl/8.0"}


@pytest.mark.parametrize("payload,service", [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "ssh"),
    (b"220 (vsFTPd 3.0.3)\r\n", "ftp"),
    (b"220 mx.example.com ESMTP Postfix\r\n", "smtp"),
    (b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00", "rdp"),
    (b"\x00\x00\x00\x85\xffSMBr\x00\x00\x00\x00", "smb"),
    (b"\x00\x00\x00\x85\xfeSMB@\x00\x00\x00\x00", "smb"),
    (b"\xff\xfd\x18\xff\xfd\x20", "telnet"),
    (b"HTTP/1.1 200 OK\r\n\r\n", "http"),
    (b"\x00\x01random", "unknown"),
])
def test_banners(payload: bytes, service: str) -> None:
    evs = app_events(tcp(B, 22, A, 40000, PSH | ACK, payload), 3.0)
    assert evs[0].kind == "banner" and evs[0].data["service"] == service
    assert evs[0].data["text"] == payload[:64].decode("latin-1") and evs[0].saddr == B


def test_arp_event() -> None:
    frame = arp(2, b"\xaa\xbb\xcc\x00\x11\x22", "192.168.1.1", "192.168.1.7")
    (ev,) = app_events(frame[14:], 4.0)
    assert ev.kind == "arp" and ev.saddr == "192.168.1.1" and ev.daddr == "192.168.1.7"
    assert ev.data == {"op": 2, "src_mac": "aa:bb:cc:00:11:22", "src_ip": "192.168.1.1",
                       "dst_ip": "192.168.1.7"}


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=28, max_size=60), st.booleans())
def test_arp_events_agree_with_dpkt(raw: bytes, ethernet_ipv4: bool) -> None:
    # dpkt.arp.ARP is the reference for the struct-based ARP reader
    buf = (b"\x00\x01\x08\x00\x06\x04" + raw[6:]) if ethernet_ipv4 else raw
    ref = dpkt.arp.ARP(buf[:28])
    evs = appdecode.arp_events(buf, 5.0)
    if (ref.hrd, ref.pro, ref.hln, ref.pln) != (1, 0x0800, 6, 4):
        assert evs == []
        return
    (ev,) = evs
    assert ev.data == {"op": ref.op, "src_mac": ":".join(f"{b:02x}" for b in ref.sha),
                       "src_ip": socket.inet_ntoa(ref.spa), "dst_ip": socket.inet_ntoa(ref.tpa)}
    assert (ev.saddr, ev.daddr, ev.kind) == (ev.data["src_ip"], ev.data["dst_ip"], "arp")


def test_no_events_for_plain_packets() -> None:
    assert app_events(tcp(A, 1, B, 2, FIN | ACK), 1.0) == []
    assert app_events(udp(A, 1, B, 2, b"data"), 1.0) == []
    assert app_events(icmp(A, B), 1.0) == []
    assert app_events(b"", 1.0) == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_app_events_never_raise_on_random_bytes(buf: bytes) -> None:
    app_events(buf, 0.0)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([53, 443, 80, 22]), st.binary(max_size=200), st.booleans())
def test_app_events_never_raise_on_hostile_payloads(port: int, payload: bytes, use_tcp: bool) -> None:
    pkt = tcp(A, 1, B, port, PSH | ACK, payload) if use_tcp else udp(A, 1, B, port, payload)
    for ev in app_events(pkt, 0.0):
        assert ev.kind in ("dns", "banner", "tls", "http")


def test_hostile_truncations_of_real_payloads() -> None:
    for payload in (tls_client_hello("x.example"), dns_response("a.example", ["1.1.1.1"]),
                    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"):
        for cut in range(len(payload)):
            app_events(tcp(A, 1, B, 53, PSH | ACK, payload[:cut]), 0.0)
            app_events(tcp(A, 1, B, 443, PSH | ACK, payload[:cut]), 0.0)
            app_events(udp(A, 1, B, 53, payload[:cut]), 0.0)


# --- the hand-written payload parsers against dpkt ------------------------------------------------------

def dpkt_dns(msg: bytes) -> dict[str, object] | None:
    try:
        d = dpkt.dns.DNS(msg)
        if not d.qd:
            return None
        answers = [decode.ip_str(rr.rdata) for rr in d.an if (rr.type, len(rr.rdata)) in ((1, 4), (28, 16))]
        return {"query": d.qd[0].name.lower(), "qtype": d.qd[0].type, "answers": answers, "rcode": d.rcode,
                "response": bool(d.qr)}
    except Exception:
        return None


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
dns_names = st.lists(label, min_size=1, max_size=5).map(".".join)
ipv4s = st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i)))
ipv6s = st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i)))


@settings(max_examples=200, deadline=None)
@given(dns_names, st.lists(st.one_of(ipv4s, ipv6s), max_size=4), st.integers(0, 5), st.booleans())
def test_dns_parser_agrees_with_dpkt(name: str, answers: list[str], rcode: int, response: bool) -> None:
    msg = dns_response(name, answers, rcode=rcode) if response else dns_query(name)
    mine = appdecode.parse_dns(msg)
    assert mine == dpkt_dns(msg) and mine is not None
    # addresses as text by libc inet_ntop (the flow table's form), equal as addresses
    got = [ipaddress.ip_address(a) for a in mine["answers"]]  # type: ignore[attr-defined]
    assert got == ([ipaddress.ip_address(a) for a in answers] if response else [])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 200))
def test_dns_parser_on_hostile_bytes(noise: bytes, cut: int) -> None:
    msg = (dns_response("a.example", ["1.2.3.4", A6]) + noise)[:cut] if cut % 2 else noise
    mine = appdecode.parse_dns(msg)
    ref = dpkt_dns(msg)
    if ref is not None and mine is not None and not noise.count(b"\xc0"):
        assert mine["query"] == ref["query"] and mine["qtype"] == ref["qtype"]


def test_dns_compression_pointers() -> None:
    msg = bytearray(dns_response("www.example.com", ["1.2.3.4"]))
    assert appdecode.parse_dns(bytes(msg)) == dpkt_dns(bytes(msg))
    loop = bytearray(dns_query("x.example"))
    loop[12:14] = b"\xc0\x0c"  # a pointer to itself: refused, never a loop
    assert appdecode.parse_dns(bytes(loop)) is None


def dpkt_sni(payload: bytes) -> str | None:
    rec = dpkt.ssl.TLSRecord(payload)
    hello = dpkt.ssl.TLSHandshake(rec.data).data
    for ext_type, data in hello.extensions:
        if ext_type == 0:
            return bytes(data[5:]).decode().lower()
    return None


@settings(max_examples=200, deadline=None)
@given(dns_names)
def test_sni_parser_agrees_with_dpkt(name: str) -> None:
    hello = tls_client_hello(name)
    assert appdecode.tls_sni(hello) == dpkt_sni(hello) == name.lower()
    for cut in (10, 44, 50, len(hello) - 3):
        assert appdecode.tls_sni(hello[:cut]) is None  # cut before the whole name: no guess
