"""Port scan detector: vertical (one source, one target, many ports), horizontal (one source, many
targets, one port) and ICMP sweeps (echo requests from one source to many targets).

Targets are counted per judge window (index = int(flow start // judge.window)), so a scan and the
judge's sum live in the same hour. It returns Evidence only: it never blocks and never does I/O.

What counts: a TCP/UDP target counts only when every flow to it was unanswered or rejected (see
`unanswered`): scanners mostly hit closed ports and absent hosts, while normal clients reach the
services they use. So browsing 200 web servers on 443 counts nothing, and passive FTP data ports on
one server count nothing. For ICMP sweeps every echo-requested host counts (a live host answers a
ping sweep too); answered echoes only lower the confidence. An unanswered server that a DNS answer
the house trusts named (ctx.dns_names) is no target of a horizontal scan: scanners sweep addresses,
not names, while a dual-stack client whose IPv6 is broken sends an unanswered SYN to every site it
visits before IPv4 works (Happy Eyeballs: 100 sites an hour blocked the laptop's IPv6 address).
UDP to traceroute's ports (33434-33689) and tracepath's (44444-44507) counts nothing: one traceroute
to a host that filters UDP is 90 (Linux) to 192 (macOS) unanswered ports on it, and blocked the
person tracing their lag (the routers' ICMP answers are not the target's).

Arithmetic (n = targets counted, T = the threshold option for the kind):
  threat = medium for n >= T, high for n >= 3 T, critical for n >= 10 T
  confidence = min(1, failed share / 0.9), the failed share being failed targets / all targets
               contacted by that (source, port) or (source, target) (a scan that finds a few open
               hosts or ports, up to 10 %, is still a certain scan); for ICMP 0.2 + 0.8 ×
               min(1, the unanswered share / 0.3): a sweep meets empty addresses (the Internet and a
               home /24 are mostly empty; a busy office or hosting network 70 % alive still leaves
               30 % unanswered: 1.0), while what pings hosts that nearly all answer is watching them:
               Smokeping's probes of sites whose CDN names resolve elsewhere each run (2 %
               unanswered), a game's server browser pinging the servers it lists (6-8 %), 400 hosts
               an hour, blocked the pinging host at 0.6 x 2 (a hunt, 2026-12-07: the judge doubled a
               finding that grew for over a minute). The share is its lower bound (Wilson's, 95 %
               one-sided) on the pings so far: the first 100 of a browser 10 % of whose servers are
               gone met 15 % by chance in 8 hours of 150 (a review). Those now score 0.2-0.4, below
               judge.persist_min (0.6); 30 % unanswered of 120 hosts is certain
  so 100 closed ports on one host (T = 10) is critical × 1.0 = 1.0 and blocks by itself; a horizontal
  scan of 30 hosts is high × ~1.0 = 0.8 and blocks with one more finding in the hour.
  Each port of a horizontal scan is a finding of its own (a worm sweeping 23, 2323 and 37215 adds
  up), except a *weak* UDP one, where most targets answered (confidence below WEAK, 0.5: a failed
  share under 45 %): a source's weak horizontal UDP findings are one finding, their best. A game's
  server browser queries 1,500 listed servers on ten UDP query ports (27015-27020, 2303, ...), a
  fifth of them gone: ten findings of 0.1-0.2 added up to 1.07 and blocked the gaming PC. Over TCP
  a SYN-ACK is no answer a client would want (a bot working from a hit list gets half its targets
  answering on every port, a red team found): weak TCP findings still add up, one a port.
Defaults (10 ports / 10 hosts, Slips uses 5) leave room for normal hosts, which do meet a few dead
servers (a stale DNS answer, a P2P peer gone): on the CTU normal day (2,380 flows) no source reaches
more than 1 unanswered target per port or per host in any hour, and the bundled normal-home capture
none (see tests); real scans in the shared captures reach 10 to 100+ within a minute.
Evidence is emitted when a kind first crosses T, again when its count doubles or its threat rises.

A scan's source address can be forged: SYNs or pings sent with the address of, say, the network's
DNS resolver would otherwise get that resolver blocked for everyone. So a scanner that local hosts
are using as a server (one of them connected to it and got an answer within the last judge window)
is reported but never blocked on scans (may_block=False), unless `portscan.block_servers_in_use`
(the servers-in-use table, detect/inuse.py, is shared with the reconnection-storm detector).
Other evidence against it (a beacon, a threat list) still blocks it as usual.

A local host running P2P software (ctx.peers, the p2p detector) tries hundreds of swarm peers and DHT
nodes an hour, and many of them are gone; those on the clients' default ports (peers.P2P_PORTS:
6881-6889, 51413, ...) or on a high non-service port the host itself listens on (peers dialled it
there, or it sends its swarm UDP from it: an Ethereum node's 30303 and 9000, IPFS's 4001) pile up
into a horizontal "scan" of that port, which from such a host is reported, never blocks by itself.
Its scans of any other port (445, 23, an IoT worm's 37215 or 7547) and its vertical scans still do.

A vertical scan of a local host by a local host, of fewer than 20 x `portscan.vertical_ports` (200)
unanswered ports, is reported, never blocks by itself, unless `portscan.local_may_block` (the rule of the other
detectors for traffic between two of ours): Home Assistant's Nmap Tracker looks over the top 100
ports of every live LAN host every 120 s (its "-F" entries), and a phone's Fing scans a device's
ports on a tap; the gateway's own 97 closed ports blocked the Home Assistant box (a hunt,
2026-12-07). A worm's look at the router and the NAS (nmap's top 1000 ports, or all of them) goes
past 200 and blocks as before (a red team's: with fewer than ten live hosts on the LAN no port's
sweep reaches the horizontal threshold, so nothing else would). Inline the gateway sees such scans
only across the VLANs it routes. Sweeps (horizontal, ICMP) still block from a LAN host to LAN hosts: a
worm goes after one port on many hosts, and a random-address worm's targets fall in private ranges
too. CGNAT's shared space is no LAN here (a port-forwarded attacker on the same ISP comes from it).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence

from slipsq import twins
from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, report_due
from slipsq.detect.inuse import ServersInUse
from slipsq.detect.prefixes import Memo, is_local, shared_space
from slipsq.flow import Flow
from slipsq.records import CRITICAL, HIGH, MEDIUM, Evidence

# Zeek conn states with no answer from the responder (or a reset one); Argus single-word states
_FAILED_STATES = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR", "OTH", "INT", "REQ", "RST",
                            "URP", "URH", "URN", "URF", "URO", "URHPRO", "URFIL", "URHU", "URNU", "URPRE",
                            "ECO"})  # Argus: ECO is an echo request without reply, ECR answered
_ANSWERED_STATES = frozenset({"SF", "S1", "S2", "S3", "RSTO", "RSTR", "CON", "ECR", "ACC", "EST"})
_ECHO_REQUEST = {"icmp": 8, "ipv6-icmp": 128}
# traceroute's UDP probes (Linux, macOS, mtr -u): destination port 33434 + n for the n-th probe, three
# a hop, up to 64 hops; the routers' "time exceeded" answers are not the target's, so every probe
# of a traceroute to a host that filters UDP is an unanswered port: 90 to 192 of them
TRACEROUTE_FIRST, TRACEROUTE_PORTS = 33434, 256
# iputils tracepath (what some distributions ship instead of traceroute): 44444 + a slot that wraps
# at 64, so 44444-44507, for the same reason
TRACEPATH_FIRST, TRACEPATH_PORTS = 44444, 64
# unanswered ports of one LAN host, in vertical thresholds, below which a LAN host's vertical scan of
# it is discovery: 20 x 10 = 200 by default (nmap's "-F" is 100 ports; its default, the top 1000),
# and a report point whatever the threshold (10 T, then its double): see the module docstring
LAN_DISCOVERY_THRESHOLDS = 20


def _state_unanswered(st: str) -> bool | None:
    """What a state string says (see `unanswered`); None when it says nothing."""
    if st in _FAILED_STATES:
        return True
    if st in _ANSWERED_STATES:
        return False
    if "_" in st:
        dst = st.partition("_")[2]
        return not ("S" in dst or "P" in dst or "F" in dst)
    return None


# state -> _state_unanswered(state): a table's flows carry a few hundred distinct flag combinations,
# asked about by three detectors per flow (bounded: a flow file may carry any text)
_BY_STATE = Memo(_state_unanswered, 4096).__getitem__


def wilson_lower(k: int, n: int, z: float = 1.645) -> float:
    """The lower bound of Wilson's score interval for k successes in n trials (z 1.645: 95 % one-sided)."""
    if n <= 0:
        return 0.0
    p = k / n
    centre = p + z * z / (2 * n)
    spread = z * ((p * (1 - p) + z * z / (4 * n)) / n) ** 0.5
    return max(0.0, (centre - spread) / (1 + z * z / n))


def unanswered(f: Flow) -> bool:
    """True when the flow got no answer or a reject: from its state, else from its packet counts.

    Argus TCP states are "<source flags>_<destination flags>": the target answered when it sent a
    SYN, data, or a FIN (e.g. S_ and S_RA are unanswered/rejected, FSPA_FSPA answered).
    """
    said = _BY_STATE(f.state)
    return f.dpkts == 0 if said is None else said


class _Targets:
    """One (source, port, proto) or (source, target, proto) key of a window: its targets and tally."""

    __slots__ = ("answered", "emitted", "emitted_threat", "failed", "first", "last", "targets")

    def __init__(self, first: float) -> None:
        self.first = self.last = first
        self.targets: dict[str | int, bool] = {}  # target (host, or port number) -> answered
        self.failed = self.answered = self.emitted = 0
        self.emitted_threat = 0.0


# a horizontal UDP finding below this confidence (most of its targets answered) is one of its
# source's weak findings, which count once together (the module docstring)
WEAK = 0.5

# the kinds, by the index Tally counts them under
KINDS = ("horizontal", "vertical", "icmp-sweep")
HORIZONTAL, VERTICAL, ICMP_SWEEP = 0, 1, 2
TallyKey = tuple[str, "str | int", str]


class Tally:
    """The per-flow state of one judge window: per kind, (source, port or target, proto) -> its
    targets. The readable twin of the compiled `_portscan.Tally` (slipsq.twins chooses; the
    differential tests in tests/test_portscan_compiled.py hold them equal). Bounded: at most
    `max_keys` keys per kind, `max_targets` targets per key, `max_total` targets in all."""

    __slots__ = ("max_keys", "max_targets", "max_total", "seen", "total")

    def __init__(self, max_keys: int, max_targets: int, max_total: int) -> None:
        self.max_keys, self.max_targets, self.max_total = max_keys, max_targets, max_total
        self.seen: list[dict[TallyKey, _Targets]] = [{}, {}, {}]  # by kind index
        self.total = 0  # targets tracked in this window, all keys

    def reset(self) -> None:
        """A new window: forget every key."""
        self.seen = [{}, {}, {}]
        self.total = 0

    def pair(self, saddr: str, daddr: str, dport: int, proto: str, failed: bool,
             start: float, sweep: bool = True) -> tuple[_Targets | None, _Targets | None] | None:
        """A TCP/UDP flow: count it horizontally (unless not `sweep`) and vertically. None (most
        flows) when neither count can make new evidence, else the (horizontal, vertical) tallies to
        judge (or None)."""
        h = self.count(HORIZONTAL, (saddr, dport, proto), daddr, failed, start) if sweep else None
        v = self.count(VERTICAL, (saddr, daddr, proto), dport, failed, start)
        return None if h is None and v is None else (h, v)

    def count(self, kind: int, key: TallyKey, target: str | int, failed: bool, start: float) -> _Targets | None:
        """Count `target` under `key`; the key's tally when it may make new evidence, else None."""
        seen = self.seen[kind]
        t = seen.get(key)
        if t is None:
            if len(seen) >= self.max_keys:
                return None
            t = seen[key] = _Targets(start)
        elif start > t.last:
            t.last = start
        targets = t.targets
        before = targets.get(target)
        if before is None:
            if len(targets) >= self.max_targets or self.total >= self.max_total:
                return None
            self.total += 1
            targets[target] = not failed
            if failed:
                t.failed += 1
            else:
                t.answered += 1
                # a TCP/UDP count (failed targets) that did not grow cannot make new evidence:
                if kind != ICMP_SWEEP:  # the judge would find nothing it has not judged already
                    return None
        elif not before and not failed:  # answered now: no longer a failed target
            targets[target] = True
            t.failed -= 1
            t.answered += 1
            if kind != ICMP_SWEEP:  # the count fell: nothing new (as above)
                return None
        else:
            return None
        return t


Hit = tuple[int, TallyKey, _Targets]  # a kind's count that reached its threshold: (kind, key, tally)


class Counts:
    """The detector's per-flow path: the window index, the window's Tally, and the servers-in-use
    notes of answered flows. The readable twin of the compiled `_portscan.Counts` (the one call per
    flow; make_counts chooses, tests/test_detect_compiled.py holds them equal). `add` answers None
    for most flows; only a count that reached its kind's threshold goes back to Python to be judged."""

    __slots__ = ("index", "judge", "names", "note_servers", "servers", "tally", "thresholds", "window")

    def __init__(self, tally: Tally, servers: ServersInUse, window: float, note_servers: bool,
                 thresholds: tuple[int, int, int], judge: Callable[[list[Hit], Flow], Sequence[Evidence]],
                 names: Container[str] | None = None) -> None:
        self.tally, self.servers, self.window = tally, servers, window
        self.names: Container[str] = {} if names is None else names  # ctx.dns_names: addresses named
        self.note_servers = note_servers  # off with portscan.block_servers_in_use (nobody asks)
        self.thresholds = thresholds  # by kind index
        self.judge = judge  # the hits of a flow -> evidence (PortScan._judge_hits)
        self.index = -1  # the judge window counted in

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        """The detector's on_flow: count the flow, judge what reached a threshold."""
        hits = self.add(flow)
        return NO_EVIDENCE if hits is None else self.judge(hits, flow)

    def reset(self, index: int) -> None:
        """A new window: forget every count."""
        self.index = index
        self.tally.reset()

    def add(self, flow: Flow) -> list[Hit] | None:
        """Count one flow. None (most flows), else the counts that reached their threshold, horizontal
        before vertical (the judge may still find nothing new in them)."""
        if flow.is_report:  # a long connection, still open: counts for "in use", not as a target
            if flow.proto in ("tcp", "udp") and self.note_servers and not unanswered(flow):
                self.servers.note(flow)
            return None
        index = int(flow.start // self.window)
        if index > self.index:  # a new window: scans are judged per window (a late flow of the
            self.reset(index)  # previous window is counted in the current one)
        proto = flow.proto
        if proto == "tcp" or proto == "udp":
            failed = unanswered(flow)
            if not failed and self.note_servers:
                self.servers.note(flow)
            if proto == "udp" and _traceroute_port(flow.dport):
                return None  # a traceroute probe: no service listens there, no scan counts it
            # the port is a number here (proto is in the key); "port/proto" is formatted in _judge
            sweep = not (failed and flow.daddr in self.names)  # a server a DNS answer named: no sweep target
            hv = self.tally.pair(flow.saddr, flow.daddr, flow.dport, proto, failed, flow.start, sweep)
            if hv is None:
                return None
            h, v = hv
            hits: list[Hit] = []
            if h is not None and h.failed >= self.thresholds[HORIZONTAL]:
                hits.append((HORIZONTAL, (flow.saddr, flow.dport, proto), h))
            if v is not None and v.failed >= self.thresholds[VERTICAL]:
                hits.append((VERTICAL, (flow.saddr, flow.daddr, proto), v))
            return hits or None
        if _ECHO_REQUEST.get(proto) == flow.sport:
            key: TallyKey = (flow.saddr, "", proto)
            t = self.tally.count(ICMP_SWEEP, key, flow.daddr, unanswered(flow), flow.start)
            if t is not None and t.failed + t.answered >= self.thresholds[ICMP_SWEEP]:
                return [(ICMP_SWEEP, key, t)]
        return None


def _traceroute_port(port: object) -> bool:
    """A UDP destination port traceroute probes (TRACEROUTE_FIRST and the next TRACEROUTE_PORTS - 1) or
    tracepath does (TRACEPATH_FIRST and the next TRACEPATH_PORTS - 1)."""
    return type(port) is int and (0 <= port - TRACEROUTE_FIRST < TRACEROUTE_PORTS
                                  or 0 <= port - TRACEPATH_FIRST < TRACEPATH_PORTS)


def make_counts(window: float, block_in_use: bool, thresholds: tuple[int, int, int], servers: ServersInUse,
                max_keys: int, max_targets: int, max_total: int,
                judge: Callable[[list[Hit], Flow], Sequence[Evidence]], names: Container[str] | None = None) -> Counts:
    """The compiled per-flow path (with the compiled Tally), or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._portscan")
    if fast is None:
        return Counts(Tally(max_keys, max_targets, max_total), servers, window, not block_in_use, thresholds, judge,
                      names)
    return fast.Counts(fast.Tally(max_keys, max_targets, max_total), servers, window, not block_in_use,  # type: ignore[no-any-return]
                       thresholds, judge, names)


class PortScan(Detector):
    name = "portscan"
    evidence_kinds = ("vertical", "horizontal", "icmp-sweep")
    options = (
        Option("portscan.vertical_ports", 10, "unanswered ports on one host from one source that make a "
               "vertical scan", positive, "> 0"),
        Option("portscan.horizontal_hosts", 10, "unanswered hosts on one port from one source that make a "
               "horizontal scan", positive, "> 0"),
        Option("portscan.icmp_hosts", 10, "hosts echo-requested by one source that make an ICMP sweep",
               positive, "> 0"),
        Option("portscan.max_targets", 20_000, "targets counted per (source, port) or (source, host): a "
               "full 65535-port scan still counts far past every threshold, memory stays bounded", positive, "> 0"),
        Option("portscan.max_keys", 200_000, "(source, port) and (source, host) pairs tracked per kind per "
               "window; a pair first seen when full is not counted", positive, "> 0"),
        Option("portscan.max_total_targets", 2_000_000, "targets tracked over all pairs of a window (bounds "
               "memory under a flood of forged sources); a target first seen when full is not counted",
               positive, "> 0"),
        Option("portscan.max_servers", 65_536, "servers in use by local hosts remembered (least recently "
               "used forgotten first)", positive, "> 0"),
        Option("portscan.block_servers_in_use", False, "a scan from an address local hosts were answered by "
               "in the last window may block it (off: alert only, as a scan's source can be forged)"),
        Option("portscan.local_may_block", False, "a vertical scan of a local host by a local host may block "
               "the scanner; off: under 200 unanswered ports it is reported, never blocks (Home Assistant's "
               "Nmap Tracker, Fing's device scan; larger scans and sweeps of many hosts still block)"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.thresholds = {"vertical": self.opt("vertical_ports"), "horizontal": self.opt("horizontal_hosts"),
                           "icmp-sweep": self.opt("icmp_hosts")}
        self.block_in_use: bool = self.opt("block_servers_in_use")
        self.local_may_block: bool = self.opt("local_may_block")
        self.servers = ctx.servers  # shared: who answered local hosts (detect/inuse.py)
        self.servers.bound = self.opt("max_servers")
        # the per-flow path and the window's counts: compiled, or the readable twin
        self.counts = make_counts(self.window, self.block_in_use, (self.opt("horizontal_hosts"),
                                  self.opt("vertical_ports"), self.opt("icmp_hosts")), self.servers,
                                  self.opt("max_keys"), self.opt("max_targets"), self.opt("max_total_targets"),
                                  self._judge_hits, ctx.dns_names)
        # the engine calls on_flow once per flow: hand it the compiled path itself rather than the
        # method below that calls it (its Python frame cost 6 % of the detector's instructions)
        self.on_flow = self.counts.on_flow  # type: ignore[method-assign]

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        return self.counts.on_flow(flow)  # (not called by the engine: see __init__)

    def _judge_hits(self, hits: list[Hit], flow: Flow) -> Sequence[Evidence]:
        """The evidence of the counts that reached their threshold on `flow` (Counts.add)."""
        out: list[Evidence] = []
        for kind, key, t in hits:
            out += self._judge(kind, key, t, flow)
        return out or NO_EVIDENCE

    def on_tick(self, now: float) -> Sequence[Evidence]:
        # a window that ended is forgotten even when no flow comes to start the next one (after a
        # flood of forged sources, its targets would otherwise stay in memory until one does)
        index = int(now // self.window)
        if index > self.counts.index and self.counts.tally.total:
            self.counts.reset(index)
        return NO_EVIDENCE

    def _judge(self, k: int, key: TallyKey, t: _Targets, flow: Flow) -> Sequence[Evidence]:
        kind = KINDS[k]
        threshold = self.thresholds[kind]
        total = t.failed + t.answered
        n = total if kind == "icmp-sweep" else t.failed
        if n < threshold:
            return NO_EVIDENCE
        threat = CRITICAL if n >= 10 * threshold else HIGH if n >= 3 * threshold else MEDIUM
        if not report_due(t, n, threat):
            return NO_EVIDENCE
        share = t.failed / total
        # a scan finds what it looks for: up to 10 % of answered targets is still a certain scan
        if kind == "icmp-sweep":  # the share's lower bound: a sample of 100 pings must not decide it
            conf = 0.2 + 0.8 * min(1.0, wilson_lower(t.failed, total) / 0.3)
        else:
            conf = min(1.0, share / 0.9)
        src, what, proto = key
        span = f"{t.last - t.first:.0f}s"
        if kind == "horizontal":
            what = f"{what}/{proto}"
            desc = (f"horizontal port scan to port {what} from {src} to {n} unanswered hosts in {span} "
                    f"({t.answered} answered)")
            # a weak UDP finding (most targets answered) is one of the source's weak ones (module docstring)
            weak = conf < WEAK and proto == "udp"
            dst, port, ekey = flow.daddr, flow.dport, f"hscan:{src}:{'weak/udp' if weak else what}"
        elif kind == "vertical":
            desc = (f"vertical port scan to {what} from {src}: {n} unanswered {proto} ports in {span} "
                    f"({t.answered} answered)")
            dst, port, ekey = str(what), 0, f"vscan:{src}:{what}/{proto}"
        else:
            desc = f"ICMP echo sweep from {src} to {n} hosts in {span} ({t.answered} answered)"
            dst, port, ekey = flow.daddr, 0, f"icmpsweep:{src}/{proto}"
        ts = max(t.last, self.counts.index * self.window)  # a late flow of the last window counts in this one
        in_use = not self.block_in_use and self.servers.in_use(src, ts, self.window)
        if in_use:
            desc += (f"; {src} served connections in the last {self.window:.0f}s: a scan alone never "
                     f"blocks it, its source may be forged (portscan.block_servers_in_use)")
        swarm = not in_use and kind == "horizontal" and self.ctx.peers.swarm_port(src, port, ts)
        if swarm:
            desc += (f"; {src} runs P2P software (see p2p) and its swarm lives on this port (a client's "
                     "default, or one it listens on itself): the peers of a swarm come and go, and the gone "
                     "ones look like this, so it alone never blocks")
        # a LAN host looking over another's ports: discovery apps do (module docstring)
        lan = (kind == "vertical" and n < LAN_DISCOVERY_THRESHOLDS * threshold and not self.local_may_block
               and is_local(src) and is_local(dst) and not shared_space(src))
        if lan:
            desc += "; both ends local: reported, never blocks (portscan.local_may_block)"
        return [Evidence(ts=ts, detector=self.name, offender=src, src_ip=src, dst_ip=dst, dst_port=port,
                         proto=proto, description=desc, threat_level=threat, confidence=round(conf, 3),
                         label=kind, key=ekey, flows=(flow,), may_block=not (in_use or swarm or lan))]
