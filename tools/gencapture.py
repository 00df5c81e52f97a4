"""slipsq's own traffic generator: deterministic (seeded) captures for tests, the demo and the benchmark.

    python -m tools.gencapture SCENARIO --out FILE [--packets N --flows N --seed S
                                                   --linktype ethernet|raw|sll --format pcap|pcapng]

As a library: sessions (`tcp_session`, `tls_session`, `dns_query`, ...) and scenarios (`beacon`,
`horizontal_scan`, `normal_browsing`, ...) are generators of (time, Ethernet frame) that compose
with `merge`; `write_capture(packets, path)` streams them to a file. Frames are built with
`struct` and carry real checksums (see gen_frames). The pieces live in gen_frames (frames and
files), gen_sessions (protocol conversations), gen_scenarios (behaviours) and gen_realistic (the
benchmark mix); this module re-exports them and names the bundled captures (SCENARIOS).
Test and benchmark tooling: slipsq never imports it, and it never sends a packet anywhere.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections.abc import Callable, Iterable, Iterator

from tools.gen_frames import LINKTYPES, CaptureWriter, Content, Path, checksum, host, open_writer, word_sum
from tools.gen_realistic import EPOCH, merge_lazy, realistic
from tools.gen_scenarios import (
    Ports,
    arp_scan,
    beacon,
    connectivity_check,
    dns_to_local_resolver,
    horizontal_scan,
    icmp_sweep,
    long_connection,
    mdns,
    merge,
    normal_browsing,
    ntp_polling,
    site_address,
    ssdp_multicast,
    ssh_bruteforce,
    vertical_scan,
)
from tools.gen_sessions import (
    Packet,
    arp_who_has,
    client_hello,
    dns_message,
    dns_query,
    http_session,
    icmp_echo,
    ssh_session,
    tcp_packet_count,
    tcp_probe,
    tcp_session,
    tls_session,
    udp_exchange,
    udp_stream,
)

__all__ = [
    "EPOCH", "LINKTYPES", "SCENARIOS", "CaptureWriter", "Content", "Packet", "Path", "Ports", "arp_scan",
    "arp_who_has", "beacon", "checksum", "client_hello", "connectivity_check", "dns_message", "dns_query",
    "dns_to_local_resolver", "horizontal_scan", "host", "http_session", "icmp_echo", "icmp_sweep",
    "long_connection", "mdns", "merge", "merge_lazy", "normal_browsing", "ntp_polling", "open_writer",
    "realistic", "site_address", "ssdp_multicast", "ssh_bruteforce", "ssh_session", "tcp_packet_count",
    "tcp_probe", "tcp_session", "tls_session", "udp_exchange", "udp_stream", "vertical_scan", "word_sum",
    "write_capture",
]


def write_capture(packets: Iterable[Packet], path: str | os.PathLike[str], linktype: str = "ethernet",
                  fmt: str | None = None, limit: int | None = None) -> int:
    """Stream packets to a capture file; returns how many were written (ARP is skipped for raw IP)."""
    w = open_writer(path, linktype, fmt)
    try:
        w.write_all(packets, limit)
        w.flush()
    finally:
        w.fh.close()
    return w.packets


# --- the bundled captures (tests/data/) -------------------------------------------------------------

ROUTER, LAPTOP, PHONE, TV, DESKTOP, INFECTED = (f"192.168.1.{i}" for i in (1, 10, 11, 20, 30, 66))
NTP_SERVER, CNC = "198.51.100.123", "203.0.113.66"
HOME_NAMES = ["www.example.com", "updates.example.org", "time.example.net", "tv-guide.example.com",
              "push.example.net", "photos.example.org"]


def _background(rng: random.Random, t0: float, duration: float, sites: int = 12,
                max_response: int = 6000) -> list[Iterator[Packet]]:
    """A quiet home network: browsing (small pages), DNS to the router, NTP, SSDP, mDNS."""
    names = [rng.choice(HOME_NAMES) for _ in range(int(duration // 20))]
    return [
        normal_browsing(LAPTOP, sites, duration, start=t0, resolver=ROUTER, max_response=max_response,
                        connections=2, rng=rng),
        normal_browsing(PHONE, sites // 2, duration, start=t0, resolver=ROUTER,
                        max_response=max_response * 2 // 3, connections=2, rng=rng),
        dns_to_local_resolver(TV, ROUTER, names, duration, start=t0, rng=rng),
        ntp_polling(LAPTOP, NTP_SERVER, start=t0 + 3, interval=64, count=int(duration // 64) + 1, rng=rng),
        ssdp_multicast(TV, start=t0 + 5, interval=60, count=int(duration // 60) + 1, rng=rng),
        mdns(PHONE, start=t0 + 7, interval=120, count=int(duration // 120) + 1),
    ]


def demo(seed: int = 1) -> Iterator[Packet]:
    """beacon-https.pcap: a home network, and 192.168.1.66 fetching https://203.0.113.66 every 2 s for
    3 minutes, each connection ~0.16 s moving ~2.1 KB of IP bytes (a resumed TLS session: large/medium,
    letters 88.h.h.h...; smaller than letters.md's 6 KB so the bundled file stays under 300 KB)."""
    rng, t0 = random.Random(seed), EPOCH
    return merge(*_background(rng, t0, 200.0, sites=3, max_response=3000),
                 dns_query(INFECTED, ROUTER, "telemetry.example.net", CNC, t0 + 9.5, sport=41000, rng=rng),
                 beacon(INFECTED, CNC, 443, interval=2.0, jitter=0.02, count=90, size=1500, start=t0 + 10,
                        sni="telemetry.example.net", rng=rng))


def portscan(seed: int = 1) -> Iterator[Packet]:
    """portscan.pcap: 192.168.1.99 sweeps the LAN with ICMP, SYN-scans port 445 on every host, then
    1000 ports of the desktop."""
    rng, t0 = random.Random(seed), EPOCH
    live = [ROUTER, LAPTOP, PHONE, TV, DESKTOP]
    attacker = "192.168.1.99"
    return merge(
        icmp_sweep(attacker, "192.168.1.0/24", start=t0 + 5, rate=100, alive=live),
        horizontal_scan(attacker, "192.168.1.0/24", 445, start=t0 + 10, rate=200, open_hosts=[DESKTOP],
                        closed_hosts=[ROUTER, LAPTOP, PHONE, TV], rng=rng),
        vertical_scan(attacker, DESKTOP, range(1, 1001), start=t0 + 20, rate=500,
                      open_ports=(22, 80, 139, 445), rng=rng),
        normal_browsing(LAPTOP, 1, 40.0, start=t0, resolver=ROUTER, max_response=4000, connections=1,
                        rng=rng))


def bruteforce_ssh(seed: int = 1) -> Iterator[Packet]:
    """bruteforce-ssh.pcap: 203.0.113.50 guesses passwords on 192.168.1.30:22, and 198.51.100.77 on
    192.168.1.30:2222 (SSH on a non-standard port); one legitimate login from the laptop."""
    rng, t0 = random.Random(seed), EPOCH
    return merge(
        ssh_bruteforce("203.0.113.50", DESKTOP, 22, 20, start=t0 + 2, interval=3.0, rng=rng),
        ssh_bruteforce("198.51.100.77", DESKTOP, 2222, 20, start=t0 + 70, interval=2.5, rng=rng),
        ssh_session(LAPTOP, DESKTOP, t0 + 30, sport=51515, success=True, data_bytes=3000, rtt=0.002, rng=rng))


def normal_home(seed: int = 1) -> Iterator[Packet]:
    """normal-home.pcap: benign only, 20 minutes: browsing, DNS, NTP, SSDP, mDNS, a connectivity check
    every 5 minutes, a little IPv6."""
    rng, t0 = random.Random(seed), EPOCH
    duration = 1200.0
    v6_client, v6_server = "fd00:1::10", "2001:db8:1::443"
    return merge(*_background(rng, t0, duration, sites=8),
                 connectivity_check(LAPTOP, start=t0 + 1, interval=300, count=4, rng=rng),
                 dns_query(v6_client, "fd00:1::1", "www.example.com", v6_server, t0 + 50, sport=42000,
                           rng=rng),
                 tls_session(v6_client, v6_server, "www.example.com", t0 + 50.1, 500, 6000, sport=42001,
                             rng=rng),
                 icmp_echo(v6_client, v6_server, t0 + 60, count=3))


def arp_scan_capture(seed: int = 1) -> Iterator[Packet]:
    """arp-scan.pcap: 192.168.1.99 asks who-has for the whole /24; the router's own ARP is normal."""
    rng, t0 = random.Random(seed), EPOCH
    live = [ROUTER, LAPTOP, PHONE, TV, DESKTOP]
    return merge(arp_scan("192.168.1.99", "192.168.1.0/24", start=t0 + 3, rate=100, alive=live),
                 arp_who_has(ROUTER, LAPTOP, t0 + 1), arp_who_has(ROUTER, TV, t0 + 40),
                 normal_browsing(LAPTOP, 2, 30.0, start=t0, resolver=ROUTER, max_response=4000, connections=1,
                                 rng=rng))


def letters_example(seed: int = 1) -> Iterator[Packet]:
    """letters.md's beacon alone: an HTTPS fetch every 2 s moving ~6 KB in ~0.2 s, 90 times."""
    return beacon(INFECTED, CNC, 443, interval=2.0, jitter=0.02, count=90, size=6000, start=EPOCH,
                  sni="telemetry.example.net", rng=random.Random(seed))


SCENARIOS: dict[str, Callable[..., Iterator[Packet]]] = {
    "demo": demo, "portscan": portscan, "bruteforce-ssh": bruteforce_ssh, "normal-home": normal_home,
    "arp-scan": arp_scan_capture, "beacon": letters_example, "realistic": realistic,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gencapture", description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=sorted(SCENARIOS))
    ap.add_argument("--out", required=True, help="capture file to write")
    ap.add_argument("--packets", type=int, default=3_000_000, help="realistic: exact number of packets")
    ap.add_argument("--flows", type=int, default=100_000, help="realistic: minimum number of flows")
    ap.add_argument("--duration", type=float, default=2700.0, help="realistic: seconds of traffic")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--linktype", choices=sorted(LINKTYPES), default="ethernet")
    ap.add_argument("--format", choices=("pcap", "pcapng"), default=None, help="default: from the suffix")
    a = ap.parse_args(argv)
    if a.scenario == "realistic":
        try:
            packets = realistic(a.packets, a.flows, a.seed, a.duration)
        except ValueError as e:
            print(f"gencapture: {e}", file=sys.stderr)
            return 2
    else:
        packets = SCENARIOS[a.scenario](a.seed)
    try:
        n = write_capture(packets, a.out, a.linktype, a.format)
    except OSError as e:
        print(f"gencapture: cannot write {a.out}: {e.strerror}", file=sys.stderr)
        return 1
    print(f"{a.out}: {n} packets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
