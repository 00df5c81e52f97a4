"""The benchmark's traffic: `realistic(n_packets, n_flows, seed)`, a large network's capture, streamed.

A plan draws flows one at a time (Poisson arrivals over `duration`), with many clients and a
Zipf-like server popularity: DNS, short HTTPS, HTTP, SSH, other UDP, ICMP, ARP, some IPv6, TCP
closed by RST or left open, long keep-alive connections, and bulk transfers. Every flow's packet
count is known exactly when it is drawn, so bulk transfers absorb the packet budget: the capture
has exactly `n_packets` packets and at least `n_flows` flows. Flows start lazily as the merge
reaches their start time, so memory stays flat however big the capture is.
Test and benchmark tooling; never imported by slipsq itself.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Iterator
from itertools import islice

from tools.gen_frames import Content
from tools.gen_scenarios import SITES
from tools.gen_sessions import (
    Message,
    Packet,
    arp_who_has,
    dns_query,
    http_messages,
    icmp_echo,
    ssh_messages,
    tcp_packet_count,
    tcp_session,
    tls_messages,
    udp_exchange,
    udp_stream,
)

EPOCH = 1717243200.0  # 2024-06-01T12:00:00Z: captures are dated, not "now", so they stay reproducible
# small flows average ~11 packets, so 15 per flow leaves bulk transfers room (bench/replay.py --flows
# 200000: 3M packets, twice the default flows per packet)
MIN_PACKETS_PER_FLOW = 15

# kind -> weight (share of flows); "bulk" takes whatever packet budget the others leave
KINDS = {"dns": 30, "https": 33, "http": 5, "ssh": 2, "udp": 8, "icmp": 3, "arp": 3, "rst": 3, "open": 2,
         "keepalive": 1, "dns6": 2, "https6": 3, "bulk": 5}


def merge_lazy(plan: Iterator[tuple[float, Iterator[Packet]]]) -> Iterator[Packet]:
    """Merge flows in time order, starting each one only when time reaches its start.

    `plan` yields (start, packets) in start order; a flow's first packet is at or after its start.
    """
    heap: list[tuple[float, int, bytes, Iterator[Packet]]] = []
    seq = 0
    nxt = next(plan, None)
    push, replace, pop = heapq.heappush, heapq.heapreplace, heapq.heappop
    while heap or nxt is not None:
        while nxt is not None and (not heap or nxt[0] <= heap[0][0]):
            gen = nxt[1]
            first = next(gen, None)
            if first is not None:
                push(heap, (first[0], seq, first[1], gen))
                seq += 1
            nxt = next(plan, None)
        ts, s, frame, gen = heap[0]
        yield ts, frame
        n = next(gen, None)
        if n is None:
            pop(heap)
        else:
            replace(heap, (n[0], s, n[1], gen))


class _Network:
    """Who talks: internal clients (10.0.0.0/16, some IPv6 in fd00:1::/64) and Internet servers
    (198.18.0.0/15, the benchmarking range, and 2001:db8:ff::/64), popular ones far more often."""

    def __init__(self, rng: random.Random, n_flows: int) -> None:
        self.rng = rng
        self.n_clients = max(20, min(60000, n_flows // 40))
        self.n_servers = max(50, min(120000, n_flows // 8))
        self.ports: dict[int, int] = {}

    def client(self) -> tuple[int, str]:
        i = self.rng.randrange(self.n_clients)
        return i, f"10.0.{1 + i // 250}.{1 + i % 250}"

    def client6(self) -> tuple[int, str]:
        i = self.rng.randrange(self.n_clients)
        return i, f"fd00:1::{i + 1:x}"

    def server(self) -> str:
        i = int(self.n_servers * self.rng.random() ** 3)  # a few servers get most connections
        return f"198.{18 + (i >> 16)}.{(i >> 8) & 0xFF}.{1 + (i & 0xFF) % 254}"

    def server6(self) -> str:
        return f"2001:db8:ff::{int(self.n_servers * self.rng.random() ** 3) + 1:x}"

    def sport(self, client: int) -> int:
        p = self.ports.get(client)
        if p is None:
            p = self.rng.randrange(32768, 60000)
        p = p + 1 if p < 60999 else 32768
        self.ports[client] = p
        return p


def realistic(n_packets: int = 3_000_000, n_flows: int = 100_000, seed: int = 1, duration: float = 2700.0,
              start: float = EPOCH, stats: Counter[str] | None = None) -> Iterator[Packet]:
    """Exactly `n_packets` packets of at least `n_flows` IP flows (plus ARP exchanges) over about
    `duration` seconds. `stats`, if given, counts the flows planned per kind (and "packets")."""
    if n_flows < 1 or n_packets < n_flows * MIN_PACKETS_PER_FLOW:
        raise ValueError(f"realistic traffic needs at least {MIN_PACKETS_PER_FLOW} packets per flow "
                         f"({n_packets} packets for {n_flows} flows)")
    return merge_lazy(_plan(n_packets, n_flows, random.Random(seed), duration, start, stats))


def _plan(n_packets: int, n_flows: int, rng: random.Random, duration: float, start: float,
          stats: Counter[str] | None) -> Iterator[tuple[float, Iterator[Packet]]]:
    net = _Network(rng, n_flows)
    kinds, weights = list(KINDS), list(KINDS.values())
    p_bulk = KINDS["bulk"] / sum(weights)
    stats = stats if stats is not None else Counter()
    total = small_total = small_n = made = 0  # made: IP flows so far (an ARP exchange is not a flow)
    t = start
    rate = n_flows / (1 - KINDS["arp"] / sum(weights)) / duration
    while made < n_flows:
        t += rng.expovariate(rate)
        left = n_flows - made - 1
        kind = rng.choices(kinds, weights)[0]
        made += kind != "arp"
        if kind == "bulk":
            # the budget left once the expected small flows are paid for, shared among the bulk ones
            small_avg = small_total / small_n if small_n else 12.0
            spare = n_packets - total - small_avg * left * (1 - p_bulk) - 40 * left * p_bulk
            share = spare / max(1.0, left * p_bulk + 1)
            want = int(min(spare, share * rng.expovariate(1.0)))
            count, gen = _bulk(net, t, max(12, want), rng)
        else:
            count, gen = _small(kind, net, t, rng)
            small_total += count
            small_n += 1
        total += count
        stats[kind] += 1
        # the flow that crosses the budget is cut short, like a capture that stops mid-transfer
        yield t, islice(gen, n_packets - total + count) if total > n_packets else gen
        if total >= n_packets:
            stats["packets"] = n_packets
            return
    if n_packets > total:  # the rest of the budget: one steady UDP stream (a call) to the end
        c, cl = net.client()
        stats["udp"] += 1
        stats["packets"] = n_packets
        gap = max(0.001, (start + duration - t) / (n_packets - total))
        yield t, udp_stream(cl, net.server(), net.sport(c), 3478, t, n_packets - total, interval=gap, rng=rng)
    else:
        stats["packets"] = total


def _bulk(net: _Network, t: float, want: int, rng: random.Random) -> tuple[int, Iterator[Packet]]:
    """A download (or now and then an upload) of about `want` packets over HTTPS."""
    c, cl = net.client()
    nseg = max(1, (want - 12) * 2 // 3)
    size = nseg * 1460 - rng.randrange(1400)
    upload = rng.random() < 0.15
    msgs = tls_messages(rng.choice(SITES), size if upload else 600, 2000 if upload else size, rng)
    gen = tcp_session(cl, net.server(), net.sport(c), 443, t, messages=msgs, rtt=rng.uniform(0.005, 0.1),
                      rate=rng.uniform(1e6, 12e6), rng=rng)
    return tcp_packet_count(msgs), gen


def _small(kind: str, net: _Network, t: float, rng: random.Random) -> tuple[int, Iterator[Packet]]:
    """One flow of a small kind, and exactly how many packets it will have."""
    v6 = kind.endswith("6")
    c, cl = net.client6() if v6 else net.client()
    srv = net.server6() if v6 else net.server()
    sport = net.sport(c)
    rtt = rng.uniform(0.005, 0.12)
    msgs: list[Message]
    if kind in ("dns", "dns6"):
        resolver = "fd00:1::53" if v6 else "10.0.0.53"
        answer = None if rng.random() < 0.04 else srv
        name = f"h{rng.randrange(10**6)}.{rng.choice(SITES)}"
        return 2, dns_query(cl, resolver, name, answer, t, sport=sport, rtt=rtt / 4, rng=rng)
    if kind == "udp":
        n = rng.choice((1, 2, 2, 2, 4, 6, 10))
        port = rng.choice((123, 443, 1900, 3478, 5353, 514, 161))
        msgs_u = [("c" if j % 2 == 0 else "s", rng.randbytes(rng.randint(20, 1200))) for j in range(n)]
        return n, udp_exchange(cl, srv, sport, port, t, msgs_u, rtt=rtt, rng=rng)
    if kind == "icmp":
        count, reply = rng.randint(1, 4), rng.random() < 0.9
        return count * (2 if reply else 1), icmp_echo(cl, srv, t, count, ident=sport, reply=reply, rtt=rtt)
    if kind == "arp":
        target = f"10.0.{1 + rng.randrange(net.n_clients) // 250}.{1 + rng.randrange(250)}"
        reply = rng.random() < 0.8
        return 2 if reply else 1, arp_who_has(cl, target, t, reply=reply)
    if kind == "http":
        msgs = http_messages(rng.choice(SITES), "/", int(rng.lognormvariate(8.5, 1.0)) % 30000)
        return tcp_packet_count(msgs), tcp_session(cl, srv, sport, 80, t, messages=msgs, closer="server",
                                                   rtt=rtt, rng=rng)
    if kind == "ssh":
        msgs = ssh_messages(rng.randint(1, 3), success=rng.random() < 0.5, data_bytes=rng.randint(0, 8000))
        return tcp_packet_count(msgs), tcp_session(cl, srv, sport, 22, t, messages=msgs, rtt=rtt, rng=rng)
    if kind == "keepalive":
        every = rng.uniform(20, 60)
        n = rng.randint(3, 12)
        msgs = [m for j in range(n) for m in (("c", Content(rng.randint(40, 120)), every if j else 0.0),
                                              ("s", Content(rng.randint(40, 200))))]
        return tcp_packet_count(msgs), tcp_session(cl, srv, sport, 5222, t, messages=msgs, rtt=rtt, rng=rng)
    if kind in ("rst", "open"):
        msgs = [("c", Content(rng.randint(100, 800))), ("s", Content(rng.randint(100, 4000)))]
        close = "rst" if kind == "rst" else "none"
        return tcp_packet_count(msgs, close), tcp_session(cl, srv, sport, rng.choice((443, 80, 8080)), t,
                                                          messages=msgs, close=close, rtt=rtt, rng=rng)
    # https, https6
    resp = int(min(40000, rng.lognormvariate(8.8, 1.0)))
    msgs = tls_messages(rng.choice(SITES), rng.randint(200, 1200), resp, rng)
    return tcp_packet_count(msgs), tcp_session(cl, srv, sport, 443, t, messages=msgs, rtt=rtt, rng=rng)
