"""Scenario builders for slipsq's traffic generator: behaviours made of sessions, for detection tests
and the demo (beacons, browsing, scans, brute force, home-network background).

Each builder returns an iterator of (time, Ethernet frame) in time order; builders compose with
`merge`. All randomness comes from the `rng` argument (seeded by the caller), so the same call gives
the same bytes. Test and benchmark tooling; never imported by slipsq itself.
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter

from tools.gen_frames import Content
from tools.gen_sessions import (
    Message,
    Packet,
    arp_who_has,
    dns_message,
    dns_query,
    http_session,
    icmp_echo,
    ssh_session,
    tcp_probe,
    tcp_session,
    tls_session,
    udp_exchange,
)

_first = itemgetter(0)


def merge(*streams: Iterable[Packet]) -> Iterator[Packet]:
    """Packets of several time-ordered streams, in time order."""
    return heapq.merge(*streams, key=_first)


class Ports:
    """Ephemeral source ports of one client, handed out in turn like a kernel does."""

    def __init__(self, rng: random.Random, low: int = 32768, high: int = 60999) -> None:
        self.low, self.high = low, high
        self.next = rng.randrange(low, high)

    def __call__(self) -> int:
        p = self.next
        self.next = p + 1 if p < self.high else self.low
        return p


def _targets(network: str | Sequence[str]) -> list[str]:
    if isinstance(network, str):
        net = ipaddress.ip_network(network, strict=False)
        return [str(a) for a in (net.hosts() if net.num_addresses > 2 else net)]
    return list(network)


# --- behaviours a detector should flag ------------------------------------------------------------

def beacon(client: str, server: str, port: int = 443, interval: float = 2.0, jitter: float = 0.0,
           count: int = 90, size: int = 6000, proto: str = "tcp", tls: bool = True, *, start: float = 0.0,
           sni: str = "cdn.example.net", rtt: float = 0.04,
           rng: random.Random | None = None) -> Iterator[Packet]:
    """A C&C beacon: `count` connections (TCP, TLS by default) or UDP exchanges, `interval` ± `jitter`
    seconds apart, each moving about `size` payload bytes. Connection i starts at
    start + i*interval + uniform(-jitter, +jitter) (the first exactly at `start`)."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    streams = []
    for i in range(count):
        t = start + i * interval + (rng.uniform(-jitter, jitter) if i and jitter else 0.0)
        if proto == "udp":
            req = max(16, size // 4)
            msgs = (("c", rng.randbytes(min(req, 1400))), ("s", rng.randbytes(min(size - req, 1400))))
            streams.append(udp_exchange(client, server, ports(), port, t, msgs, rtt=rtt, rng=rng))
        elif tls:
            # ClientHello ~260, ServerHello ~130 + certificate flight, finished 80; the rest: request/response
            cert = min(2800, size // 3)
            rest = max(200, size - 470 - cert)
            streams.append(tls_session(client, server, sni, t, rest // 4, rest - rest // 4, sport=ports(),
                                       port=port, rtt=rtt, certificate_bytes=cert, rng=rng))
        else:
            streams.append(tcp_session(client, server, ports(), port, t, size // 4, size - size // 4, rtt,
                                       rng=rng))
    return merge(*streams)


def horizontal_scan(attacker: str, network: str | Sequence[str], port: int = 445, *, start: float = 0.0,
                    rate: float = 200.0, open_hosts: Iterable[str] = (), closed_hosts: Iterable[str] = (),
                    rng: random.Random | None = None) -> Iterator[Packet]:
    """SYN probes to one port on every address: open hosts answer SYN/ACK (the scanner resets), closed
    hosts RST, the rest stay silent."""
    rng = rng or random.Random(0)
    opened, closed = set(open_hosts), set(closed_hosts)
    sport = rng.randrange(40000, 60000)
    streams = []
    for i, target in enumerate(_targets(network)):
        state = "open" if target in opened else "closed" if target in closed else "filtered"
        streams.append(tcp_probe(attacker, target, sport, port, start + i / rate, state, rng=rng))
    return merge(*streams)


def vertical_scan(attacker: str, target: str, ports: Iterable[int] = range(1, 1025), *, start: float = 0.0,
                  rate: float = 500.0, open_ports: Iterable[int] = (22, 80, 443),
                  rng: random.Random | None = None) -> Iterator[Packet]:
    """SYN probes to many ports of one live host: open ports answer SYN/ACK, the others RST."""
    rng = rng or random.Random(0)
    opened = set(open_ports)
    sport = rng.randrange(40000, 60000)
    plist = list(ports)
    rng.shuffle(plist)  # nmap probes ports in random order
    return merge(*(tcp_probe(attacker, target, sport, p, start + i / rate,
                             "open" if p in opened else "closed", rng=rng) for i, p in enumerate(plist)))


def icmp_sweep(attacker: str, network: str | Sequence[str], *, start: float = 0.0, rate: float = 50.0,
               alive: Iterable[str] = ()) -> Iterator[Packet]:
    """One echo request to every address; the alive ones reply."""
    live = set(alive)
    return merge(*(icmp_echo(attacker, t, start + i / rate, ident=0x4242, reply=t in live, rtt=0.002)
                   for i, t in enumerate(_targets(network))))


def arp_scan(attacker: str, network: str | Sequence[str], *, start: float = 0.0, rate: float = 100.0,
             alive: Iterable[str] = ()) -> Iterator[Packet]:
    """ARP who-has for every address of the LAN; the alive ones reply."""
    live = set(alive)
    return merge(*(arp_who_has(attacker, t, start + i / rate, reply=t in live)
                   for i, t in enumerate(_targets(network)) if t != attacker))


def ssh_bruteforce(attacker: str, server: str, port: int = 22, attempts: int = 40, *, start: float = 0.0,
                   interval: float = 3.0, tries_per_connection: int = 3,
                   rng: random.Random | None = None) -> Iterator[Packet]:
    """Password guessing: `attempts` SSH connections `interval` s apart, each with a few failed logins."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    return merge(*(ssh_session(attacker, server, start + i * interval + rng.uniform(0, 0.3), port=port,
                               sport=ports(), auth_attempts=tries_per_connection, rtt=0.03, rng=rng)
                   for i in range(attempts)))


# --- benign background ----------------------------------------------------------------------------

SITES = ["www.example.com", "news.example.org", "mail.example.net", "video.example.com", "shop.example.org",
         "cdn.example.net", "docs.example.com", "social.example.net", "maps.example.org", "api.example.com",
         "static.example.org", "wiki.example.net", "music.example.com", "weather.example.org"]


def site_address(name: str) -> str:
    """A stable documentation address for a site name (never 203.0.113.66, the demo's C&C)."""
    h = sum(name.encode()) * 2654435761 & 0xFFFF
    return f"198.51.100.{10 + h % 240}" if h & 1 else f"192.0.2.{10 + h % 240}"


def normal_browsing(client: str, n_sites: int, duration: float, *, start: float = 0.0,
                    resolver: str = "192.168.1.1", max_response: int = 2_000_000, connections: int = 6,
                    rng: random.Random | None = None) -> Iterator[Packet]:
    """A person browsing: `n_sites` visits at random times; each is a DNS lookup, then one to
    `connections` HTTPS connections of varied sizes (now and then plain HTTP)."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    streams: list[Iterator[Packet]] = []
    for _ in range(n_sites):
        name = rng.choice(SITES)
        ip = site_address(name)
        t = start + rng.uniform(0, duration)
        streams.append(dns_query(client, resolver, name, ip, t, sport=ports(), rng=rng))
        t += 0.02
        for _ in range(rng.randint(1, connections)):
            t += rng.uniform(0.0, 0.4)
            resp = int(min(max_response, rng.lognormvariate(9.5, 1.3)))
            rtt = rng.uniform(0.01, 0.08)
            if rng.random() < 0.1:
                streams.append(http_session(client, ip, name, t, "/index.html", resp, sport=ports(), rtt=rtt,
                                            rng=rng))
            else:
                streams.append(tls_session(client, ip, name, t, rng.randint(300, 1500), resp, sport=ports(),
                                           rtt=rtt, rng=rng))
    return merge(*streams)


def dns_to_local_resolver(client: str, resolver: str, names: Sequence[str], duration: float, *,
                          start: float = 0.0, rng: random.Random | None = None) -> Iterator[Packet]:
    """Lookups of `names` at random times to the LAN's resolver (a few of them NXDOMAIN)."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    times = sorted(start + rng.uniform(0, duration) for _ in names)
    return merge(*(dns_query(client, resolver, n, None if rng.random() < 0.05 else site_address(n), t,
                             sport=ports(), rng=rng) for n, t in zip(names, times)))


def ntp_polling(client: str, server: str, *, start: float = 0.0, interval: float = 64.0, count: int = 10,
                rng: random.Random | None = None) -> Iterator[Packet]:
    """SNTP client polls (mode 3 → mode 4, 48 bytes each), a new source port per poll like timesyncd."""
    rng = rng or random.Random(0)
    ports = Ports(rng)

    def packet(mode: int) -> bytes:
        return bytes([0x20 | mode, 2 if mode == 4 else 0, 6, 0xE9]) + rng.randbytes(44)

    return merge(*(udp_exchange(client, server, ports(), 123, start + i * interval,
                                (("c", packet(3)), ("s", packet(4))), rtt=0.025, rng=rng)
                   for i in range(count)))


def ssdp_multicast(client: str, *, start: float = 0.0, interval: float = 60.0, count: int = 5,
                   rng: random.Random | None = None) -> Iterator[Packet]:
    """UPnP discovery: M-SEARCH to 239.255.255.250:1900, repeated (a smart TV, a phone)."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    msg = (b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n"
           b"ST: urn:dial-multiscreen-org:service:dial:1\r\n\r\n")
    return merge(*(udp_exchange(client, "239.255.255.250", ports(), 1900, start + i * interval,
                                (("c", msg), ("c", msg), ("c", msg)), interval=0.1, rng=rng)
                   for i in range(count)))


def mdns(client: str, *, start: float = 0.0, interval: float = 120.0, count: int = 5,
         service: str = "_googlecast._tcp.local") -> Iterator[Packet]:
    """mDNS queries 5353 → 224.0.0.251:5353."""
    q = dns_message(service, 0, qtype=12)
    return merge(*(udp_exchange(client, "224.0.0.251", 5353, 5353, start + i * interval, (("c", q),))
                   for i in range(count)))


def connectivity_check(client: str, *, start: float = 0.0, interval: float = 300.0, count: int = 4,
                       server: str = "198.51.100.204", rng: random.Random | None = None) -> Iterator[Packet]:
    """An OS's captive-portal probe: HTTP GET /generate_204 every `interval` s (benign, periodic)."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    return merge(*(http_session(client, server, "connectivity-check.example.com", start + i * interval,
                                "/generate_204", 0, sport=ports(), status="204 No Content", rng=rng)
                   for i in range(count)))


def reconnection_storm(client: str, server: str, port: int = 1604, *, start: float = 0.0, count: int = 720,
                       interval: float = 0.66, answer: str = "closed",
                       rng: random.Random | None = None) -> Iterator[Packet]:
    """Malware whose C&C is down: `count` connection attempts to one server:port, `interval` s apart,
    each from a new source port; the server resets each (answer "closed": SYN -> RST/ACK) or never
    answers ("filtered": a lone SYN)."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    return merge(*(tcp_probe(client, server, ports(), port, start + i * interval, answer, rtt=0.03, rng=rng)
                   for i in range(count)))


def random_name(rng: random.Random, longest: int = 16, tld: str = "com") -> str:
    """A random-letter domain name, 10 to `longest` letters, under `tld`: what a DGA asks for."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(10, longest))) + "." + tld


def dga_lookups(client: str, resolver: str = "192.168.1.1", *, count: int = 120, start: float = 0.0,
                interval: float = 2.0, hit_every: int = 0, tld: str = "com",
                rng: random.Random | None = None) -> Iterator[Packet]:
    """A DGA looking for its C&C: `count` lookups of random 10-16 letter names under `tld`, all
    NXDOMAIN but every `hit_every`-th (0: none), which resolves to 203.0.113.99."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    streams = []
    for i in range(count):
        name = random_name(rng, 16, tld)
        hit = "203.0.113.99" if hit_every and i % hit_every == hit_every - 1 else None
        streams.append(dns_query(client, resolver, name, hit, start + i * interval, sport=ports(), rng=rng))
    return merge(*streams)


def bulk_upload(client: str, server: str, port: int = 443, *, size: int = 20_000_000, start: float = 0.0,
                response: int = 20_000, connections: int = 1, rate: float = 5e6,
                rng: random.Random | None = None) -> Iterator[Packet]:
    """`size` bytes uploaded in `connections` TCP connections one after another (exfiltration, or a
    backup), each answered with `response` bytes."""
    rng = rng or random.Random(0)
    ports = Ports(rng)
    each = size // connections
    streams, t = [], start
    for _ in range(connections):
        streams.append(tcp_session(client, server, ports(), port, t, each, response, 0.03, rate=rate, rng=rng))
        t += each / rate + 1.0
    return merge(*streams)


def long_connection(client: str, server: str, port: int = 443, *, start: float = 0.0,
                    duration: float = 1800.0, keepalive: float = 30.0, sport: int | None = None,
                    rng: random.Random | None = None) -> Iterator[Packet]:
    """One long TCP connection (a chat or push channel): small exchanges every `keepalive` s, from
    `sport` (None: the client's next ephemeral port)."""
    rng = rng or random.Random(0)
    both: list[Message] = []
    for i in range(int(duration // keepalive)):
        both += [("c", Content(rng.randint(40, 120)), keepalive if i else 0.0),
                 ("s", Content(rng.randint(40, 300)))]
    return tcp_session(client, server, Ports(rng)() if sport is None else sport, port, start, messages=both, rtt=0.03,
                       rng=rng)


__all__ = ["SITES", "Ports", "arp_scan", "beacon", "bulk_upload", "connectivity_check", "dga_lookups",
           "dns_to_local_resolver", "horizontal_scan", "icmp_sweep", "long_connection", "mdns", "merge",
           "normal_browsing", "ntp_polling", "random_name", "reconnection_storm", "site_address", "ssdp_multicast",
           "ssh_bruteforce", "vertical_scan"]
