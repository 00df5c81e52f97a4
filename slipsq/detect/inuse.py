"""Servers in use: non-local addresses that answered a local client (and local IPv6 servers that
answered the Internet), and when they last did.

A signal made of SYNs or pings alone (a scan, a reconnection storm) can be forged: packets sent
with, or sent to, the address of a server everyone uses (the network's DNS resolver, a bank, a
video service) would otherwise get that server blocked for everyone. A server that local hosts are
really using answered them, which a forger cannot fake from outside, so detectors whose evidence
could be forged ask `in_use(ip, ts, window)` and then report without blocking (may_block=False).

One table per engine, shared by every detector through `Context.servers` (scans and storms ask the
same question of the same facts). Known from flows that closed or reported: a server first
answering less than a flow timeout ago (60 s for UDP) is not known yet. Bounded (least recently
refreshed forgotten first) and O(1) per flow. Data only: no I/O, no clock.

`ServersInUse` is the readable twin of the compiled `detect/_portscan.Servers` (asked on every
answered flow, by two detectors); `make_servers` chooses (slipsq.twins), tests/test_detect_compiled.py
holds them equal.
"""

from __future__ import annotations

from collections import OrderedDict

from slipsq import twins
from slipsq.addr import parse_ip_int
from slipsq.detect.prefixes import is_local
from slipsq.detect.tcpstate import opened
from slipsq.flow import Flow
from slipsq.lru import new, put

MAX_SERVED = 65_536  # servers remembered (least recently refreshed forgotten first)
REFRESH = 300.0  # a known server's time is refreshed at most this often (most flows cost one lookup)


def _v6(text: str) -> bool:
    """An IPv6 address (an IPv4-mapped one, in any spelling, is the IPv4 address it carries)."""
    parsed = parse_ip_int(text)
    return parsed is not None and parsed[0] == 6


class ServersInUse:
    __slots__ = ("bound", "when")

    def __init__(self, bound: int = MAX_SERVED) -> None:
        self.when: OrderedDict[str, float] = new()  # server -> its last answer to a local client (LRU order)
        self.bound = bound

    def note(self, flow: Flow) -> None:
        """`flow` was answered (the caller checked, e.g. with portscan.unanswered): remember its
        server when it is non-local and its client local, or an IPv6 client (homes number their
        hosts with global IPv6 addresses, which no range tells from the Internet's unless
        network.local names them; inline, one end of every flow is in this network). A local IPv6
        server that answered a client outside is remembered too: over IPv6 no NAT stands between it
        and the Internet, and without reverse-path filtering anyone can send packets with its
        address. The price: such a host's own scans alone do not block it. A TCP flow
        counts only when its handshake completed (tcpstate.opened): a scanner that sends one
        SYN-ACK to a local host (which answers RST) must not make itself a server in use. The time is
        refreshed at most every REFRESH seconds, so "in the last window" may end up to 5 minutes
        early."""
        server, when = flow.daddr, flow.end  # its last packet: when it last answered
        last = self.when.get(server)
        if last is not None and when < last + REFRESH:
            return
        if is_local(server):
            if is_local(flow.saddr) or not _v6(server):
                return  # one of ours is in use only as an IPv6 server of the Internet (below)
        elif not (is_local(flow.saddr) or _v6(flow.saddr)):
            return
        if flow.proto == "tcp" and not opened(flow):  # a SYN-ACK nobody asked for is no use of it
            return
        put(self.when, server, when, self.bound)

    def in_use(self, ip: str, ts: float, window: float) -> bool:
        """True when `ip` answered a local client within `window` seconds before `ts`."""
        last = self.when.get(ip)
        return last is not None and last >= ts - window


def make_servers(bound: int = MAX_SERVED) -> ServersInUse:
    """The compiled table, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._portscan")
    cls: type[ServersInUse] = ServersInUse if fast is None else fast.Servers
    return cls(bound)
