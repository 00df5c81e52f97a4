"""What the flow tables hand up for each set of app kinds (both tables: ids py and c), and the engine
asking its table for exactly what its detectors declare."""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytest

from slipsq.config import CORE_OPTIONS, Config
from slipsq.detect import DETECTORS
from slipsq.detect.arpscan import ArpScan
from slipsq.detect.base import Detector
from slipsq.detect.bruteforce import BruteForce
from slipsq.engine import Engine
from slipsq.flow import AppEvent
from slipsq.flowtable import APP_KINDS
from slipsq.flowtable import FlowTable as PyTable
from slipsq.runmode import load_config as load
from tests.helpers import ACK, PSH, SYN, arp, dns_query, dns_response, tcp, tls_client_hello, udp

try:
    from slipsq._flowtable import FlowTable as CTable

    COMPILED = True
except ImportError:  # pragma: no cover - then every test that uses CTable skips
    COMPILED = False

A, B = "10.0.0.1", "10.0.0.2"
SSH_SERVER = b"SSH-2.0-OpenSSH_9.6\r\n"
SSH_CLIENT = b"SSH-2.0-libssh2_1.10\r\n"
Make = Callable[..., Any]


@pytest.fixture(params=["py", "c"])
def table_cls(request: pytest.FixtureRequest) -> Any:
    if request.param == "c" and not COMPILED:
        pytest.skip("slipsq._flowtable is not built")
    return PyTable if request.param == "py" else CTable


@pytest.fixture
def make(table_cls: Any) -> Make:
    def build(kinds: Sequence[str] | None = None) -> Any:
        t = table_cls(Config(CORE_OPTIONS))
        if kinds is not None:
            t.set_app_kinds(kinds)
        return t

    return build


def handed(t: Any, packets: Sequence[bytes], linktype: int = 101) -> list[bytes]:
    for i, buf in enumerate(packets):
        t.feed(buf, 10.0 + i * 0.01, linktype)
    return [b for _, b in t.pop_app()]


def first_payload(payload: bytes, sport: int = 40000, dport: int = 443) -> list[bytes]:
    """A handshake, then `payload` as the client's first data."""
    return [tcp(A, sport, B, dport, SYN), tcp(B, dport, A, sport, SYN | ACK), tcp(A, sport, B, dport, ACK),
            tcp(A, sport, B, dport, PSH | ACK, payload)]


def test_a_table_nobody_configured_hands_up_everything(make: Make) -> None:
    assert make().app_kinds == frozenset(APP_KINDS)


def test_dns_only_answered_and_nxdomain_responses(make: Make) -> None:
    t = make(["dns"])
    query = udp(A, 5000, B, 53, dns_query("example.com"))
    answered = udp(B, 53, A, 5000, dns_response("example.com", ["192.0.2.7"]))
    nxdomain = udp(B, 53, A, 5000, dns_response("nx.example.com", [], rcode=3))  # for the DGA detector
    empty = udp(B, 53, A, 5000, dns_response("aaaa.example.com", []))  # NOERROR, no address
    servfail = udp(B, 53, A, 5000, dns_response("x.example.com", [], rcode=2))
    nx_query = udp(A, 5000, B, 53, dns_query("nx.example.com")[:3] + b"\x03" + dns_query("nx.example.com")[4:])
    junk = udp(A, 5001, B, 53, b"\x00\x01")
    assert handed(t, [query]) == []
    assert handed(t, [answered]) == [answered]
    assert handed(t, [nxdomain]) == [nxdomain]
    assert handed(t, [empty, servfail, nx_query, junk]) == []  # rcode 3 on a query (QR clear) is not one
    assert t.stats()["app_packets"] == 2


def test_dns_over_tcp_reads_after_the_length(make: Make) -> None:
    t = make(["dns"])
    msg = dns_response("example.com", ["192.0.2.7"])
    resp = tcp(B, 53, A, 40000, PSH | ACK, struct.pack("!H", len(msg)) + msg)
    query = dns_query("example.com")
    assert handed(t, [tcp(A, 40000, B, 53, PSH | ACK, struct.pack("!H", len(query)) + query), resp]) == [resp]


def test_dns_queries_kind_hands_up_every_dns_packet(make: Make) -> None:
    t = make(["dns-queries"])
    pkts = [udp(A, 5000, B, 53, dns_query("example.com")),
            udp(B, 53, A, 5000, dns_response("nx.example.com", [], rcode=3)), udp(A, 5353, B, 5353, b"")]
    assert handed(t, pkts) == pkts


def test_tls_client_hello_only_when_tls_is_wanted(make: Make) -> None:
    hello = first_payload(tls_client_hello("example.com"))
    assert handed(make(["dns", "banner", "http", "arp"]), hello) == []
    assert handed(make(["tls"]), hello) == [hello[-1]]


def test_ssh_banners_both_ways_when_banner_is_wanted(make: Make) -> None:
    pkts = [*first_payload(SSH_CLIENT, dport=2222), tcp(B, 2222, A, 40000, PSH | ACK, SSH_SERVER),
            tcp(A, 40000, B, 2222, PSH | ACK, SSH_CLIENT)]  # not a first payload any more
    assert handed(make(["banner"]), pkts) == [pkts[3], pkts[4]]
    assert handed(make(["tls", "http", "dns"]), pkts) == []


@pytest.mark.parametrize("payload,kind", [
    (b"220 mail.example.com ESMTP\r\n", "banner"), (b"\xff\xfd\x18\xff\xfd\x20", "banner"),
    (b"RFB 003.008\n", "banner"), (b"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00", "banner"),
    (b"\x00\x00\x00\x54\xfeSMB\x40\x00", "banner"), (b"\x00\x00\x00\x54\xffSMBr", "banner"),
    (b"GET / HTTP/1.1\r\n", "http"), (b"OPTIONS * HTTP/1.1\r\n", "http"), (b"HTTP/1.1 200 OK\r\n", "payload"),
    (b"\x16\x03\x03\x00\x40\x02", "payload"),  # a ServerHello: only a ClientHello is "tls"
    (b"\x03\x00\x00\x0b\x06\xd0", "banner"),  # a TPKT Connection Confirm: the server's answer, RDP too
    (b"\xff\xfb\x01", "banner"), (b"\xff\xfb\x01\r\nlogin: ", "banner"),  # telnet's negotiation ...
    (b"\xff\x17\x9c\x02\x55", "payload"), (b"\xff\xfd\x18\x9c", "payload"),  # ... not any first 0xFF
    (b"\xff\xfd\xc8\xff", "payload"),  # (no option code that high)
    (b"SSH", "payload"), (b"\x00" * 40, "payload"),
    # an OpenVPN client's hard reset (v2, and v3 with tls-crypt-v2's key), its length the rest of the
    # payload; a length one off, another opcode, a key id, or too short: nothing
    (b"\x00\x0e\x38" + bytes(range(13)), "tunnel"), (b"\x01\x2c\x50" + bytes(299), "tunnel"),
    (b"\x00\x0f\x38" + bytes(13), "payload"), (b"\x00\x0e\x40" + bytes(13), "payload"),
    (b"\x00\x0e\x39" + bytes(13), "payload"), (b"\x00\x0a\x38" + bytes(9), "payload"),
])
def test_first_payload_classes(make: Make, payload: bytes, kind: str) -> None:
    pkts = first_payload(payload)
    others = [k for k in APP_KINDS if k not in (kind, "payload")]
    assert handed(make(others), pkts) == []
    assert handed(make([kind]), pkts) == [pkts[-1]]
    assert handed(make(["payload"]), pkts) == [pkts[-1]]


def test_a_payload_cut_by_the_capture_is_classified_on_what_is_there(make: Make) -> None:
    full = first_payload(SSH_CLIENT)
    cut = [*full[:3], full[3][:40 + 3]]  # "SSH": not enough to be a banner
    assert handed(make(["banner"]), cut) == []
    assert handed(make(["banner"]), [*full[:3], full[3][:40 + 4]]) == [full[3][:44]]


def test_arp_only_when_wanted(make: Make) -> None:
    frame = arp()
    assert handed(make(["dns", "banner"]), [frame], linktype=1) == []
    t = make(["arp"])
    assert handed(t, [frame], linktype=1) == [frame[14:]]
    assert t.stats()["arp"] == 1 and t.stats()["app_packets"] == 1


def test_unknown_kind_is_an_error(make: Make) -> None:
    with pytest.raises(ValueError, match="unknown app kind 'dnss'"):
        make(["dnss"])


def test_kinds_can_change_between_packets(make: Make) -> None:
    t = make(["dns"])
    pkts = first_payload(b"GET / HTTP/1.1\r\n")
    assert handed(t, pkts[:3]) == []
    t.set_app_kinds(["http"])
    assert handed(t, pkts[3:]) == [pkts[3]] and t.app_kinds == {"http"}


# --- the engine -------------------------------------------------------------------------------------

class WantsTls(Detector):
    name = "wantstls"
    app_kinds = frozenset({"tls"})
    seen: ClassVar[list[AppEvent]] = []

    def on_app(self, event: AppEvent) -> list[Any]:
        WantsTls.seen.append(event)
        return []


def engine(table_cls: Any, detectors: Sequence[type[Detector]]) -> Engine:
    cfg = load(None)  # every detector's options declared
    return Engine(cfg, detectors=detectors, table=table_cls(cfg))


def test_the_engine_asks_for_what_its_detectors_declare(table_cls: Any) -> None:
    assert BruteForce.app_kinds == {"banner"} and ArpScan.app_kinds == {"arp"}
    assert engine(table_cls, []).table.app_kinds == {"dns"}
    assert engine(table_cls, [ArpScan]).table.app_kinds == {"dns", "arp"}
    assert engine(table_cls, [BruteForce, ArpScan]).table.app_kinds == {"dns", "banner", "arp"}
    # exfil: tls (server names) and tunnel (VPN servers); beacon: http (device-management check-ins)
    assert engine(table_cls, DETECTORS).table.app_kinds == {"dns", "banner", "arp", "tls", "http", "tunnel"}
    e = engine(table_cls, [WantsTls])
    assert e.table.app_kinds == {"dns", "tls"}
    e.reconfigure(load(None), (), e.allow)
    assert e.table.app_kinds == {"dns", "tls"}  # a reload keeps asking


def test_a_detector_gets_the_events_it_declares_and_no_more(table_cls: Any) -> None:
    WantsTls.seen.clear()
    e = engine(table_cls, [WantsTls])
    pkts = [*first_payload(tls_client_hello("c2.example.net")),
            *first_payload(SSH_CLIENT, sport=40001, dport=22),
            udp(A, 5000, B, 53, dns_query("example.com")),
            udp(B, 53, A, 5000, dns_response("example.com", ["192.0.2.7"]))]
    for i, buf in enumerate(pkts):
        e.packet(buf, 1000.0 + i * 0.01, 101)
    e.finish()
    got = sorted((ev.kind, ev.data.get("sni") or ev.data.get("query") or ev.data.get("service"))
                 for ev in WantsTls.seen)
    # the ClientHello gives a banner and a tls event, of which it hears the tls one; the DNS answer
    # (always decoded, for ctx.dns_names) is not its kind either; the SSH banner and the DNS query
    # never come up from the table
    assert got == [("tls", "c2.example.net")]
    assert e.ctx.dns_names["192.0.2.7"] == {"example.com"}
    assert e.table.stats()["app_packets"] == 2


def server_first(payload: bytes, sport: int, dport: int) -> list[bytes]:
    """A handshake, then `payload` as the server's first data (a greeting)."""
    return [*first_payload(b"", sport, dport)[:3], tcp(B, dport, A, sport, PSH | ACK, payload)]


def test_bruteforce_learns_services_through_the_table(table_cls: Any) -> None:
    """Through the real table: a server's SSH greeting names a moved SSH server, a TLS ClientHello
    never comes up (port 3389 stays RDP by its port). A client's bytes name nothing of its server:
    a stranger's "SSH-2.0" sent to a NAS's HTTPS port made the owner's short connections there
    login attempts (a hunt, 2026-12-07), and an HTTP request to port 22 made a brute force there
    uncounted (so HTTP is not asked for); a first byte of 0xFF (a random salt) is no telnet."""
    e = engine(table_cls, [BruteForce])
    pkts = [*server_first(SSH_SERVER, 40000, 2222),
            *first_payload(b"GET / HTTP/1.1\r\n", 40001, 22),
            *first_payload(tls_client_hello("rdp.example"), 40002, 3389),
            *first_payload(SSH_CLIENT, 40003, 443),  # a stranger's ssh greeting to the NAS's HTTPS
            *server_first(b"\xff\xfd\x18\x9c\x02\x55", 40004, 8443)]  # a salt that begins with 0xFF
    for i, buf in enumerate(pkts):
        e.packet(buf, 1000.0 + i * 0.01, 101)
    e.advance(1001.0)
    [bf] = e.detectors
    assert isinstance(bf, BruteForce)
    assert (bf.service(B, 2222), bf.service(B, 22), bf.service(B, 3389)) == ("ssh", "ssh", "rdp")
    assert (bf.service(B, 443), bf.service(B, 8443)) == (None, None)
    assert bf.service(A, 40003) == "ssh"  # the client's own end: harmless
    assert e.table.stats()["app_packets"] == 2  # the two SSH greetings
