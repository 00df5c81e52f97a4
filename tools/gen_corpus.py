"""The labeled detection corpus: generated packet-level scenarios, each with its truth, for
bench/detection.py and tests/test_detection_corpus.py.

A scenario is a name, a kind ("malicious" or "benign"), the addresses whose block is right (`bad`:
the infected host and its C&C, the attacker), the detector(s) expected to find it, and a builder of
time-ordered (time, Ethernet frame) packets. Benign scenarios have no `bad` address: any block in
them is wrong. Every scenario runs beside a little home background (DNS to the router, NTP), so
no scenario is alone on the wire. Deterministic: the same seed gives the same bytes.

    python -m tools.gen_corpus DIR [--only NAME,...] [--quick]   # writes DIR/<name>.pcap

Test and benchmark tooling; never imported by slipsq itself.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools.gen_frames import ACK, PSH, RST, SYN, TLS_FILL, Content
from tools.gen_frames import Path as Way
from tools.gen_realistic import EPOCH
from tools.gen_scenarios import (
    Ports,
    horizontal_scan,
    long_connection,
    merge,
    normal_browsing,
    ntp_polling,
    random_name,
    ssh_bruteforce,
    vertical_scan,
)
from tools.gen_sessions import (
    Message,
    Packet,
    arp_who_has,
    client_hello,
    dns_message,
    dns_query,
    http_session,
    icmp_echo,
    server_hello,
    ssh_session,
    tcp_probe,
    tcp_session,
    tls_session,
    udp_exchange,
    udp_stream,
)

ROUTER, LAPTOP, PHONE, VICTIM = "192.168.1.1", "192.168.1.10", "192.168.1.11", "192.168.1.66"
CNC = "203.0.113.66"
T0 = EPOCH  # an hour boundary: judge windows are easy to reason about


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str  # "malicious" or "benign"
    build: Callable[[random.Random], Iterator[Packet]]
    bad: frozenset[str] = frozenset()  # addresses whose block is right
    detectors: tuple[str, ...] = ()  # the detectors expected to find it (for the table)
    quick: bool = False  # in the fast subset the test runs
    note: str = ""
    start: float = T0  # when the behaviour starts (time to block counts from here)
    extra: dict[str, object] = field(default_factory=dict)


def _home(rng: random.Random, duration: float) -> list[Iterator[Packet]]:
    """A quiet background: a phone browsing a little, the laptop's NTP."""
    return [normal_browsing(PHONE, max(2, int(duration // 300)), duration, start=T0, resolver=ROUTER,
                            max_response=20_000, connections=2, rng=rng),
            ntp_polling(LAPTOP, "198.51.100.123", start=T0 + 3, interval=64, count=int(duration // 64) + 1,
                        rng=rng)]


def _with_dns(name: str, ip: str | None, client: str, t: float, rng: random.Random,
              resolver: str = ROUTER, txt: bytes | None = None) -> Iterator[Packet]:
    """`client` looks `name` up just before `t` (half a second): the answer `ip` (None: NXDOMAIN), or
    with `txt` a TXT lookup answered with that text."""
    return dns_query(client, resolver, name, ip, t - 0.5, sport=rng.randrange(30000, 60000), rng=rng, txt=txt)


# --- malicious ----------------------------------------------------------------------------------

def _beacon(interval: float, jitter: float, count: int, size: int = 2500, named: bool = True,
            port: int = 443, size_jitter: float = 0.01) -> Callable[[random.Random], Iterator[Packet]]:
    """A TLS beacon: connection i starts at i x interval ± jitter x interval (uniform), and moves
    `size` ± size_jitter bytes (a real beacon is never lab-perfect: issue 11's moved 6.1 kB ± 1 %)."""
    def build(rng: random.Random) -> Iterator[Packet]:
        duration = interval * count
        ports = Ports(rng)
        sessions = []
        for i in range(count):
            t = T0 + 10 + i * interval + (rng.uniform(-jitter, jitter) * interval if i else 0.0)
            k = 1 + rng.uniform(-size_jitter, size_jitter)
            cert = min(2800, size // 3)
            rest = max(200, int((size - 470 - cert) * k))
            sessions.append(tls_session(VICTIM, CNC, "cdn-edge.example.net", t, rest // 4, rest - rest // 4,
                                        sport=ports(), port=port, certificate_bytes=cert, rng=rng))
        parts = _home(rng, duration) + sessions
        if named:
            parts.append(_with_dns("cdn-edge.example.net", CNC, VICTIM, T0 + 10, rng))
        return merge(*parts)
    return build


def _beacon_sizes(rng: random.Random) -> Iterator[Packet]:
    """Every 20 s ±10 %, each connection moving 1.5-9 kB (commands of different lengths)."""
    ports = Ports(rng)
    sessions = [tls_session(VICTIM, CNC, "api.example.net", T0 + 10 + i * 20 + rng.uniform(-2, 2),
                            rng.randint(300, 1500), rng.randint(800, 7500), sport=ports(), rng=rng)
                for i in range(60)]
    return merge(*_home(rng, 1200), _with_dns("api.example.net", CNC, VICTIM, T0 + 10, rng), *sessions)


def _storm(rng: random.Random) -> Iterator[Packet]:
    """A RAT whose controller refuses it: ~720 connections to CNC:4782 in 8 min, each SYN -> RST."""
    return merge(*_home(rng, 600), *(tcp_probe(VICTIM, CNC, 49152 + i, 4782, T0 + 10 + i * 0.667 + rng.uniform(0, 0.1),
                                               state="closed", rtt=0.04, rng=rng) for i in range(720)))


def _dga(rng: random.Random) -> Iterator[Packet]:
    """Bursts of NXDOMAIN: 40 random .com names every 5 minutes, 4 bursts, to the LAN's resolver."""
    streams = _home(rng, 1200)
    for burst in range(4):
        for i in range(40):
            name = random_name(rng, 18)
            streams.append(dns_query(VICTIM, ROUTER, name, None, T0 + 10 + burst * 300 + i * 0.2,
                                     sport=40000 + burst * 100 + i, rng=rng))
    return merge(*streams)


def _exfil(rng: random.Random) -> Iterator[Packet]:
    """A large upload (30 MB) to one unnamed server, a few kB back."""
    return merge(*_home(rng, 300), tcp_session(VICTIM, CNC, 51000, 8443, T0 + 10, 30_000_000, 6000, 0.05,
                                               rate=5e6, rng=rng))


def _exfil_https(rng: random.Random) -> Iterator[Packet]:
    """The same theft as an HTTPS POST to https://<bare address>/ from a Go program (crypto/tls with no
    server name: no SNI, ALPN h2 and http/1.1), in 30 MB: the twin of syncthing-offsite's hello that
    names an application (bep/1.0), which this one does not."""
    hello, answer, record = client_hello("", rng), server_hello(rng), b"\x17\x03\x03"
    messages: list[Message] = [("c", Content(len(hello), hello)), ("s", Content(len(answer) + 2800, answer, TLS_FILL)),
                               ("c", Content(30_000_000, record, TLS_FILL)), ("s", Content(600, record, TLS_FILL))]
    return merge(*_home(rng, 300), tcp_session(VICTIM, CNC, 51000, 443, T0 + 10, messages=messages, rate=5e6,
                                               rng=rng))


def _worm_ports(rng: random.Random) -> Iterator[Packet]:
    """An IoT worm on a LAN host sweeping Internet addresses on three ports (telnet 23 and 2323,
    Huawei's 37215), 35 hosts each, none answering: three findings that add up (the twin of
    server-browser, whose many ports' weak findings count once)."""
    ports = (23, 2323, 37215)
    scans = [horizontal_scan(VICTIM, [f"{rng.choice((41, 77, 103, 177, 190))}.{rng.randrange(256)}."
                                      f"{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(35)], port,
                             start=T0 + 10 + k * 20, rate=5, rng=rng) for k, port in enumerate(ports)]
    return merge(*_home(rng, 300), *scans)


def _hscan(rng: random.Random) -> Iterator[Packet]:
    return merge(*_home(rng, 300), horizontal_scan(VICTIM, "192.168.1.0/24", 445, start=T0 + 10, rate=50,
                                                   open_hosts=[LAPTOP], closed_hosts=[PHONE], rng=rng))


def _vscan(rng: random.Random) -> Iterator[Packet]:
    return merge(*_home(rng, 300), vertical_scan("198.51.100.77", LAPTOP, range(1, 1025), start=T0 + 10,
                                                 open_ports=[22, 80], rng=rng))


def _brute(rng: random.Random) -> Iterator[Packet]:
    return merge(*_home(rng, 300), ssh_bruteforce("198.51.100.88", LAPTOP, attempts=40, start=T0 + 10, rng=rng))


# --- forged traffic: somebody else's address, to get it (or a server everyone uses) blocked --------
# Each builder with genuine=True makes the same behaviour for real (tests/test_detect_forgery.py: the
# real one is caught, so the forged one is not missed by a test that cannot fail).

RESOLVER, NAS = "198.51.100.53", "192.168.1.20"  # a public resolver the house uses; a NAS with ssh open


def _uses_resolver(rng: random.Random, duration: float, client: str = LAPTOP) -> list[Iterator[Packet]]:
    """The house asks RESOLVER (directly: a phone's private DNS) every ~30 s: a server in use."""
    return [dns_query(client, RESOLVER, f"site{k}.example.org", f"198.51.100.{100 + k % 50}",
                      T0 + 2 + k * 30 + rng.uniform(0, 5), sport=rng.randrange(30000, 60000), rng=rng)
            for k in range(int(duration // 30))]


def _forged_ssh_syns(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """40 SYNs to the NAS's ssh, 5 s apart, with RESOLVER's address: the NAS answers SYN-ACK, and
    RESOLVER (which never sent them) answers RST. Genuine: RESOLVER's address really guesses passwords."""
    def build(rng: random.Random) -> Iterator[Packet]:
        parts = _home(rng, 600) + _uses_resolver(rng, 600)
        ports = Ports(rng)
        if genuine:
            parts.append(ssh_bruteforce(RESOLVER, NAS, attempts=40, start=T0 + 60, interval=5.0, rng=rng))
            return merge(*parts)
        a2n, n2a = Way(RESOLVER, NAS, ttl=50), Way(NAS, RESOLVER)

        def syns() -> Iterator[Packet]:
            for k in range(40):
                t, sp, seq, sseq = T0 + 60 + k * 5.0, ports(), rng.getrandbits(32), rng.getrandbits(32)
                yield t, a2n.tcp(rng.randrange(65536), sp, 22, seq, 0, SYN, opts=b"\x02\x04\x05\xb4")
                yield t + 0.001, n2a.tcp(rng.randrange(65536), 22, sp, sseq, (seq + 1) & 0xFFFFFFFF, SYN | ACK)
                yield t + 0.03, a2n.tcp(rng.randrange(65536), sp, 22, (seq + 1) & 0xFFFFFFFF, 0, RST, win=0)
        return merge(*parts, syns())
    return build


def _forged_synacks(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """SYN-ACKs from RESOLVER:443 that the phone never asked for, every 20 s: it answers each with a
    RST. Genuine: the phone really connects to RESOLVER:443 every 20 s (and gets data back)."""
    def build(rng: random.Random) -> Iterator[Packet]:
        parts = _home(rng, 900) + _uses_resolver(rng, 900)
        ports = Ports(rng)
        if genuine:
            parts += [tcp_session(PHONE, RESOLVER, ports(), 443, T0 + 30 + k * 20.0, 300, 2000, rng=rng)
                      for k in range(40)]
            return merge(*parts)
        r2p, p2r = Way(RESOLVER, PHONE, ttl=55), Way(PHONE, RESOLVER)

        def synacks() -> Iterator[Packet]:
            for k in range(40):
                t, sp, seq = T0 + 30 + k * 20.0, ports(), rng.getrandbits(32)
                yield t, r2p.tcp(rng.randrange(65536), 443, sp, seq, rng.getrandbits(32), SYN | ACK)
                yield t + 0.0002, p2r.tcp(rng.randrange(65536), sp, 443, rng.getrandbits(32), 0, RST, win=0)
        return merge(*parts, synacks())
    return build


def _halfopen_to_resolver(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """A SYN every 15 s from the laptop (forged on the LAN, or a web page's script) to RESOLVER:444,
    closed (RST): a Markov 'C&C' string against the house's resolver. Genuine: the same to a server
    nobody uses."""
    def build(rng: random.Random) -> Iterator[Packet]:
        server = "198.51.100.244" if genuine else RESOLVER
        parts = _home(rng, 900) + _uses_resolver(rng, 900)
        ports = Ports(rng)
        parts += [tcp_probe(LAPTOP, server, ports(), 444, T0 + 60 + k * 15.0, "closed", rng=rng) for k in range(50)]
        return merge(*parts)
    return build


def _forged_rsts(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """A VPN over TCP 443 (as OpenVPN and SSTP are run to pass firewalls) with a ping every 10 s;
    after each ping somebody on the LAN sends the server a RST with a wrong sequence number, which the
    ends ignore. Genuine: the client really reconnects after each ping (a new connection every 10 s).
    (On OpenVPN's own port, 1194, beacon.keepalive_ports would keep it unblocked either way.)"""
    def build(rng: random.Random) -> Iterator[Packet]:
        server, port = "198.51.100.194", 443
        parts = _home(rng, 900)
        if genuine:
            ports = Ports(rng)
            parts += [tcp_session(PHONE, server, ports(), port, T0 + 20 + k * 10.0, 100, 150, rng=rng)
                      for k in range(60)]
            return merge(*parts)
        sport = 45000
        parts.append(long_connection(PHONE, server, port, start=T0 + 20, duration=600, keepalive=10, sport=sport,
                                     rng=rng))
        p2s = Way(PHONE, server)
        parts.append(iter([(T0 + 20 + k * 10.0 + 0.5, p2s.tcp(rng.randrange(65536), sport, port,
                                                               rng.getrandbits(32), 0, RST, win=0))
                           for k in range(1, 60)]))
        return merge(*parts)
    return build


def _forged_nxdomain(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """160 NXDOMAIN answers for random names "from" the resolver to the laptop's ports, in 4 bursts,
    with no query (forged: over IPv6 no NAT stops them): a DGA "from" the laptop. Genuine: the laptop
    really asks for the names."""
    def build(rng: random.Random) -> Iterator[Packet]:
        streams = _home(rng, 1200) + _uses_resolver(rng, 1200)  # the laptop's resolver: it answers it
        r2l = Way(RESOLVER, LAPTOP, ttl=55)
        for burst in range(4):
            for i in range(40):
                name = random_name(rng, 18)
                t, sport = T0 + 10 + burst * 300 + i * 0.2, 40000 + burst * 100 + i
                if genuine:
                    streams.append(dns_query(LAPTOP, RESOLVER, name, None, t, sport=sport, rng=rng))
                else:
                    answer = dns_message(name, rng.randrange(65536), None, response=True)
                    streams.append(iter([(t, r2l.udp(rng.randrange(65536), 53, sport, answer))]))
        return merge(*streams)
    return build


def _long_keepalives(rng: random.Random) -> Iterator[Packet]:
    """A push channel pinging every 7 minutes, longer than the flow table's TCP idle timeout (300 s):
    the flow table cuts it into pieces, one per ping, for 3 hours."""
    return merge(*_home(rng, 600), _with_dns("push.example.com", "198.51.100.223", PHONE, T0 + 5, rng),
                 long_connection(PHONE, "198.51.100.223", 5223, start=T0 + 5, duration=3 * 3600, keepalive=420,
                                 rng=rng))


def _forged_upload(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """35 MB of segments from the laptop's address to RESOLVER:443 with no handshake (RESOLVER answers
    one RST): an 'exfiltration' to the house's resolver. Genuine: a real 35 MB upload to a server."""
    def build(rng: random.Random) -> Iterator[Packet]:
        parts = _home(rng, 300) + _uses_resolver(rng, 300)
        if genuine:
            parts.append(tcp_session(LAPTOP, "198.51.100.245", 51000, 443, T0 + 10, 35_000_000, 6000, 0.05,
                                     rate=5e6, rng=rng))
            return merge(*parts)
        l2r, r2l = Way(LAPTOP, RESOLVER), Way(RESOLVER, LAPTOP)
        chunk = bytes(1448)

        def segments() -> Iterator[Packet]:
            seq = rng.getrandbits(32)
            for k in range(35_000_000 // 1448):
                yield T0 + 10.01 + k * 0.0003, l2r.tcp(k, 51000, 443, (seq + k * 1448) & 0xFFFFFFFF, 1,
                                                       ACK | PSH, chunk)
                if k == 0:  # the server resets the first segment of a connection it does not know
                    yield T0 + 10.03, r2l.tcp(rng.randrange(65536), 443, 51000, 1, 0, RST, win=0)
        return merge(*parts, segments())
    return build


# --- benign look-alikes ---------------------------------------------------------------------------

def _updates_three_devices(rng: random.Random) -> Iterator[Packet]:
    """Three devices of one brand check the same update server once an hour (± 90 s), 14 hours."""
    streams = _home(rng, 600)
    ports = Ports(rng)
    for d, dev in enumerate((LAPTOP, PHONE, "192.168.1.12")):
        for h in range(14):
            t = T0 + 300 + 1700 * d / 2 + h * 3600 + rng.uniform(-90, 90)
            streams += [_with_dns("update.vendor.example.net", "198.51.100.155", dev, t, rng),
                        tls_session(dev, "198.51.100.155", "update.vendor.example.net", t, 2000, 5400,
                                    sport=ports(), rng=rng)]
    return merge(*streams)


def _ntp_two_devices(rng: random.Random) -> Iterator[Packet]:
    """Two devices poll one public NTP server at chrony's settled interval (1024 s), 8 hours."""
    return merge(*_home(rng, 600),
                 *(ntp_polling(dev, "198.51.100.124", start=T0 + 5 + 17 * d, interval=1024, count=28, rng=rng)
                   for d, dev in enumerate((LAPTOP, PHONE))))


def _bt_peer_port(rng: random.Random) -> int:
    return rng.randrange(10000, 65000)


BT_HANDSHAKE = b"\x13BitTorrent protocol" + bytes(8)


def _bittorrent(rng: random.Random, duration: float = 1800.0, n_peers: int = 40, client: str = LAPTOP
                ) -> Iterator[Packet]:
    """A BitTorrent client on a normal day: TCP peer connections (handshake, then 4-byte keep-alives
    every 120 s inside the connection), uTP/UDP keep-alives every ~61 s to each peer (74-128-byte
    datagrams; each one its own flow, as after an idle timeout), DHT pings, and peers that connect
    in to the client's port 51413. No peer is named by DNS."""
    streams = _home(rng, duration)
    peers = [f"{rng.choice((45, 62, 77, 81, 88, 93, 109, 151, 178, 185))}.{rng.randrange(1, 255)}."
             f"{rng.randrange(1, 255)}.{rng.randrange(1, 255)}" for _ in range(n_peers)]
    ports = [_bt_peer_port(rng) for _ in peers]
    tcp_ports = Ports(rng)
    for i, (peer, port) in enumerate(zip(peers, ports)):
        t = T0 + 5 + rng.uniform(0, 60)
        if i % 3 == 0:  # a TCP peer connection with keep-alives inside it
            msgs: list[Message] = [("c", Content(68, BT_HANDSHAKE)), ("s", Content(68, BT_HANDSHAKE))]
            for k in range(int(duration // 120) - 1):
                msgs += [("c", Content(4, bytes(4)), 120.0 if k else 1.0), ("s", Content(4, bytes(4)))]
            streams.append(tcp_session(client, peer, tcp_ports(), port, t, messages=msgs, rng=rng))
        else:  # uTP: keep-alive datagrams ~every 61 s, each answered
            size = rng.choice((46, 60, 74, 100))
            for k in range(int(duration // 61)):
                tk = t + k * 61 + rng.uniform(0, 0.5)
                streams.append(udp_exchange(client, peer, 51413, port, tk,
                                            (("c", b"\x21\x00" + rng.randbytes(size - 2)),
                                             ("s", b"\x21\x00" + rng.randbytes(size - 2))), rng=rng))
    for k in range(int(duration // 20)):  # DHT: a ping to some node every 20 s
        node, nport = rng.choice(peers), rng.randrange(1025, 65000)
        streams.append(udp_exchange(client, node, 51413, nport, T0 + 7 + k * 20,
                                    (("c", b"d1:ad2:id20:" + rng.randbytes(20) + b"e1:q4:ping1:t2:aa1:y1:qe"),
                                     ("s", b"d1:rd2:id20:" + rng.randbytes(20) + b"e1:t2:aa1:y1:re")), rng=rng))
    for k in range(8):  # peers that connect in
        peer = rng.choice(peers)
        streams.append(tcp_session(peer, client, rng.randrange(30000, 60000), 51413, T0 + 30 + k * 200,
                                   messages=[("c", Content(68, BT_HANDSHAKE)),
                                             ("s", Content(68, BT_HANDSHAKE))], rng=rng))
    return merge(*streams)


def _bittorrent_churn(rng: random.Random, swarm: bool = True) -> Iterator[Packet]:
    """A busy BitTorrent client for an hour: the day above, and half of the 1,200 DHT nodes and 400
    peers it tries are gone (no answer; a peer's port is 51413 or 6881 a quarter of the time)."""
    streams = [_bittorrent(rng, 3600.0, 60)] if swarm else []  # swarm=False: the gone peers alone
    sports = Ports(rng)

    def default_port() -> int:  # clients' defaults are common: Transmission's 51413, libtorrent's 6881
        x = rng.random()
        return 51413 if x < 0.15 else 6881 if x < 0.25 else _bt_peer_port(rng)

    def somewhere() -> str:
        return f"{rng.choice((31, 46, 79, 84, 95, 176, 188, 213))}.{rng.randrange(1, 255)}." \
               f"{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
    for k in range(400):  # peers from the tracker and PEX that are gone: SYN, no answer
        streams.append(tcp_probe(LAPTOP, somewhere(), sports(), default_port(), T0 + 20 + k * 9.0,
                                 "filtered", rng=rng))
    for k in range(1200):  # DHT queries to nodes that are gone
        streams.append(udp_exchange(LAPTOP, somewhere(), 51413, default_port(), T0 + 15 + k * 3.0,
                                    (("c", b"d1:ad2:id20:" + rng.randbytes(20) + b"e1:q4:ping1:t2:bb1:y1:qe"),),
                                    rng=rng))
    return merge(*streams)


def _swarm(rng: random.Random) -> Iterator[Packet]:
    """Another P2P swarm (a Kademlia-like overlay, e.g. a file-sharing or a game client): UDP pings
    every 30 s to 25 peers on their own random ports, each answered."""
    streams = _home(rng, 1200)
    peers = [(f"{rng.randrange(80, 200)}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}",
              rng.randrange(2000, 65000)) for _ in range(25)]
    for peer, port in peers:
        t = T0 + rng.uniform(0, 30)
        for k in range(40):
            streams.append(udp_exchange(PHONE, peer, 4672, port, t + k * 30 + rng.uniform(0, 0.2),
                                        (("c", rng.randbytes(35)), ("s", rng.randbytes(35))), rng=rng))
    return merge(*streams)


def _push(rng: random.Random) -> Iterator[Packet]:
    """Messaging and push keep-alives: long TLS connections to 5228 and 5222 with small pings."""
    return merge(*_home(rng, 1800), _with_dns("mtalk.example.com", "198.51.100.228", PHONE, T0 + 5, rng),
                 long_connection(PHONE, "198.51.100.228", 5228, start=T0 + 5, duration=1800, keepalive=60, rng=rng),
                 long_connection(LAPTOP, "198.51.100.222", 5222, start=T0 + 8, duration=1800, keepalive=45, rng=rng))


def _ntp(rng: random.Random) -> Iterator[Packet]:
    return merge(*_home(rng, 300), ntp_polling(PHONE, "198.51.100.124", start=T0 + 1, interval=16, count=120,
                                               rng=rng))


def _updates(rng: random.Random) -> Iterator[Packet]:
    """OS and app update checks: an OS every 4 h, an app every hour (±5 min), over 13 hours."""
    streams = _home(rng, 600)
    ports = Ports(rng)
    for k in range(4):
        t = T0 + 60 + k * 4 * 3600
        streams += [_with_dns("update.example.org", "198.51.100.50", LAPTOP, t, rng),
                    tls_session(LAPTOP, "198.51.100.50", "update.example.org", t, 900, 4000, sport=ports(), rng=rng)]
    for k in range(13):
        t = T0 + 120 + k * 3600 + rng.uniform(-300, 300)
        streams += [_with_dns("app.example.net", "198.51.100.51", PHONE, t, rng),
                    tls_session(PHONE, "198.51.100.51", "app.example.net", t, 600, 2500, sport=ports(), rng=rng)]
    return merge(*streams)


def _streaming(rng: random.Random) -> Iterator[Packet]:
    """A video stream: 100 segments of 15-25 kB, one every 6 s, over one kept-alive HTTPS connection."""
    msgs: list[Message] = [("c", Content(500)), ("s", Content(4000))]
    for _ in range(100):
        msgs += [("c", Content(300), 6.0), ("s", Content(rng.randint(15_000, 25_000)))]
    return merge(*_home(rng, 600), _with_dns("video.example.com", "198.51.100.90", LAPTOP, T0 + 5, rng),
                 tcp_session(LAPTOP, "198.51.100.90", 50500, 443, T0 + 5, messages=msgs, rate=2e7, rng=rng))


def _smart_home(rng: random.Random) -> Iterator[Packet]:
    """Smart-home devices and their clouds: a plug and a camera keep MQTT-over-TLS connections with a
    ping every 60 s; a TV keeps one to its cloud with a ping every 4 min; a hub asks its cloud every 2 h."""
    tv, plug, cam = "192.168.1.20", "192.168.1.30", "192.168.1.31"
    streams = [
        *_home(rng, 3600),
        long_connection(plug, "198.51.100.70", 8883, start=T0 + 2, duration=3600, keepalive=60, rng=rng),
        long_connection(cam, "198.51.100.71", 8883, start=T0 + 3, duration=3600, keepalive=60, rng=rng),
        long_connection(tv, "198.51.100.72", 443, start=T0 + 4, duration=3600, keepalive=240, rng=rng)]
    ports = Ports(rng)
    for k in range(3):
        streams.append(tls_session("192.168.1.32", "198.51.100.73", "hub.example.com", T0 + 10 + k * 7200,
                                   500, 1200, sport=ports(), rng=rng))
    return merge(*streams)


def _video_call(rng: random.Random) -> Iterator[Packet]:
    """A 10-minute video call: one UDP media stream to a relay on 3478, STUN checks, a signalling TLS."""
    return merge(*_home(rng, 600), _with_dns("meet.example.com", "198.51.100.95", LAPTOP, T0 + 1, rng),
                 tls_session(LAPTOP, "198.51.100.95", "meet.example.com", T0 + 1, 2000, 8000, rng=rng),
                 udp_stream(LAPTOP, "198.51.100.96", 50001, 3478, T0 + 3, 12_000, size=1000, interval=0.05,
                            rng=rng))


def _backup(rng: random.Random) -> Iterator[Packet]:
    """A nightly backup: 30 MB uploaded over HTTPS to a named backup service."""
    return merge(*_home(rng, 300), _with_dns("backup.example.com", "198.51.100.99", LAPTOP, T0 + 10, rng),
                 tls_session(LAPTOP, "198.51.100.99", "backup.example.com", T0 + 10, 30_000_000, 8000,
                             rate=5e6, rng=rng))


def _browsing(rng: random.Random) -> Iterator[Packet]:
    return merge(*_home(rng, 1800), normal_browsing(LAPTOP, 60, 1800, start=T0, resolver=ROUTER, rng=rng))


# --- a LAN on global IPv6 (no NAT): its hosts are "ours" only by the config's network.local ----------
# (`slipsq config init` writes the LAN interfaces' global prefixes there; `extra["config"]` is what
# bench/detection.py replays these scenarios with)

V6_LAN = "2001:db8:1::/64"
V6_PHONE, V6_NAS, V6_VICTIM = "2001:db8:1::20", "2001:db8:1::10", "2001:db8:1::66"
CNC6 = "2001:db8:ff::66"
V6_SITE = {"network.local": [V6_LAN]}


def _v6_exfil(rng: random.Random) -> Iterator[Packet]:
    """_exfil over IPv6: 30 MB from a LAN host's global address to one unnamed server."""
    return merge(*_home(rng, 300), tcp_session(V6_VICTIM, CNC6, 51000, 8443, T0 + 10, 30_000_000, 6000, 0.05,
                                               rate=5e6, rng=rng))


def _polling(client: str, server: str, name: str = "nas.home.arpa",
             polls: int = 120) -> Callable[[random.Random], Iterator[Packet]]:
    """A client polls a server's port 8123 (TLS) every 30 s, `polls` times: a phone's
    home-automation app polling the NAS (LAN traffic, which a gateway between two of its LANs, or a
    capture on the LAN, sees), or an outside uptime monitor polling its forwarded port. Regular as a
    beacon, and its letters match an HTTP C&C model."""
    def build(rng: random.Random) -> Iterator[Packet]:
        ports = Ports(rng)
        sessions = [tls_session(client, server, name, T0 + 5 + i * 30 + rng.uniform(-0.5, 0.5), 300, 1800,
                                sport=ports(), port=8123, rng=rng) for i in range(polls)]
        return merge(*_home(rng, polls * 30), *sessions)
    return build



def _forged_scan_v6(genuine: bool = False) -> Callable[[random.Random], Iterator[Packet]]:
    """Internet clients use the NAS over IPv6 (HTTPS); an off-path attacker sends SYNs with the NAS's
    address to 150 ports of a LAN host (IPv6: no NAT, and no reverse-path filter unless the admin
    adds one), which answers the NAS on the LAN: the gateway sees no answer. With network.local the
    NAS is local, so only the in-use guard's IPv6 rule keeps it unblocked. genuine: the same scan,
    for real, from a LAN host no outside client uses."""
    def build(rng: random.Random) -> Iterator[Packet]:
        ports = Ports(rng)
        parts = _home(rng, 1500)
        parts += [tls_session(f"2001:db8:ff::{1 + k:x}", V6_NAS, "cloud.example.org",
                              T0 + 5 + k * 55 + rng.uniform(0, 50), 400, 30000, sport=ports(), rng=rng)
                  for k in range(25)]
        scanner = V6_PHONE if genuine else V6_NAS
        parts += [tcp_probe(scanner, V6_VICTIM, 41000, p, T0 + 600 + p * 0.05, "filtered", rng=rng)
                  for p in range(1, 151)]
        return merge(*parts)
    return build


def _sip_phone(rng: random.Random) -> Iterator[Packet]:
    """A VoIP phone (or the router's own SIP client) keeps its registration with the provider alive:
    SIP OPTIONS every 90 s and a REGISTER every 10 min over UDP 5060, for 3 hours."""
    phone, provider = "192.168.1.40", "198.51.100.60"
    parts = [*_home(rng, 10800), _with_dns("sip.provider.example", provider, phone, T0 + 5, rng)]
    for i in range(120):
        t = T0 + 5 + i * 90 + rng.uniform(-0.2, 0.2)
        msgs = (("c", rng.randbytes(480)), ("s", rng.randbytes(360)))
        parts.append(udp_exchange(phone, provider, 5060, 5060, t, msgs, rtt=0.03, rng=rng))
    for i in range(18):
        t = T0 + 50 + i * 600 + rng.uniform(-0.2, 0.2)
        msgs = (("c", rng.randbytes(620)), ("s", rng.randbytes(540)))
        parts.append(udp_exchange(phone, provider, 5060, 5060, t, msgs, rtt=0.03, rng=rng))
    return merge(*parts)


def _checks(resolver: str = ROUTER) -> Callable[[random.Random], Iterator[Packet]]:
    """A phone's captive-portal probe (HTTP GET /generate_204) every 5 minutes for 6 hours, its name
    answered by `resolver` now and then (the house's, or a public one some devices ask directly,
    hard-coded): beacon.allow_domains names it."""
    def build(rng: random.Random) -> Iterator[Packet]:
        server, name = "198.51.100.204", "connectivitycheck.gstatic.com"
        ports = Ports(rng)
        parts = _home(rng, 21600)
        for i in range(72):
            t = T0 + 5 + i * 300
            if i % 12 == 0:
                parts.append(_with_dns(name, server, PHONE, t, rng, resolver=resolver))
            parts.append(http_session(PHONE, server, name, t, "/generate_204", 0, sport=ports(),
                                      status="204 No Content", rng=rng))
        return merge(*parts)
    return build


_connectivity_checks = _checks()
_public_resolver_checks = _checks("8.8.8.8")


def _own_resolver(inner: Callable[[random.Random], Iterator[Packet]], name: str,
                  resolver: str = CNC) -> Callable[[random.Random], Iterator[Packet]]:
    """`inner`, and before it the victim asks `resolver` (by default the C&C's own DNS server) for
    `name`, a name the detectors let pass (a time or a cloud storage service), and is told it is CNC:
    a claim any DNS server can make."""
    def build(rng: random.Random) -> Iterator[Packet]:
        return merge(inner(rng), _with_dns(name, CNC, VICTIM, T0 + 5, rng, resolver=resolver))
    return build


def _udp_beacon(rng: random.Random) -> Iterator[Packet]:
    """A bot's UDP beacon: a small exchange with its C&C on 7777 every 60 s (± 5 %), for an hour."""
    parts = _home(rng, 3600)
    for i in range(60):
        t = T0 + 10 + i * 60 + rng.uniform(-3, 3)
        msgs = (("c", rng.randbytes(90)), ("s", rng.randbytes(140)))
        parts.append(udp_exchange(VICTIM, CNC, 41000 + i, 7777, t, msgs, rtt=0.05, rng=rng))
    return merge(*parts)


def _periodic_service(client: str, server: str, name: str, interval: float, hours: float,
                      up: tuple[int, int], down: tuple[int, int]) -> Callable[[random.Random], Iterator[Packet]]:
    """A device calling its vendor's named service over TLS every `interval` s (± 2 %), the name
    resolved now and then: a camera's snapshot uploads, an app's telemetry."""
    def build(rng: random.Random) -> Iterator[Packet]:
        ports = Ports(rng)
        parts = _home(rng, hours * 3600)
        for i in range(int(hours * 3600 / interval)):
            t = T0 + 5 + i * interval + rng.uniform(-0.02, 0.02) * interval
            if i % 10 == 0:
                parts.append(_with_dns(name, server, client, t, rng))
            parts.append(tls_session(client, server, name, t, rng.randint(*up), rng.randint(*down), sport=ports(),
                                     rng=rng))
        return merge(*parts)
    return build


# --- look-alikes found 2026-12-07 by a hunt for benign home traffic that blocked -----------------------

GITHUB = "140.82.121.4"
V6_LAPTOP = "2001:db8:1::30"


def _git_autofetch(repos: int, period: float, hours: float) -> Callable[[random.Random], Iterator[Packet]]:
    """VS Code with git.autofetch (every 180 s by default) on `repos` repositories cloned from
    github.com over ssh: one short `git fetch` per repository each period (key exchange, publickey
    login, ref advertisement, close); github.com looked up now and then."""
    def build(rng: random.Random) -> Iterator[Packet]:
        ports = Ports(rng)
        parts = _home(rng, hours * 3600)
        for k in range(int(hours * 3600 // period)):
            t = T0 + 30 + k * period + rng.uniform(0, 2)
            if k % 10 == 0:
                parts.append(_with_dns("github.com", GITHUB, LAPTOP, t, rng))
            for r in range(repos):
                parts.append(ssh_session(LAPTOP, GITHUB, t + r * 1.5, sport=ports(), auth_attempts=1, success=True,
                                         data_bytes=rng.randint(1500, 4000), rng=rng))
        return merge(*parts)
    return build


def _uptime_monitor_ssh(rng: random.Random) -> Iterator[Packet]:
    """The owner's monitor on a VPS (Uptime Kuma's 'TCP Port' check, every 60 s) watches the NAS's
    forwarded ssh port: it connects, the server sends its banner, the monitor closes without a word."""
    ports = Ports(rng)
    parts = _home(rng, 3600)
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    for k in range(60):
        parts.append(tcp_session("198.51.100.9", NAS, ports(), 22, T0 + 5 + k * 60 + rng.uniform(0, 0.2),
                                 messages=[("s", Content(len(banner), banner))], closer="client", rtt=0.02, rng=rng))
    return merge(*parts)


def _traceroute(src: str, dst: str, start: float, rng: random.Random, reach_hop: int | None = None,
                max_hops: int = 30) -> Iterator[Packet]:
    """`traceroute DST` as Linux and macOS run it: UDP probes to port 33434 + n for the n-th probe, 3 a
    hop, 16 in flight; routers answer ICMP time exceeded, the destination (reached at `reach_hop`)
    port unreachable; with reach_hop None it filters UDP and the last hops stay silent (* * *)."""
    out, pkts, n = Way(src, dst, ttl=1), [], 0
    sport0 = rng.randrange(40000, 60000)
    for hop in range(1, max_hops + 1):
        for _ in range(3):
            t = start + (n // 16) * 0.3 + (n % 16) * 0.0005 + hop * 0.0001
            out.ttl = hop
            frame = out.udp(rng.randrange(65536), sport0 + n, 33434 + n, bytes(32))
            pkts.append((t, frame))
            quoted = frame[14:14 + 28]
            if reach_hop is not None and hop >= reach_hop:
                pkts.append((t + hop * 0.004, Way(dst, src, ttl=52).icmp(rng.randrange(65536), 3, 3, 0, 0, quoted)))
            elif hop <= 11:  # the path answers up to hop 11, then the target's network is silent
                pkts.append((t + hop * 0.004, Way(f"198.18.{hop}.1", src, ttl=64 - hop).icmp(
                    rng.randrange(65536), 11, 0, 0, 0, quoted)))
            n += 1
        if reach_hop is not None and hop >= reach_hop:
            break
    pkts.sort(key=lambda p: p[0])
    return iter(pkts)


def _traceroutes(max_hops: int, second: bool) -> Callable[[random.Random], Iterator[Packet]]:
    """Someone with lag runs traceroute to a game server that filters UDP, and (`second`) then to a site
    that answers."""
    def build(rng: random.Random) -> Iterator[Packet]:
        game, site = "185.60.112.157", "93.184.215.14"
        parts = _home(rng, 1200)
        parts += [_with_dns("eu-west.game.example.com", game, LAPTOP, T0 + 60, rng),
                  _traceroute(LAPTOP, game, T0 + 60, rng, max_hops=max_hops)]
        if second:
            parts += [_with_dns("www.example.org", site, LAPTOP, T0 + 200, rng),
                      _traceroute(LAPTOP, site, T0 + 200, rng, reach_hop=12)]
        return merge(*parts)
    return build


def _dns_tunnel(rng: random.Random) -> Iterator[Packet]:
    """dnscat2 through the house's resolver: about one TXT query a second for 15 minutes, each a fresh
    hex label (its encrypted data, 18-60 characters) under the attacker's domain, answered with the
    server's data in hex."""
    parts = _home(rng, 1200)
    t = T0 + 30
    for _ in range(900):
        label = rng.randbytes(rng.randint(9, 30)).hex()
        parts.append(_with_dns(f"{label}.tun.c2-updates.net", None, VICTIM, t, rng,
                               txt=rng.randbytes(rng.randint(9, 40)).hex().encode()))
        t += rng.uniform(0.6, 1.4)
    return merge(*parts)


def _dns_lookup_apis(rng: random.Random) -> Iterator[Packet]:
    """DNS used as a lookup API, and CDNs' random names: a PC with Sophos asking a file-hash
    reputation name per file (600 in an hour of activity), the NAS's mail filter asking Spamhaus
    about each sender, and a browser meeting 40 CloudFront distributions (short random labels)."""
    parts = _home(rng, 3600)
    for i in range(600):
        h = rng.randbytes(20).hex()
        parts.append(_with_dns(f"{h[:32]}.{h[32:]}.sxl.sophosxl.net", "127.0.0.1", LAPTOP,
                               T0 + 10 + i * 5.5 + rng.uniform(0, 2), rng))
    for i in range(200):
        ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
        parts.append(_with_dns(f"{ip}.zen.spamhaus.org", None, NAS, T0 + 20 + i * 17, rng))
    for i in range(40):
        label = "d" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(13))
        parts.append(_with_dns(f"{label}.cloudfront.net", f"198.51.100.{100 + i}", PHONE, T0 + 40 + i * 80, rng))
    return merge(*parts)


def _shadowsocks(rng: random.Random) -> Iterator[Packet]:
    """An Outline (Shadowsocks AEAD) VPN key names its server by address and port: one TCP connection
    per proxied connection, ~400 an hour of browsing, each side opening with a random 32-byte salt
    (no header): about 1 first payload in 128 starts with 0xFF, once "telnet" to the decoder."""
    server, ports, parts = "203.0.113.120", Ports(rng), _home(rng, 3600)
    t, k = T0 + 30, 0
    while t < T0 + 3530:
        salts = [rng.randbytes(64) for _ in range(2)]
        if k % 64 == 5:  # the 0xFF a random salt begins with, one side or the other, as often as chance
            salts[k % 2] = b"\xff" + salts[k % 2][1:]
        messages: list[Message] = [("c", Content(rng.randint(350, 1200), salts[0])),
                                   ("s", Content(max(200, int(rng.lognormvariate(9.5, 1.3))), salts[1]))]
        parts.append(tcp_session(LAPTOP, server, ports(), 38117, t, messages=messages, rtt=0.04, rate=3e6, rng=rng))
        t, k = t + rng.expovariate(400 / 3500), k + 1
    return merge(*parts)


def _tailscale_direct(rng: random.Random) -> Iterator[Packet]:
    """The NAS pushes to the owner's VPS over Tailscale's direct path every 5 minutes (a cron'd
    rsync, a scrape): disco ping/pong, a WireGuard handshake, the data, heartbeats every 3 s for the
    45 s a session stays active, then silence past udp_idle: one flow a job, 41641 <-> 41641, the
    peer's address from the coordination server, never from DNS (a hunt, 2026-12-07)."""
    vps, parts = "203.0.113.50", _home(rng, 7200)
    parts.append(_with_dns("controlplane.tailscale.com", "192.200.0.101", NAS, T0 + 2, rng))
    parts.append(long_connection(NAS, "192.200.0.101", 443, start=T0 + 3, duration=7190, keepalive=60, rng=rng))
    for k in range(24):
        t = T0 + 20 + k * 300 + rng.uniform(0, 1.5)
        msgs: list[tuple[str, bytes]] = [("c", rng.randbytes(92)), ("s", rng.randbytes(92)), ("c", rng.randbytes(148)),
                               ("s", rng.randbytes(92)), ("c", rng.randbytes(32))]
        for _ in range(rng.randint(6, 10)):
            msgs += [("c", rng.randbytes(rng.randint(200, 1300))), ("s", rng.randbytes(rng.randint(80, 1300)))]
        parts.append(udp_exchange(NAS, vps, 41641, 41641, t, msgs, rtt=0.03, interval=0.01, rng=rng))
        beat = [("c", rng.randbytes(92)), ("s", rng.randbytes(92))]  # disco ping/pong
        parts += [udp_exchange(NAS, vps, 41641, 41641, t + 2 + h * 3, beat, rtt=0.03, rng=rng) for h in range(1, 16)]
    return merge(*parts)


def _eth_staking(rng: random.Random) -> Iterator[Packet]:
    """A home Ethereum staking box (geth + Lighthouse on the ports every staking guide forwards: 30303
    and 9000, tcp and udp) for an hour: discovery pings from its own 30303/9000 to 500 nodes each,
    most on the default ports and more than half gone; 160 dials each, many failing; 25 long peer
    connections; 40 peers dialling in. Portscan blocked the node (a hunt, 2026-12-07): missed duties."""
    node, ports, parts = "192.168.1.60", Ports(rng), _home(rng, 3600)

    def somewhere() -> str:
        first = rng.choice((3, 18, 34, 35, 45, 51, 65, 78, 88, 95, 135, 136, 138, 144, 157, 159, 167, 172, 178))
        return f"{first}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"

    def port(default: int) -> int:
        return default if rng.random() < 0.8 else rng.randrange(1025, 65000)

    for own in (30303, 9000):
        for k in range(500):
            t = T0 + 10 + k * 7.16 + rng.uniform(0, 3)
            msgs = [("c", rng.randbytes(rng.randint(98, 180)))]
            if rng.random() >= 0.55:
                msgs.append(("s", rng.randbytes(rng.randint(98, 1200))))
            parts.append(udp_exchange(node, somewhere(), own, port(own), t, msgs, rtt=0.08, rng=rng))
        for k in range(160):
            peer, t, x = somewhere(), T0 + 15 + k * 22.3 + rng.uniform(0, 3), rng.random()
            if x < 0.55:
                parts.append(tcp_probe(node, peer, ports(), port(own), t, "filtered" if x < 0.385 else "closed",
                                       rtt=0.08, rng=rng))
            else:
                parts.append(tcp_session(node, peer, ports(), port(own), t, messages=[
                    ("c", Content(rng.randint(300, 420))), ("s", Content(rng.randint(200, 400))),
                    ("c", Content(rng.randint(150, 300))), ("s", Content(rng.randint(60, 3000)))], rtt=0.08, rng=rng))
    for k in range(25):
        parts.append(long_connection(node, somewhere(), 30303 if k % 2 else 9000, start=T0 + 20 + k * 3,
                                     duration=3500, keepalive=15, rng=rng))
    for k in range(40):
        hello: list[Message] = [("c", Content(330)), ("s", Content(300)), ("c", Content(200)),
                                ("s", Content(rng.randint(500, 20000)))]
        parts.append(tcp_session(somewhere(), node, rng.randrange(30000, 60000), 30303 if k % 2 else 9000,
                                 T0 + 30 + k * 85, messages=hello, rtt=0.08, rng=rng))
    return merge(*parts)


def _doh_reconnects(rng: random.Random) -> Iterator[Packet]:
    """A browser's DNS over HTTPS to 1.1.1.1: its connection closed when idle, a new one about every
    minute for background lookups (the house's resolver names cloudflare-dns.com once). Blocking
    1.1.1.1 would take every device's DNS that uses it (a hunt, 2026-12-07: beacon blocked it)."""
    ip, name, ports, parts = "1.1.1.1", "cloudflare-dns.com", Ports(rng), _home(rng, 5400)
    parts.append(_with_dns(name, ip, LAPTOP, T0 + 10, rng))
    t = T0 + 10
    while t < T0 + 5400:
        parts.append(tls_session(LAPTOP, ip, name, t, rng.randint(300, 500), rng.randint(600, 1200), sport=ports(),
                                 certificate_bytes=2500, rng=rng))
        t += 60 * rng.uniform(0.8, 1.2)
    return merge(*parts)


def _vlan_logins(rng: random.Random) -> Iterator[Packet]:
    """The gateway routes between VLANs: a Nextcloud on the server VLAN opens a MariaDB connection
    on the NAS per request (dbpersistent off, desktop clients polling: one every ~12 s), and Home
    Assistant's command_line sensor logs in to a Pi by ssh every 60 s (a hunt, 2026-12-07)."""
    app, ha, pi, ports, parts = "192.168.20.10", "192.168.20.4", "192.168.1.50", Ports(rng), _home(rng, 3600)
    greet = b"\x4a\x00\x00\x00\x0a" + b"10.11.6-MariaDB\x00"
    t = T0 + 5
    while t < T0 + 3590:
        messages: list[Message] = [("s", Content(len(greet) + 60, greet)), ("c", Content(180)), ("s", Content(11)),
                                   ("c", Content(rng.randint(200, 900))), ("s", Content(rng.randint(500, 8000))),
                                   ("c", Content(5))]
        parts.append(tcp_session(app, NAS, ports(), 3306, t, messages=messages, rtt=0.0005, rng=rng))
        t += rng.expovariate(1 / 12.0)
    parts += [ssh_session(ha, pi, T0 + 15 + k * 60 + rng.uniform(0, 0.5), sport=ports(), auth_attempts=1, success=True,
                          data_bytes=rng.randint(300, 400), rtt=0.001, rng=rng) for k in range(60)]
    return merge(*parts)


def _induced_lookups(rng: random.Random) -> Iterator[Packet]:
    """A page (or an ad, or a mail) with 150 pictures at random hex subdomains of each of four
    domains nobody owns: the laptop's browser asks for their addresses, all NXDOMAIN, in 3 minutes
    (a review found this blocked the host that read it, 2026-12-07)."""
    parts = _home(rng, 1200)
    for k in range(600):
        name = f"{rng.randbytes(16).hex()}.img.nobody-{k % 4}.net"
        parts.append(_with_dns(name, None, LAPTOP, T0 + 60 + k * 0.3, rng))
    return merge(*parts)


def _inbound_logins(rng: random.Random) -> Iterator[Packet]:
    """The owner at the office has VS Code open on 3 repositories of the home Gitea (ssh forwarded to
    the NAS): git autofetch every 180 s, three short sessions with a publickey login each."""
    office, ports = "198.51.100.140", Ports(rng)
    parts = _home(rng, 3600)
    for k in range(20):
        t = T0 + 30 + k * 180 + rng.uniform(0, 2)
        parts += [ssh_session(office, NAS, t + r * 1.5, sport=ports(), auth_attempts=1, success=True,
                              data_bytes=rng.randint(1500, 4000), rng=rng) for r in range(3)]
    return merge(*parts)


def _ftp_uploads(rng: random.Random) -> Iterator[Packet]:
    """A camera at a second site uploads each motion event's snapshot by FTP to the home NAS (port 21
    forwarded): a control connection (login, PASV, STOR) and a passive data connection, ~30 an hour."""
    shop, ports = "203.0.113.45", Ports(rng)
    parts = _home(rng, 3600)
    t = T0 + 20
    while t < T0 + 3500:
        control: list[Message] = [
            ("s", Content(27, b"220 NAS FTP server ready.\r\n")), ("c", Content(13, b"USER camera\r\n")),
            ("s", Content(34, b"331 Password required for camera\r\n")), ("c", Content(15, b"PASS s3cret99\r\n")),
            ("s", Content(28, b"230 User camera logged in\r\n")), ("c", Content(8, b"TYPE I\r\n")),
            ("s", Content(21, b"200 Type set to I\r\n")), ("c", Content(6, b"PASV\r\n")),
            ("s", Content(50, b"227 Entering Passive Mode\r\n")), ("c", Content(30, b"STOR snapshot.jpg\r\n")),
            ("s", Content(22, b"150 Opening BINARY\r\n")), ("s", Content(23, b"226 Transfer complete\r\n"), 0.8),
            ("c", Content(6, b"QUIT\r\n")), ("s", Content(14, b"221 Goodbye.\r\n"))]
        parts += [tcp_session(shop, NAS, ports(), 21, t, messages=control, rtt=0.025, closer="server", rng=rng),
                  tcp_session(shop, NAS, ports(), rng.randrange(50000, 50100), t + 0.35,
                              messages=[("c", Content(rng.randint(180_000, 420_000)))], rtt=0.025, rate=2e6, rng=rng)]
        t += rng.expovariate(1 / 110.0) + 5
    return merge(*parts)


def _syncthing(rng: random.Random) -> Iterator[Packet]:
    """Syncthing on the NAS sends a 60 MB folder to the owner's device at another home: the peer's
    address comes from global discovery (HTTPS), never from DNS; BEP runs over TCP 22000 in TLS
    whose ClientHello names no server (Go's crypto/tls with no ServerName), ALPN bep/1.0; the peer
    pulls 128 KiB blocks in batches of 16, then pings every 90 s."""
    peer, discovery, ports = "85.214.33.17", "139.59.84.212", Ports(rng)
    parts = _home(rng, 1800)
    parts += [_with_dns("discovery-v4.syncthing.net", discovery, NAS, T0 + 5, rng),
              tls_session(NAS, discovery, "discovery-v4.syncthing.net", T0 + 5, 700, 900, sport=ports(), rng=rng)]
    hello, answer, record = client_hello("", rng, alpn=("bep/1.0",)), server_hello(rng), b"\x17\x03\x03"
    messages: list[Message] = [
        ("c", Content(len(hello), hello)), ("s", Content(len(answer) + 1400, answer, TLS_FILL)),
        ("c", Content(1500, record, TLS_FILL)), ("s", Content(1300, record, TLS_FILL)),  # Hello, ClusterConfig
        ("c", Content(180_000, record, TLS_FILL)), ("s", Content(2_000, record, TLS_FILL))]  # the Indexes
    for _ in range(60_000_000 // (16 * 131_200) + 1):  # the peer's requests and the NAS's blocks
        messages += [("s", Content(16 * 110, record, TLS_FILL)), ("c", Content(16 * 131_200, record, TLS_FILL))]
    for _ in range(10):
        messages += [("c", Content(60, record, TLS_FILL), 90.0), ("s", Content(60, record, TLS_FILL))]
    parts.append(tcp_session(NAS, peer, ports(), 22000, T0 + 8, messages=messages, rate=4e6, close="none", rng=rng))
    return merge(*parts)


def _mtproto(parts: int, part: int = 524_288) -> list[Message]:
    """An MTProto connection over TCP (obfuscated: its 64-byte random header, then encrypted
    messages; no TLS hello, no server name) carrying `parts` file parts of `part` bytes up, each
    acknowledged by a short answer, then idle pings."""
    messages: list[Message] = [("c", Content(64)), ("c", Content(180)), ("s", Content(620))]  # init, config
    for _ in range(parts):
        messages += [("c", Content(part + 72)), ("s", Content(88))]  # upload.saveBigFilePart -> true
    return messages


def _telegram_upload(rng: random.Random) -> Iterator[Packet]:
    """A phone sends a 120 MB video in a Telegram chat: the app reaches its data centre by its built-in
    address (no DNS, MTProto with no TLS hello), keeps its main connection with pings, and uploads
    the file in 512 KiB parts over four parallel connections to the same data centre (a round-20
    finding: the exfil detector blocked the data centre the house's Telegram uses)."""
    dc, ports = "149.154.167.51", Ports(rng)
    main: list[Message] = [("c", Content(64)), ("c", Content(300)), ("s", Content(2_400))]
    for _ in range(25):
        main += [("c", Content(72), 55.0), ("s", Content(72))]  # ping_delay_disconnect every ~60 s
    parts = [tcp_session(PHONE, dc, ports(), 443, T0 + 5, messages=main, close="none", rng=rng)]
    parts += [tcp_session(PHONE, dc, ports(), 443, T0 + 120 + k * 0.2, messages=_mtproto(58), rate=2e6, rng=rng)
              for k in range(4)]
    return merge(*_home(rng, 1500), *parts)


def _exfil_mtproto_lookalike(rng: random.Random) -> Iterator[Packet]:
    """The twin of telegram-upload: the same MTProto-looking upload (30 MB in parts, random bytes, no
    hello) to an address just outside Telegram's published networks: a bare address, which blocks."""
    return merge(*_home(rng, 600), tcp_session(VICTIM, "149.154.176.20", 51000, 443, T0 + 10, messages=_mtproto(58),
                                               rate=4e6, rng=rng))


# nmap's "-F": its top 100 TCP ports
NMAP_TOP100 = (7, 9, 13, 21, 22, 23, 25, 26, 37, 53, 79, 80, 81, 88, 106, 110, 111, 113, 119, 135, 139, 143, 144, 179,
               199, 389, 427, 443, 444, 445, 465, 513, 514, 515, 543, 544, 548, 554, 587, 631, 646, 873, 990, 993,
               995, 1025, 1026, 1027, 1028, 1029, 1110, 1433, 1720, 1723, 1755, 1900, 2000, 2001, 2049, 2121, 2717,
               3000, 3128, 3306, 3389, 3986, 4899, 5000, 5009, 5051, 5060, 5101, 5190, 5357, 5432, 5631, 5666, 5800,
               5900, 6000, 6001, 6646, 7070, 8000, 8008, 8009, 8080, 8081, 8443, 8888, 9100, 9999, 10000, 32768,
               49152, 49153, 49154, 49155, 49156, 49157)


def _nmap_tracker(rng: random.Random, busy: bool = False) -> Iterator[Packet]:
    """Home Assistant's Nmap Tracker (presence detection) with the options its config entries kept
    from before the default became an ARP ping, "-F -T4 --min-rate 10 --host-timeout 5s", every
    120 s: an ARP ping of the /24, then a SYN scan of the top 100 ports of each live host; the
    gateway answers RSTs on its 97 closed ports, a laptop drops them (a hunt, 2026-12-07: the
    gateway's closed ports were a vertical scan that blocked the Home Assistant box). busy: a LAN of
    twelve live hosts, where each closed port of ten or more of them is a horizontal scan too, and
    those still block (a LAN worm's sweep looks the same): a known wrong block."""
    ha, live = "192.168.1.5", {ROUTER: ({53, 80, 443}, "closed"), LAPTOP: ({135, 139, 445}, "filtered"),
                               NAS: ({22, 80, 443, 445, 5000}, "closed"), "192.168.1.40": ({80, 631, 9100}, "closed")}
    if busy:
        live.update({f"192.168.1.{60 + k}": ({1400} if k < 4 else set(), "closed") for k in range(8)})
    parts, ports = _home(rng, 1500), Ports(rng)
    for k in range(10):
        t = T0 + 20 + k * 120 + rng.uniform(0, 1)
        parts += [arp_who_has(ha, f"192.168.1.{i}", t + i * 0.004, reply=f"192.168.1.{i}" in live)
                  for i in range(1, 255) if f"192.168.1.{i}" != ha]
        t, sport = t + 1.5, ports()
        for ip, (open_ports, rest) in live.items():
            order = list(NMAP_TOP100)
            rng.shuffle(order)
            parts += [tcp_probe(ha, ip, sport, p, t + j * 0.002, "open" if p in open_ports else rest, rtt=0.002,
                                rng=rng) for j, p in enumerate(order)]
            t += 0.3
    return merge(*parts)


def _ping_browser(rng: random.Random) -> Iterator[Packet]:
    """A game's server browser measures each listed server's ping with an ICMP echo (32 bytes, once or
    twice), three refreshes in an hour of 250 servers each, the player changing the filter between
    them (640 distinct servers, 6 % not answering ICMP), then a match over UDP (a hunt, 2026-12-07:
    a critical ICMP sweep that grew for over a minute, doubled by the judge, blocked the gaming PC)."""
    pc, master = "192.168.1.30", "159.153.64.20"
    pool = [f"{rng.choice((5, 31, 37, 45, 77, 85, 91, 144, 176, 185, 193, 212))}.{rng.randrange(256)}."
            f"{rng.randrange(256)}.{rng.randrange(1, 255)}" for _ in range(1500)]
    parts = _home(rng, 3600)
    for r, t in enumerate((T0 + 60, T0 + 660, T0 + 2160)):
        parts += [_with_dns("gameservices.example.com", master, pc, t, rng),
                  tls_session(pc, master, "gameservices.example.com", t, 900, 60_000, sport=50100 + r, rng=rng)]
        listed = rng.sample(pool, 250)
        parts += [icmp_echo(pc, ip, t + 1 + i * 0.02, count=rng.choice((1, 2)), size=32, reply=rng.random() >= 0.06,
                            rtt=rng.uniform(0.015, 0.2)) for i, ip in enumerate(listed)]
        if r == 0:
            parts.append(udp_stream(pc, listed[3], 51000, 25200, t + 30, packets=20 * 60 * 30, size=400,
                                    interval=1 / 30, rng=rng))
    return merge(*parts)


def _ping_sweep(rng: random.Random) -> Iterator[Packet]:
    """The twin of ping-server-browser: an infected host pings 300 random Internet addresses, 4 %
    answering (most of the Internet is empty), as a worm looks for hosts before trying their ports."""
    targets = [f"{rng.choice((41, 77, 103, 177, 190))}.{rng.randrange(256)}.{rng.randrange(256)}."
               f"{rng.randrange(1, 255)}" for _ in range(300)]
    return merge(*_home(rng, 600), *(icmp_echo(VICTIM, ip, T0 + 10 + i * 0.5, reply=rng.random() < 0.04)
                                     for i, ip in enumerate(targets)))


def _vpn_backup(rng: random.Random) -> Iterator[Packet]:
    """A laptop's always-on VPN app (OpenVPN over TCP 443 to a server it chose by address: its first
    bytes are the client's hard reset) carries the nightly backup, 150 MB up with only the backup's
    own acknowledgements back, and the tunnel's pings every 10 s (a hunt, 2026-12-07: the VPN
    server was blocked as exfiltration and, with the app's kill switch, the laptop's Internet)."""
    api, vpn, ports = "104.16.208.203", "185.206.159.12", Ports(rng)
    hard_reset = (86).to_bytes(2, "big") + b"\x38" + rng.randbytes(85)
    messages: list[Message] = [("c", Content(len(hard_reset), hard_reset)), ("s", Content(100)), ("c", Content(420)),
                               ("s", Content(5200)), ("c", Content(1900)), ("s", Content(1300))]
    for k in range(120):
        messages += [("c", Content(85), 10.0), ("s", Content(85))]
        if k == 30:
            for _ in range(150):
                messages += [("c", Content(1_048_576)), ("s", Content(rng.randint(19_000, 22_000)))]
    parts = _home(rng, 1500)
    parts += [_with_dns("api.vpn.example", api, LAPTOP, T0 + 5, rng),
              tls_session(LAPTOP, api, "api.vpn.example", T0 + 5, 600, 9000, sport=ports(), rng=rng),
              tcp_session(LAPTOP, vpn, ports(), 443, T0 + 8, messages=messages, rtt=0.035, rate=4e6, rng=rng)]
    return merge(*parts)


def _port_check(rng: random.Random) -> Iterator[Packet]:
    """Uptime Kuma on the NAS, a "TCP port" monitor (its default interval, 60 s) of the owner's VPS's
    ssh, by address: it connects, the server's banner arrives, the monitor closes without a byte (a
    hunt, 2026-12-07: a critical beacon that blocked the VPS)."""
    vps, ports = "203.0.113.77", Ports(rng)
    banner = b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13.5\r\n"
    checks = [tcp_session(NAS, vps, ports(), 22, T0 + 7 + k * 60 + rng.uniform(0, 0.3),
                          messages=[("s", Content(len(banner), banner))], closer="client", rtt=0.03, rng=rng)
              for k in range(60)]
    return merge(*_home(rng, 3600), *checks)


def _unifi_inform(rng: random.Random) -> Iterator[Packet]:
    """Two UniFi access points and a switch adopted by a controller on the owner's VPS (set-inform
    http://<address>:8080/inform, no DNS): each POSTs /inform (AirControl Agent, a TNBU packet) every
    10 s on a new connection (a hunt, 2026-12-07: the controller was blocked as a beacon within two
    minutes, and the devices fell out of management)."""
    controller, ports = "203.0.113.30", Ports(rng)
    parts = _home(rng, 1800)
    for d, device in enumerate(("192.168.1.2", "192.168.1.3", "192.168.1.4")):
        for k in range(180):
            body = rng.randint(700, 1600)
            request = (f"POST /inform HTTP/1.1\r\nHost: {controller}:8080\r\nUser-Agent: AirControl Agent v1.0\r\n"
                       f"Content-Type: application/x-binary\r\nContent-Length: {body}\r\n\r\nTNBU").encode()
            answer = b"HTTP/1.1 200 \r\nContent-Type: application/x-binary\r\nContent-Length: 240\r\n\r\nTNBU"
            parts.append(tcp_session(device, controller, ports(), 8080,
                                     T0 + 3 + d * 3.3 + k * 10 + rng.uniform(-0.05, 0.05),
                                     messages=[("c", Content(len(request) + body, request)),
                                               ("s", Content(len(answer) + 236, answer))],
                                     rtt=0.02, closer="server", rng=rng))
    return merge(*parts)


def _server_browser(rng: random.Random) -> Iterator[Packet]:
    """A game's server browser (Steam's, a launcher's: Source A2S_INFO, one UDP query per listed
    server, ~100 a second from one socket): 1,500 servers on ten common query ports, a fifth of
    them gone (no answer), the list refreshed twice in the hour (a hunt, 2026-12-07: ten weak
    findings, one a port, added up to 1.07 and blocked the gaming PC)."""
    ports = (27015, 27015, 27015, 27016, 27017, 27018, 27020, 2303, 2403, 28016)
    listed = [(f"{rng.choice((46, 62, 77, 85, 92, 135, 144, 176, 185, 193))}.{rng.randrange(1, 255)}."
               f"{rng.randrange(1, 255)}.{rng.randrange(1, 254)}", rng.choice(ports)) for _ in range(1500)]
    gone = set(rng.sample(range(len(listed)), 300))
    query = b"\xff\xff\xff\xffTSource Engine Query\x00"
    parts = _home(rng, 3000)
    for refresh in range(2):
        for i, (server, port) in enumerate(listed):
            said: tuple[tuple[str, bytes], ...] = (("c", query),)
            if i not in gone:
                said += (("s", b"\xff\xff\xff\xffI" + rng.randbytes(120)),)
            parts.append(udp_exchange(LAPTOP, server, 50123, port, T0 + 60 + refresh * 1500 + i * 0.01, said,
                                      rtt=0.06, rng=rng))
    return merge(*parts)


def _tracepath(rng: random.Random) -> Iterator[Packet]:
    """`tracepath HOST` (iputils; Ubuntu's in place of traceroute) to a game server that filters UDP:
    one socket, probes of 1,472 bytes (path MTU) to port 44444 + a slot that wraps at 64, one a hop
    while routers answer (to hop 11), then three a silent hop, a second apart, to hop 30."""
    game = "185.60.112.157"
    parts = _home(rng, 1200)
    parts.append(_with_dns("eu-west.game.example.com", game, LAPTOP, T0 + 60, rng))
    out, pkts, t, slot = Way(LAPTOP, game), [], T0 + 60.0, 0
    sport = rng.randrange(40000, 60000)
    for hop in range(1, 31):
        for _ in range(1 if hop <= 11 else 3):
            out.ttl = hop
            frame = out.udp(rng.randrange(65536), sport, 44444 + slot, bytes(1472))
            pkts.append((t, frame))
            if hop <= 11:
                pkts.append((t + hop * 0.004, Way(f"198.18.{hop}.1", LAPTOP, ttl=64 - hop).icmp(
                    rng.randrange(65536), 11, 0, 0, 0, frame[14:14 + 28])))
                t += hop * 0.004 + 0.001
            else:
                t += 1.0
            slot = (slot + 1) & 63
    parts.append(iter(pkts))
    return merge(*parts)


LAN_HOSTS = ("192.168.1.1", LAPTOP, "192.168.1.12", NAS, "192.168.1.21", "192.168.1.30", "192.168.1.31",
             "192.168.1.40", "192.168.1.50")


def _lan_sweep(localsend: bool) -> Callable[[random.Random], Iterator[Packet]]:
    """The phone sweeps the /24: Fing's 'Scan network' (ARP who-has every address, then a ping to each
    host found), or LocalSend's legacy discovery when multicast fails (its spec, 3.2: a register
    request to every local address on 53317; a SYN to each host present, refused but by the laptop)."""
    def build(rng: random.Random) -> Iterator[Packet]:
        ports = Ports(rng)
        parts = _home(rng, 600)
        t0 = T0 + 120
        for i in range(1, 255):
            ip, t = f"192.168.1.{i}", t0 + i * 0.01
            if ip == PHONE:
                continue
            present = ip in LAN_HOSTS
            if ip != ROUTER:  # the gateway is in the ARP cache already
                parts.append(arp_who_has(PHONE, ip, t, reply=present))
            if localsend and ip == LAPTOP:
                parts.append(http_session(PHONE, ip, f"{ip}:53317", t + 0.002, "/api/localsend/v2/register", 180,
                                          sport=ports(), port=53317, rng=rng))
            elif localsend and present:
                parts.append(tcp_probe(PHONE, ip, ports(), 53317, t + 0.002, "closed", rtt=0.003, rng=rng))
        if not localsend:
            parts += [icmp_echo(PHONE, ip, t0 + 6 + j * 0.05, rtt=0.003) for j, ip in enumerate(LAN_HOSTS)]
        return merge(*parts)
    return build


def _upload_encrypted_dns(rng: random.Random) -> Iterator[Packet]:
    """Firefox with DNS over HTTPS (its default in the US: Cloudflare, port 443) uploads a 35 MB file to
    WeTransfer's S3 bucket: no plain DNS answer ever names the server, the TLS ClientHello does."""
    ports = Ports(rng)
    parts = _home(rng, 1800)
    msgs: list[Message] = [("c", Content(517)), ("s", Content(4500))]
    for _ in range(40):
        msgs += [("c", Content(rng.randint(90, 160)), rng.uniform(5, 40)), ("s", Content(rng.randint(150, 600)))]
    parts.append(tcp_session(LAPTOP, "162.159.61.4", ports(), 443, T0 + 2, messages=msgs, rng=rng))
    parts.append(tls_session(LAPTOP, "104.18.20.35", "wetransfer.com", T0 + 20, 3000, 60000, sport=ports(), rng=rng))
    parts.append(tls_session(LAPTOP, "52.216.8.100", "wetransfer-eu-prod-outgoing.s3.eu-west-1.amazonaws.com",
                             T0 + 40, 35_000_000, 12000, sport=ports(), rate=2.5e6, rng=rng))
    return merge(*parts)


def _upload_private_dns(rng: random.Random) -> Iterator[Packet]:
    """An Android phone with Private DNS set to dns.google (DNS over TLS, 853) shares a 45 MB video to
    Google Photos."""
    ports = Ports(rng)
    parts = _home(rng, 1800)
    for k in range(6):
        msgs: list[Message] = [("c", Content(517)), ("s", Content(4000))]
        for _ in range(rng.randint(3, 10)):
            msgs += [("c", Content(rng.randint(80, 120)), rng.uniform(0.5, 20)), ("s", Content(rng.randint(120, 400)))]
        parts.append(tcp_session(PHONE, "8.8.8.8", ports(), 853, T0 + 5 + k * 300, messages=msgs, rng=rng))
    parts.append(tls_session(PHONE, "142.250.185.106", "photosdata-pa.googleapis.com", T0 + 60, 45_000_000, 9000,
                             sport=ports(), rate=3e6, rng=rng))
    return merge(*parts)


def _upload_other_resolver(rng: random.Random) -> Iterator[Packet]:
    """A laptop whose DNS is set by hand to a resolver the house does not list (4.2.2.2, an ISP's) uploads
    a 35 MB video to a named service on a CDN address."""
    ports = Ports(rng)
    parts = _home(rng, 1800)
    parts.append(dns_query(LAPTOP, "4.2.2.2", "upload.video.example.com", "151.101.1.10", T0 + 19, sport=41000,
                           rng=rng))
    parts.append(tls_session(LAPTOP, "151.101.1.10", "upload.video.example.com", T0 + 20, 35_000_000, 12000,
                             sport=ports(), rate=2.5e6, rng=rng))
    return merge(*parts)


def _cloud_outage(rng: random.Random) -> Iterator[Packet]:
    """A camera keeps an MQTT-over-TLS connection to its vendor's broker; the broker is down for 2 h (its
    load balancer refuses) and the firmware retries every 10 s without back-off; then it is back."""
    ports = Ports(rng)
    cam, broker = "192.168.1.31", "198.51.100.75"
    parts = _home(rng, 4 * 3600)
    parts.append(_with_dns("mqtt.camvendor.example", broker, cam, T0 + 2, rng))
    parts.append(long_connection(cam, broker, 8883, start=T0 + 2, duration=1800, keepalive=60, rng=rng))
    t = T0 + 1810
    while t < T0 + 1810 + 7200:
        parts.append(tcp_probe(cam, broker, ports(), 8883, t, "closed", rtt=0.03, rng=rng))
        t += 10 + rng.uniform(0, 0.5)
    parts.append(_with_dns("mqtt.camvendor.example", broker, cam, t, rng))
    parts.append(long_connection(cam, broker, 8883, start=t + 1, duration=1800, keepalive=60, rng=rng))
    return merge(*parts)


def _broken_ipv6(rng: random.Random) -> Iterator[Packet]:
    """The ISP's IPv6 is down for an evening but the LAN keeps its prefix: for each of 110 dual-stack
    sites the laptop's SYN over IPv6 goes unanswered and IPv4 works 250 ms later (Happy Eyeballs)."""
    ports = Ports(rng)
    parts = _home(rng, 3600)
    for i in range(110):
        t = T0 + 10 + i * (3500 / 110) + rng.uniform(0, 10)
        v4 = f"151.{101 + i % 50}.{rng.randrange(1, 254)}.{rng.randrange(1, 254)}"
        v6 = f"2a04:4e42:{i:x}::{rng.randrange(1, 0xffff):x}"
        name = f"www.site{i}.example.com"
        parts.append(dns_query(LAPTOP, ROUTER, name, v4, t - 0.03, sport=rng.randrange(30000, 60000), rng=rng))
        parts.append(dns_query(LAPTOP, ROUTER, name, v6, t - 0.03, sport=rng.randrange(30000, 60000), rng=rng))
        parts.append(tcp_probe(V6_LAPTOP, v6, ports(), 443, t, "filtered", rng=rng))
        parts.append(tls_session(LAPTOP, v4, name, t + 0.25, 600, rng.randint(5000, 80000), sport=ports(), rng=rng))
    return merge(*parts)


def _keepalive_mix(rng: random.Random) -> Iterator[Packet]:
    """What should pass: WireGuard and Tailscale keepalives every 25 s to unnamed peers, Apple push,
    IMAP IDLE, an MQTT plug, a TV's SSDP and mDNS multicast."""
    dur = 2 * 3600
    parts = _home(rng, dur)

    def keepalive(client: str, server: str, port: int) -> Iterator[Packet]:
        return merge(*(udp_exchange(client, server, port, port, T0 + 3 + k * 25 + rng.uniform(0, 0.3),
                                    (("c", bytes(32)), ("s", bytes(32))), rng=rng) for k in range(dur // 25)))
    parts += [keepalive(LAPTOP, "203.0.113.200", 51820), keepalive(PHONE, "198.51.100.201", 41641),
              _with_dns("courier.push.apple.com", "17.57.146.20", PHONE, T0 + 4, rng),
              long_connection(PHONE, "17.57.146.20", 5223, start=T0 + 5, duration=dur, keepalive=600, rng=rng),
              _with_dns("imap.gmail.com", "142.250.102.109", LAPTOP, T0 + 6, rng),
              long_connection(LAPTOP, "142.250.102.109", 993, start=T0 + 7, duration=dur, keepalive=1740, rng=rng),
              _with_dns("mqtt.plug.example", "198.51.100.210", "192.168.1.30", T0 + 8, rng),
              long_connection("192.168.1.30", "198.51.100.210", 1883, start=T0 + 9, duration=dur, keepalive=60,
                              rng=rng)]
    ssdp = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n"
    for k in range(dur // 30):
        parts.append(udp_exchange(NAS, "239.255.255.250", 1900, 1900, T0 + 11 + k * 30, (("c", ssdp),), rng=rng))
        parts.append(udp_exchange(NAS, "224.0.0.251", 5353, 5353, T0 + 12 + k * 30, (("c", bytes(120)),), rng=rng))
    return merge(*parts)


# benign traffic slipsq still blocks: open problems, kept in sight (bench/detection.py lists them
# apart, tests/test_detect_lookalikes.py holds them as strict xfails: a fix must move them out)
KNOWN_FP = ("a periodic call to a named service is a beacon to the beacon detector, which blocks it alone "
            "when it persists; the corpus's named TLS beacons are malicious (the note of 2026-12-06 has "
            "the numbers of making named beacons need a second finding)")



BAD = frozenset({VICTIM, CNC})
SCENARIOS: list[Scenario] = [
    Scenario("beacon-https-2.2s", "malicious", _beacon(2.2, 0.005, 270, size=6100), BAD, ("beacon",), True,
             "issue 11: one server:443 every 2.2 s, sizes ~6.1 kB"),
    Scenario("beacon-10s-1%", "malicious", _beacon(10.0, 0.01, 40), BAD, ("beacon",), True),
    Scenario("beacon-60s-10%", "malicious", _beacon(60.0, 0.10, 40), BAD, ("beacon",)),
    Scenario("beacon-30s-30%", "malicious", _beacon(30.0, 0.30, 50), BAD, ("beacon",), True),
    Scenario("beacon-10min-1%", "malicious", _beacon(600.0, 0.01, 14), BAD, ("beacon",)),
    Scenario("beacon-unnamed-8080", "malicious", _beacon(15.0, 0.05, 40, named=False, port=8080), BAD, ("beacon",)),
    Scenario("beacon-varying-sizes", "malicious", _beacon_sizes, BAD, ("beacon",)),
    Scenario("beacon-udp-60s", "malicious", _udp_beacon, BAD, ("beacon",), note="a UDP beacon every 60 s ± 5 %"),
    Scenario("reconnection-storm", "malicious", _storm, BAD, ("reconnect",), note="needs the new detectors"),
    Scenario("dga-nxdomain", "malicious", _dga, frozenset({VICTIM}), ("dga",), note="needs the new detectors"),
    Scenario("dns-tunnel", "malicious", _dns_tunnel, frozenset({VICTIM}), ("dnstunnel",),
             note="dnscat2 through the house's resolver, a query a second"),
    Scenario("exfiltration", "malicious", _exfil, BAD, ("exfil",), note="needs the new detectors"),
    Scenario("rat-on-duckdns", "malicious",
             _periodic_service(VICTIM, CNC, "winupd-7731.duckdns.org", 60, 1, (300, 700), (200, 900)), BAD,
             ("beacon",), note="a RAT's C&C on a DuckDNS name, every 60 s (the zone is no allowed service)"),
    Scenario("exfil-https-bare", "malicious", _exfil_https, BAD, ("exfil",),
             note="30 MB POSTed over TLS with no server name (h2, http/1.1) to a bare address"),
    Scenario("ping-sweep", "malicious", _ping_sweep, frozenset({VICTIM}), ("portscan",),
             note="an infected host pings 300 random Internet addresses, 4 % answering"),
    Scenario("exfil-mtproto-lookalike", "malicious", _exfil_mtproto_lookalike,
             frozenset({VICTIM, "149.154.176.20"}), ("exfil",),
             note="30 MB in MTProto-like parts to an address just outside Telegram's networks"),
    Scenario("horizontal-scan", "malicious", _hscan, frozenset({VICTIM}), ("portscan",)),
    Scenario("worm-three-ports", "malicious", _worm_ports, frozenset({VICTIM}), ("portscan",),
             note="an IoT worm sweeps 35 Internet hosts on each of 23, 2323 and 37215"),
    Scenario("vertical-scan", "malicious", _vscan, frozenset({"198.51.100.77"}), ("portscan",)),
    Scenario("ssh-bruteforce", "malicious", _brute, frozenset({"198.51.100.88"}), ("bruteforce",)),
    Scenario("bittorrent-day", "benign", _bittorrent, quick=True, note="issue 11: 60+ alerts, 7 peers blocked"),
    Scenario("p2p-swarm-udp", "benign", _swarm, quick=True),
    Scenario("push-keepalives", "benign", _push),
    Scenario("ntp", "benign", _ntp, quick=True),
    Scenario("update-checks", "benign", _updates),
    Scenario("streaming", "benign", _streaming),
    Scenario("smart-home", "benign", _smart_home),
    Scenario("video-call", "benign", _video_call),
    Scenario("backup-upload", "benign", _backup),
    Scenario("browsing", "benign", _browsing),
    Scenario("forged-ssh-syns", "benign", _forged_ssh_syns(), extra={"forged": True},
             note="SYNs as the house's resolver get SYN-ACKs, never a login"),
    Scenario("forged-synacks", "benign", _forged_synacks(), extra={"forged": True},
             note="SYN-ACKs nobody asked for, from the resolver"),
    Scenario("halfopen-to-resolver", "benign", _halfopen_to_resolver(), extra={"forged": True},
             note="refused SYNs every 15 s to the house's resolver"),
    Scenario("forged-rsts", "benign", _forged_rsts(), extra={"forged": True},
             note="out-of-window RSTs cutting a VPN connection"),
    Scenario("forged-nxdomain", "benign", _forged_nxdomain(), extra={"forged": True},
             note="NXDOMAIN answers to no query, 'from' the resolver"),
    Scenario("long-keepalives", "benign", _long_keepalives, note="a push channel idle longer than tcp_idle"),
    Scenario("updates-three-devices", "benign", _updates_three_devices, note="one update service, three devices"),
    Scenario("ntp-two-devices", "benign", _ntp_two_devices, note="chrony's 1024 s polls from two devices"),
    Scenario("bittorrent-churn", "benign", _bittorrent_churn, note="half the peers and DHT nodes gone"),
    Scenario("forged-upload", "benign", _forged_upload(), extra={"forged": True},
             note="35 MB without a handshake to the resolver"),
    Scenario("ipv6-lan-exfil", "malicious", _v6_exfil, frozenset({V6_VICTIM, CNC6}), ("exfil",),
             extra={"config": V6_SITE}, note="30 MB from a LAN host's global IPv6 address (network.local)"),
    Scenario("nas-polling", "benign", _polling(PHONE, NAS), note="a phone polls the NAS every 30 s"),
    Scenario("sip-phone", "benign", _sip_phone, note="SIP OPTIONS every 90 s, REGISTER every 10 min"),
    Scenario("connectivity-checks", "benign", _connectivity_checks, note="generate_204 every 5 minutes"),
    Scenario("beacon-own-resolver", "malicious", _own_resolver(_beacon(10.0, 0.01, 40, named=False),
                                                               "time.windows.com"), BAD, ("beacon",),
             note="the C&C's own DNS server names it time.windows.com (beacon.allow_domains)"),
    Scenario("exfil-own-resolver", "malicious", _own_resolver(_exfil, "drive.google.com"), BAD, ("exfil",),
             note="the C&C's own DNS server names it drive.google.com (exfil.allow_domains)"),
    Scenario("public-resolver-checks", "benign", _public_resolver_checks,
             note="connectivity-checks named by 8.8.8.8, asked directly"),
    Scenario("camera-snapshots", "benign",
             _periodic_service("192.168.1.31", "198.51.100.80", "upload.camvendor.example", 60, 2,
                               (20_000, 40_000), (300, 600)),
             extra={"known_fp": KNOWN_FP}, note="a camera uploads a snapshot every 60 s"),
    Scenario("telemetry-15min", "benign",
             _periodic_service(LAPTOP, "198.51.100.81", "v10.events.data.example.com", 900, 8, (400, 900),
                               (1500, 4000)),
             extra={"known_fp": KNOWN_FP}, note="an OS's telemetry every 15 minutes"),
    # portscan.local_may_block: the scan's target is a LAN host, so by default a vertical scan of it by a
    # LAN address never blocks at all; on, only the in-use guard stands between the forgery and the NAS
    Scenario("forged-scan-v6-nas", "benign", _forged_scan_v6(),
             extra={"forged": True, "config": {**V6_SITE, "portscan.local_may_block": True}},
             note="SYNs with the IPv6 NAS's address, from the Internet"),
    Scenario("uptime-monitor", "benign", _polling("198.51.100.9", NAS, "nas.example.org", 360),
             note="an outside monitor polls a forwarded port"),
    Scenario("ipv6-lan-nas-polling", "benign", _polling(V6_PHONE, V6_NAS), extra={"config": V6_SITE},
             note="a phone polls the NAS every 30 s over the LAN's global IPv6 (network.local)"),
    Scenario("git-autofetch", "benign", _git_autofetch(3, 180.0, 2),
             note="VS Code fetches 3 repositories from github.com over ssh every 180 s"),
    Scenario("uptime-monitor-ssh", "benign", _uptime_monitor_ssh,
             note="a TCP port check of the forwarded ssh port every 60 s: banner, close"),
    Scenario("traceroute-two", "benign", _traceroutes(30, True),
             note="two Linux traceroutes, one to a host that filters UDP"),
    Scenario("traceroute-macos", "benign", _traceroutes(64, False),
             note="a macOS traceroute (64 hops) to a host that filters UDP"),
    Scenario("inbound-git-autofetch", "benign", _inbound_logins,
             note="the owner's office VS Code fetches 3 repos from the home Gitea over ssh every 180 s"),
    Scenario("inbound-ftp-camera", "benign", _ftp_uploads,
             note="a camera at a second site uploads motion snapshots to the NAS by FTP"),
    Scenario("port-check-vps", "benign", _port_check,
             note="a monitor checks the owner's VPS's ssh port every 60 s: connect, banner, close"),
    Scenario("unifi-inform-vps", "benign", _unifi_inform,
             note="three UniFi devices inform their controller on a VPS (by address, 8080) every 10 s"),
    Scenario("ddns-updater", "benign",
             _periodic_service("192.168.1.50", "3.97.51.116", "www.duckdns.org", 300, 2, (180, 260), (260, 400)),
             note="DuckDNS's documented cron job on a Pi: the update URL every 5 minutes"),
    Scenario("server-browser", "benign", _server_browser,
             note="a game's server browser queries 1,500 servers on ten ports, a fifth gone, twice an hour"),
    Scenario("nmap-tracker", "benign", _nmap_tracker,
             note="Home Assistant's Nmap Tracker scans the top 100 ports of each live LAN host every 120 s"),
    Scenario("nmap-tracker-busy-lan", "benign", lambda rng: _nmap_tracker(rng, busy=True),
             extra={"known_fp": "ten or more live hosts make each closed port a horizontal scan of the LAN, as a "
                                "worm's sweep; the remedy: Nmap Tracker's default ARP ping, or allow.ips"},
             note="the same on a LAN of twelve live hosts"),
    Scenario("ping-server-browser", "benign", _ping_browser,
             note="a game's server browser pings the 250 servers it lists, three times an hour, 640 in all"),
    Scenario("vpn-tcp-backup", "benign", _vpn_backup,
             note="a laptop's nightly backup (150 MB) through its VPN app's OpenVPN-over-TCP tunnel"),
    Scenario("telegram-upload", "benign", _telegram_upload,
             note="a phone sends a 120 MB video over Telegram (MTProto to a data centre's built-in address)"),
    Scenario("syncthing-offsite", "benign", _syncthing,
             note="Syncthing sends a 60 MB folder to the owner's device at another home (its hello: bep/1.0)"),
    Scenario("shadowsocks-vpn", "benign", _shadowsocks,
             note="an Outline VPN key: a connection per site to an address:port, each opening with a random salt"),
    Scenario("induced-lookups", "benign", _induced_lookups,
             note="a page with 600 pictures at random subdomains of four domains nobody owns"),
    Scenario("tailscale-direct", "benign", _tailscale_direct,
             note="a job every 5 minutes over Tailscale's direct path (41641/udp, peer never named by DNS)"),
    Scenario("eth-staking", "benign", _eth_staking,
             note="a home Ethereum staking node: discovery and dials on 30303 and 9000, half the nodes gone"),
    Scenario("doh-reconnects", "benign", _doh_reconnects,
             note="a browser's DNS over HTTPS to 1.1.1.1, a new connection about every minute"),
    Scenario("vlan-logins", "benign", _vlan_logins,
             note="across VLANs: Nextcloud's database connection per request, Home Assistant's ssh sensor"),
    Scenario("dns-lookup-apis", "benign", _dns_lookup_apis,
             note="antivirus hash lookups, a mail filter's blocklist lookups, CloudFront's random names"),
    Scenario("tracepath", "benign", _tracepath,
             note="iputils tracepath (UDP 44444 + slot, wrapping at 64) to a host that filters UDP"),
    Scenario("fing-scan", "benign", _lan_sweep(False),
             note="the owner's Fing sweeps the /24 (ARP, then pings)"),
    Scenario("localsend-sweep", "benign", _lan_sweep(True),
             note="LocalSend's legacy discovery: ARP and a SYN to 53317 on every LAN address"),
    Scenario("upload-encrypted-dns", "benign", _upload_encrypted_dns,
             note="Firefox with DNS over HTTPS uploads 35 MB to S3"),
    Scenario("upload-private-dns", "benign", _upload_private_dns,
             note="Android Private DNS (DoT); a 45 MB video to Google Photos"),
    Scenario("upload-other-resolver", "benign", _upload_other_resolver,
             note="DNS set by hand to 4.2.2.2; 35 MB to a named CDN service"),
    Scenario("cloud-outage", "benign", _cloud_outage,
             note="a camera retries its vendor's broker every 10 s through a 2 h outage"),
    Scenario("broken-ipv6", "benign", _broken_ipv6, extra={"config": V6_SITE},
             note="the ISP's IPv6 is down: 110 unanswered IPv6 SYNs, IPv4 works (Happy Eyeballs)"),
    Scenario("keepalive-mix", "benign", _keepalive_mix,
             note="WireGuard, Tailscale, push, IMAP IDLE, MQTT keepalives; SSDP and mDNS"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def write(scenario: Scenario, path: Path, seed: int = 1) -> int:
    from tools.gencapture import write_capture

    return write_capture(scenario.build(random.Random(seed)), path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--quick", action="store_true", help="only the fast subset")
    args = ap.parse_args(argv)
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [n for n in args.only.split(",") if n]
    for s in SCENARIOS:
        if (names and s.name not in names) or (args.quick and not s.quick):
            continue
        n = write(s, out / f"{s.name}.pcap")
        print(f"{s.name}: {n} packets")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
