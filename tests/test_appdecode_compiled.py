"""The compiled app-packet decoder (slipsq/_appdecode.pyx) against the readable one
(decode.app_events, appdecode.parse_dns, themselves checked against dpkt in test_decode.py): equal
events for real, generated, mutated and random packets."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq import appdecode, decode
from slipsq.flow import AppEvent
from tests.helpers import ACK, PSH, arp, dns_query, dns_response, ipv6_ext, tcp, tls_client_hello, udp

c = pytest.importorskip("slipsq._appdecode")

A, B, A6, B6 = "192.168.1.5", "198.51.100.7", "2001:db8::5", "2001:db8::7"
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63)
dns_names = st.lists(label, min_size=1, max_size=5).map(".".join)
addresses = st.one_of(st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))),
                      st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i))),
                      st.integers(0, 2**32 - 1).map(lambda i: f"::ffff:{ipaddress.IPv4Address(i)}"))


def same(packet: bytes, ts: float = 7.5) -> list[AppEvent]:
    mine, ref = c.app_events(packet, ts), decode.app_events(packet, ts)
    assert mine == ref, (packet.hex(), mine, ref)
    return mine


def dns_packets(msg: bytes, v6: bool, over_tcp: bool, port: int) -> list[bytes]:
    src, dst = (A6, B6) if v6 else (A, B)
    if over_tcp:
        framed = len(msg).to_bytes(2, "big") + msg
        return [tcp(dst, port, src, 40000, PSH | ACK, framed), tcp(src, 40000, dst, port, PSH | ACK, framed)]
    return [udp(dst, port, src, 40000, msg), udp(src, 40000, dst, port, msg)]


@settings(max_examples=300, deadline=None)
@given(dns_names, st.lists(addresses, max_size=5), st.integers(0, 5), st.booleans(), st.booleans(), st.booleans(),
       st.sampled_from([53, 5353]))
def test_dns_events_are_equal(name: str, answers: list[str], rcode: int, response: bool, v6: bool,
                              over_tcp: bool, port: int) -> None:
    msg = dns_response(name, answers, rcode=rcode) if response else dns_query(name)
    assert c.parse_dns_message(msg) == appdecode.parse_dns(msg) is not None
    for p in dns_packets(msg, v6, over_tcp, port):
        (ev,) = same(p)
        assert ev.kind == "dns" and ev.data["query"] == name.lower()  # type: ignore[attr-defined]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dns_names, st.lists(addresses, min_size=1, max_size=3), st.booleans(), st.booleans(),
       st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 400))
def test_mutated_and_cut_packets_decode_equally(name: str, answers: list[str], v6: bool, over_tcp: bool,
                                                flips: list[tuple[int, int]], cut: int) -> None:
    # every header field and DNS byte is fair game: lengths, offsets, pointers, counts
    for p in dns_packets(dns_response(name, answers), v6, over_tcp, 53):
        mutated = bytearray(p)
        for at, value in flips:
            mutated[at % len(mutated)] = value
        same(bytes(mutated))
        same(bytes(mutated[:cut]))
        same(p[:cut])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_decode_equally(buf: bytes) -> None:
    same(buf)
    same(bytes([0x45]) + buf)  # an IPv4 header start
    same(bytes([0x60]) + buf)  # an IPv6 header start


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0, 43, 60, 51, 44]), max_size=9), st.integers(0, 400), st.integers(0, 255),
       st.binary(max_size=40))
def test_ipv6_extension_chains_decode_equally(exts: list[int], at: int, value: int, noise: bytes) -> None:
    # real chains (up to one past the limit of 8), then one byte of the chain set to anything:
    # next-header values, header lengths running past the packet, fragment offsets
    p = ipv6_ext(A6, B6, 17, udp(A, 40000, B, 53, dns_response("a.example", ["1.2.3.4"]))[20:], exts)
    same(p + noise)
    q = bytearray(p)
    q[6 + at % (len(q) - 6)] = value
    same(bytes(q))


# first payloads: every service's start, near misses (a byte short, another case, a flipped byte),
# "220" greetings naming SMTP or MAIL in any case anywhere in (or just past) their first 200 bytes,
# TLS ClientHellos cut and mutated anywhere (server name lengths, extension lengths, record type)
_STARTS = [b"SSH-", b"SSH", b"220", b"22", b"\x03\x00\x00\x13\x0e\xe0", b"\x03\x00\x00\x13\x0e\xd0",
           b"\x00\x00\x00\x54\xffSMB", b"\x00\x00\x00\x54\xfeSMB", b"\x00\x00\x00\x54\xfdSMB",
           b"\xff", b"RFB ", b"RFB", b"GET ", b"GET", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ",
           b"CONNECT ", b"PATCH ", b"TRACE ", b"HTTP/", b"HTTP", b"get ", b"\x16\x03", b"\x16\x02", b""]
_WORDS = st.sampled_from([b"SMTP", b"smtp", b"sMtP", b"MAIL", b"mail", b"Mail", b"SMT", b"MAI", b"ESMTP"])


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(_STARTS), st.binary(max_size=80), st.one_of(st.none(), st.tuples(st.integers(0, 260), _WORDS)),
       st.booleans())
def test_first_payloads_decode_equally(start: bytes, rest: bytes, word: tuple[int, bytes] | None, v6: bool) -> None:
    payload = start + rest
    if word is not None:
        at, w = word
        payload = payload.ljust(at, b"x")[:at] + w + payload[at:]
    if not payload:
        payload = b"\x00"
    src, dst = (A6, B6) if v6 else (A, B)
    events = same(tcp(src, 40000, dst, 8080, PSH | ACK, payload))
    assert events[0].kind == "banner" and events[0].data["service"] == appdecode.service(payload)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 1500), st.sampled_from([0x38, 0x50, 0x39, 0x40, 0x20, 0x16]), st.integers(-2, 2),
       st.binary(min_size=1, max_size=40))
def test_openvpn_hard_resets_decode_equally(size: int, opcode: int, off: int, fill: bytes) -> None:
    """A first payload of a 2-byte length, an opcode byte and `size` more bytes: both decoders agree,
    and say "openvpn" (with a "tunnel" event) exactly for a length that is the rest of the payload,
    the client's hard reset v2 or v3 (0x38, 0x50) and 14 bytes at least."""
    body = bytes([opcode]) + (fill * (size // len(fill) + 1))[:size]
    payload = max(0, len(body) + off).to_bytes(2, "big") + body
    events = same(tcp(A, 40000, B, 1194, PSH | ACK, payload))
    vpn = off == 0 and opcode in (0x38, 0x50) and len(payload) >= 14
    assert (events[0].data["service"] == "openvpn") == (vpn and not appdecode.rdp_start(payload)
                                                        and not appdecode.smb_start(payload))
    tunnels = [e.data for e in events if e.kind == "tunnel"]
    assert tunnels == ([{"protocol": "openvpn"}] if events[0].data["service"] == "openvpn" else [])


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["x.example", "", "A.Example.COM", "\u00e9.example", "a" * 200]),
       st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=4), st.integers(0, 700))
def test_tls_client_hellos_decode_equally(name: str, flips: list[tuple[int, int]], cut: int) -> None:
    hello = bytearray(tls_client_hello(name))
    for at, value in flips:
        hello[at % len(hello)] = value
    for payload in (bytes(hello), bytes(hello[:max(1, cut)])):
        events = same(tcp(A, 40000, B, 443, PSH | ACK, payload))
        assert c.tls_server_name(payload) == appdecode.tls_sni(payload)
        assert events[0].kind == "banner"


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["", "relay.example"]),
       st.lists(st.sampled_from(["bep/1.0", "h2", "http/1.1", "", "b\u00e9p", "a b", "x" * 255]), max_size=3),
       st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=3), st.integers(0, 700))
def test_tls_alpn_decodes_equally(name: str, alpn: list[str], flips: list[tuple[int, int]], cut: int) -> None:
    """The first ALPN protocol of a hello (what a client that names no server talks, Syncthing's
    bep/1.0), cut short and mangled, the same in both decoders; a "tls" event carries it only when
    the hello names no server."""
    import random

    from tools.gen_sessions import client_hello

    hello = bytearray(client_hello(name, random.Random(7), alpn=tuple(alpn)))
    for at, value in flips:
        hello[at % len(hello)] = value
    for payload in (bytes(hello), bytes(hello[:max(1, cut)])):
        events = same(tcp(A, 40000, B, 22000, PSH | ACK, payload))
        assert c.tls_protocol(payload) == appdecode.tls_alpn(payload)
        tls = [e.data for e in events if e.kind == "tls"]
        sni, first = appdecode.tls_sni(payload), appdecode.tls_alpn(payload)
        if appdecode.service(payload) != "tls":  # (a mangled record header: no hello at all)
            sni = first = None
        assert tls == ([{"sni": sni}] if sni is not None else [{"alpn": first}] if first is not None else [])


def test_the_first_alpn_protocol_is_read_when_whole_and_printable() -> None:
    import random

    from tools.gen_sessions import client_hello

    for alpn, want in [(("bep/1.0",), "bep/1.0"), (("h2", "http/1.1"), "h2"), ((), None), (("",), None),
                       (("a b",), None), (("b\u00e9p",), None), (("x" * 255,), "x" * 255)]:
        hello = client_hello("", random.Random(1), alpn=alpn)
        assert appdecode.tls_alpn(hello) == c.tls_protocol(hello) == want, alpn
        if want is not None:  # cut inside the name: no guess
            at = hello.index(want.encode()) + len(want) - 1
            assert appdecode.tls_alpn(hello[:at]) is None and c.tls_protocol(hello[:at]) is None
    named = client_hello("syncthing.example", random.Random(1), alpn=("bep/1.0",))
    assert appdecode.tls_alpn(named) == "bep/1.0" and appdecode.tls_sni(named) == "syncthing.example"


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 65535), st.binary(min_size=6, max_size=6), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.lists(st.tuples(st.integers(0, 27), st.integers(0, 255)), max_size=3), st.integers(0, 40))
def test_arp_frames_decode_equally(op: int, mac: bytes, spa: int, tpa: int, flips: list[tuple[int, int]],
                                   cut: int) -> None:
    # the frame from its ARP header, as the table hands it up: every field set to anything (hardware
    # and protocol types and lengths included), and cut anywhere
    frame = bytearray(arp(op, mac, str(ipaddress.IPv4Address(spa)), str(ipaddress.IPv4Address(tpa)))[14:])
    for at, value in flips:
        frame[at] = value
    for packet in (bytes(frame), bytes(frame[:cut])):
        events = same(packet)
        if packet[:6] == b"\x00\x01\x08\x00\x06\x04" and len(packet) >= 28:
            assert events[0].kind == "arp" and events[0].data["src_mac"] == packet[8:14].hex(":")


def test_other_kinds_go_through_the_readable_decoders() -> None:
    hello = tls_client_hello("x.example")
    assert [e.kind for e in same(tcp(A, 40000, B, 443, PSH | ACK, hello))] == ["banner", "tls"]
    assert [e.kind for e in same(tcp(A, 40000, B, 80, PSH | ACK, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))] \
        == ["banner", "http"]
    assert same(tcp(A, 40000, B, 80, ACK)) == []
    assert same(b"") == []
    # the events are built by writing their slots (_flowslots.pxd): ordinary AppEvents all the same
    import copy
    import dataclasses
    import gc

    answer = udp(B, 53, A, 40000, dns_response("a.b", ["1.2.3.4"]))
    for ev in same(tcp(A, 40000, B, 443, PSH | ACK, hello)) + same(answer):
        assert type(ev) is AppEvent and gc.is_tracked(ev)
        assert AppEvent(**{f.name: getattr(ev, f.name) for f in dataclasses.fields(AppEvent)}) == ev == copy.copy(ev)


def test_every_handed_up_packet_of_the_bundled_captures_decodes_equally() -> None:
    from slipsq._flowtable import FlowTable
    from slipsq.config import CORE_OPTIONS, Config
    from slipsq.flowtable import APP_KINDS
    from slipsq.sources._pcap import PcapFile

    data = Path(__file__).resolve().parent / "data"
    shared = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "pcaps"
    n = 0
    for path in [*sorted(data.glob("*.pcap")), *sorted(shared.glob("*.pcap"))]:
        table = FlowTable(Config(CORE_OPTIONS))
        table.set_app_kinds(frozenset(APP_KINDS))  # every kind: the most packets handed up
        pcap = PcapFile(str(path))
        while pcap.feed(table, 4096):
            for ts, packet in table.pop_app():
                same(packet, ts)
                n += 1
            table.pop_closed()
        pcap.close()
    assert n > 100


def test_every_cut_and_every_length_field_decodes_equally() -> None:
    # the boundaries a random search rarely hits: each packet cut at every byte, and each length
    # field (IPv4 total length, IPv6 payload length, the DNS-over-TCP prefix) set to every value near
    # the truth
    dns = dns_response("www.example.com", ["1.2.3.4", "2001:db8::9"])
    framed = len(dns).to_bytes(2, "big") + dns
    v6_ext = ipv6_ext(A6, B6, 17, udp(A, 40000, B, 53, dns)[20:], [0, 60])  # hop-by-hop, destination options
    packets = {"v4 udp": (udp(A, 53, B, 40000, dns), 2), "v6 ext udp": (v6_ext, 4),
               "v4 tcp": (tcp(A, 53, B, 40000, PSH | ACK, framed), 2),
               "v6 tcp": (tcp(A6, 53, B6, 40000, PSH | ACK, framed), 4)}
    for name, (p, length_at) in packets.items():
        for cut in range(len(p) + 1):
            same(p[:cut])
        true_len = int.from_bytes(p[length_at:length_at + 2], "big")
        for value in range(max(0, true_len - 80), true_len + 8):
            q = bytearray(p)
            q[length_at:length_at + 2] = value.to_bytes(2, "big")
            same(bytes(q))
        if "tcp" in name:  # the DNS-over-TCP length prefix
            at = len(p) - len(framed)
            for value in range(len(dns) + 4):
                q = bytearray(p)
                q[at:at + 2] = value.to_bytes(2, "big")
                assert len(same(bytes(q))) == (1 if value >= 12 + 4 + len("www.example.com") + 2 else 0), value


def test_engine_uses_the_compiled_decoder_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from slipsq.engine import make_app_decoder

    assert make_app_decoder() is c.app_events
    monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1")
    assert make_app_decoder() is decode.app_events


# pieces of HTTP requests and what could confuse a parser of them: CR and LF alone, the blank line,
# header names in any case with latin-1 whitespace around them (str.strip strips \x85 and \xa0 too)
HTTP_PIECES = (b"GET", b"POST", b" ", b"  ", b"/", b"/index.html?q=1", b"HTTP/1.1", b"\r\n", b"\r", b"\n",
               b"\r\n\r\n", b"Host", b"HOST", b"host", b"hOsT", b"User-Agent", b"user-agent", b"UserAgent", b":",
               b": ", b"Example.COM", b"\xc0\xdf", b"\xa0", b"\x85", b"\t", b"\x1c", b"\x0b", b"curl/8.0", b"x")


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.lists(st.sampled_from(HTTP_PIECES), max_size=30).map(b"".join), st.binary(max_size=80)))
def test_http_requests_are_read_as_the_readable_parser_reads_them(payload: bytes) -> None:
    """The request line's method and URI and the Host and User-Agent headers, found in C, are what
    appdecode.http_request makes of the same first payload."""
    from slipsq.appdecode import http_request

    assert c.http_request_c(payload) == http_request(payload)


def test_every_latin1_character_around_the_headers_is_stripped_as_python_strips_it() -> None:
    """Each of the 256 byte values around a header's name and value: what str.strip() takes away
    (\\t-\\r, \\x1c-\\x1f, space, \\x85, \\xa0) and nothing else, and the host lowered as str.lower()
    lowers latin-1."""
    from slipsq.appdecode import http_request

    for b in range(256):
        ch = bytes([b])
        payload = (b"GET /" + ch + b" HTTP/1.1\r\n" + ch + b"Host" + ch + b":" + ch + b"W\xc0" + ch +
                   b"\r\n" + ch + b"User-Agent:" + ch + b"ua" + ch + b"\r\n\r\n")
        assert c.http_request_c(payload) == http_request(payload), b


def _pointer_chain_answer(owners: int, chain: int) -> bytes:
    """A DNS answer whose answers' owner names each point at the top of a chain of `chain` backward
    compression pointers (in the first answer's rdata), then one A record for 203.0.113.9."""
    import struct

    body = struct.pack("!HHHHHH", 1, 0x8180, 1, owners + 1, 0, 0) + b"\x01a\x00" + struct.pack("!HH", 1, 1)
    rdstart, prev, links = len(body) + 11, 12, bytearray()
    for i in range(chain):  # each pointer to the one before it; the first to the question's name
        links += struct.pack("!H", 0xC000 | prev)
        prev = rdstart + 2 * i
    body += b"\x00" + struct.pack("!HHIH", 16, 1, 0, len(links)) + bytes(links)
    for _ in range(owners - 1):
        body += struct.pack("!H", 0xC000 | prev) + struct.pack("!HHIH", 16, 1, 0, 0)
    return body + b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 9])


def test_an_answers_owner_names_are_not_followed_down_pointer_chains(monkeypatch: pytest.MonkeyPatch) -> None:
    # a review (2026-12-07): owners pointing at the top of a chain of pointers made a 4 kB answer
    # ~750,000 hops (~0.5 ms of the packet loop), quadratic in the packet's size. The owners nobody
    # reads are walked in place (skip_name): only the question's name follows pointers
    msg = _pointer_chain_answer(owners=120, chain=1300)
    assert len(msg) < 4096
    calls: list[int] = []
    real = appdecode.dns_name

    def counted(m: bytes, pos: int) -> tuple[str | None, int]:
        calls.append(pos)
        return real(m, pos)

    monkeypatch.setattr(appdecode, "dns_name", counted)
    parsed = appdecode.parse_dns(msg)
    assert calls == [12]  # the question's name, once; no owner's
    assert parsed is not None and parsed["query"] == "a" and parsed["answers"] == ["203.0.113.9"]
    assert c.parse_dns_message(msg) == parsed  # the compiled walk, the same answer
    # an owner whose pointer points forward is unreadable in both: the answers stop there
    bad = bytearray(_pointer_chain_answer(owners=2, chain=3))
    bad[-16 - 12:-16 - 10] = b"\xff\xff"  # the second owner's pointer: 0x3fff, ahead of itself
    assert appdecode.parse_dns(bytes(bad)) == c.parse_dns_message(bytes(bad))
    assert appdecode.parse_dns(bytes(bad))["answers"] == []  # type: ignore[index]


def test_a_server_name_that_is_no_host_name_is_none() -> None:
    # a review (2026-12-07): the ClientHello's name was kept whatever its length and bytes, so 1,380
    # bytes of 0xFF were a 2.8 kB string per client and server in exfil's map, against the 300 B its
    # memory share counts. A host name (RFC 6066) is ASCII and at most a DNS name's 255 bytes
    def hello(name: bytes) -> bytes:
        return tls_client_hello("x" * len(name)).replace(b"x" * len(name), name)

    for name, want in [(b"www.Example.com", "www.example.com"), (b"a" * 255, "a" * 255), (b"a" * 256, None),
                       (b"a" * 1380, None), (b"\xffexample.com", None), (b"caf\xc3\xa9.example", None), (b"", None)]:
        payload = hello(name)
        assert appdecode.tls_sni(payload) == c.tls_server_name(payload) == want, name[:20]
