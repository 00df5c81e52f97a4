"""Peer-to-peer awareness: recognises local hosts that run P2P software (BitTorrent, its DHT and uTP,
other swarms) from their flows, so that their periodic chatter with peers is not taken for a C&C.

The principle: a C&C beacon talks to a few servers; keep-alives to a swarm of peers are not a beacon.
So a local host is a P2P host when, within `p2p.horizon` seconds (600), it exchanged traffic (the
remote end answered) with at least `p2p.min_peers` (10) distinct remote addresses on high ports
(>= 1024, not a known service port such as 8080 or 3389, see peers.SERVICE_PORTS) that no DNS answer
named, on at least half as many distinct remote ports (a swarm listens on random ports; a scan or a
cluster of servers uses one). Remote hosts that connect in to a local high port count as its peers
too, and are remembered as peers whatever their port. The host stays a P2P host for `p2p.memory`
seconds (3600) after the last time it met the rule.

What follows (in beacon.py): a regular tuple from a P2P host to a peer-like address (one that
connected in, or a high non-service port without a DNS name) is reported once per window at low
threat, may_block=False: at most a low alert, never a block of the peer. A beacon from the same
host to a server on 443, to a named host or to a service port is still judged as a beacon.

Evidence: one info-level line per P2P host per judge window ("runs peer-to-peer software"), so the
alerts and `slipsq explain` show why its chatter was let be. It never blocks and never does I/O.
The per-flow tests (which flows are a peer exchange) are `Intake`, compiled as `_p2p.Intake`
(slipsq.twins chooses): most flows never reach this module's Python.
Limits: recognition is by flows only (no payload signatures yet), so a client with fewer than
`p2p.min_peers` answered peers is not recognised; flow files without DNS make every address
"unnamed", which only matters for hosts that also meet the peer count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from slipsq import twins
from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector
from slipsq.detect.peers import SERVICE_PORTS
from slipsq.detect.prefixes import is_local
from slipsq.flow import Flow
from slipsq.lru import Nested, put
from slipsq.records import INFO, Evidence

_MAX_TRACKED = 65_536  # local hosts whose recent peers are counted
_MAX_PEERS = 128  # recent peers kept per host (the count only has to reach min_peers); p2p.max_total_peers bounds all
# what the intake hands an exchange to: (local host, peer, peer's port, inbound, flow) -> evidence
Count = Callable[[str, str, int, bool, Flow], Sequence[Evidence]]


class Intake:
    """The detector's per-flow path, one call per flow: which flows count as a peer exchange. An
    exchange is an answered TCP or UDP flow (packets both ways; a probe nobody answered is a scan's)
    between a local host and a remote address: outbound to a high port that is no known service and
    no DNS answer named, or inbound to a local high port that is no known service (a swarm found
    the host's listening port; the peer counts whatever its own port). `on_flow` answers
    NO_EVIDENCE for every other flow (most flows) and hands an exchange to `count(host, peer, port,
    inbound, flow)`. The readable twin of the compiled `_p2p.Intake` (make_intake chooses,
    tests/test_detect_compiled.py holds them equal).

    `local` answers "is this address local" (prefixes.is_local); `ctx.dns_names` is read per flow,
    not kept: a reload gives the context the old names map after the detector was made."""

    __slots__ = ("count", "ctx", "local")

    def __init__(self, ctx: Context, local: Callable[[str], bool], count: Count) -> None:
        self.ctx, self.local, self.count = ctx, local, count

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        if flow.proto not in ("tcp", "udp") or not flow.dpkts or not flow.spkts:
            return NO_EVIDENCE
        saddr, daddr = flow.saddr, flow.daddr
        src_local, dst_local = self.local(saddr), self.local(daddr)
        if src_local == dst_local:
            return NO_EVIDENCE
        if src_local:  # outbound: the remote end is a peer if it listens on a high, unnamed port
            port = flow.dport
            if port < 1024 or port in SERVICE_PORTS or daddr in self.ctx.dns_names:
                return NO_EVIDENCE
            return self.count(saddr, daddr, port, False, flow)
        if flow.dport < 1024 or flow.dport in SERVICE_PORTS:  # inbound to a port no swarm listens on
            return NO_EVIDENCE
        return self.count(daddr, saddr, flow.sport, True, flow)


def make_intake(ctx: Context, local: Callable[[str], bool], count: Count) -> Intake:
    """The compiled Intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._p2p")
    cls: type[Intake] = Intake if fast is None else fast.Intake
    return cls(ctx, local, count)


class P2P(Detector):
    name = "p2p"
    evidence_kinds = ("p2p-host",)
    options = (
        Option("p2p.min_peers", 10, "distinct unnamed high-port peers (that answered) that make a P2P host",
               lambda v: v >= 3, ">= 3"),
        Option("p2p.horizon", 600.0, "seconds within which those peers must be seen", positive, "> 0"),
        Option("p2p.memory", 3600.0, "seconds a host stays a P2P host after the last sign", positive, "> 0"),
        Option("p2p.max_total_peers", 65_536, "recent peers remembered over all hosts (the least recently active "
               "hosts' are forgotten first)", positive, "> 0"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.min_peers: int = self.opt("min_peers")
        self.horizon: float = self.opt("horizon")
        ctx.peers.memory = self.opt("memory")
        self.window: float = self.cfg["judge.window"]
        # host -> {peer: (last seen, remote port)}, least recently seen first
        self.recent: Nested[str, str, tuple[float, int]] = Nested(_MAX_TRACKED, _MAX_PEERS,
                                                                  self.opt("max_total_peers"))
        self.reported: OrderedDict[str, int] = OrderedDict()  # host -> judge window of its last report
        self.intake = make_intake(ctx, is_local, self._count)
        # the engine calls on_flow once per flow: hand it the compiled path itself (the Python frame
        # of a method that only calls it would cost as much as the compiled tests)
        self.on_flow = self.intake.on_flow  # type: ignore[method-assign]

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        return self.intake.on_flow(flow)  # (not called by the engine: see __init__)

    def _count(self, host: str, peer: str, port: int, inbound: bool, flow: Flow) -> Sequence[Evidence]:
        """A flow the intake let through: an exchange of local `host` with `peer`:`port`."""
        if inbound:  # a peer dialled the host's port: it listens there
            self.ctx.peers.connected_in(host, peer, flow.end)
            self.ctx.peers.listens(host, flow.dport, flow.end)
        elif flow.proto == "udp" and flow.sport == flow.dport:  # its swarm's UDP from its own listening port
            self.ctx.peers.listens(host, flow.sport, flow.end)
        now = flow.end
        self.recent.put(host, peer, (now, port))
        peers = self.recent.touch(host)
        horizon = now - self.horizon
        while peers:  # oldest first: drop those seen before the horizon (amortised O(1))
            if next(iter(peers.values()))[0] >= horizon:
                break
            self.recent.pop_first(host)
        if len(peers) < self.min_peers:
            return NO_EVIDENCE
        last = self.ctx.peers.hosts.get(host)
        if last is not None and now - last < 60.0:  # recognised a minute ago: no need to count again
            return NO_EVIDENCE
        ports = {p for _, p in peers.values()}
        if 2 * len(ports) < self.min_peers:
            return NO_EVIDENCE
        self.ctx.peers.mark(host, now)
        window = int(now // self.window)
        if self.reported.get(host) == window:
            return NO_EVIDENCE
        put(self.reported, host, window, _MAX_TRACKED)
        desc = (f"{host} runs peer-to-peer software: {len(peers)} peers on {len(ports)} high ports without "
                f"DNS names within {self.horizon:g}s; its periodic chatter with peers is not judged a beacon")
        return [Evidence(ts=now, detector=self.name, offender=host, src_ip=host, dst_ip=peer, dst_port=port,
                         proto=flow.proto, description=desc, threat_level=INFO, confidence=1.0,
                         may_block=False, key=f"p2p:{host}", flows=(flow,))]
