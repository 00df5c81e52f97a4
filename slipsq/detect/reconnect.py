"""Reconnection storm: one host trying one server:port again and again, and never getting in.

Malware whose C&C is down (or refuses it) keeps calling: a real RAT opened ~720 TCP connections to
one server:port in 8 minutes, one every ~0.5 s, every one rejected (SYN -> RST). Slips calls this
"multiple reconnection attempts". Per (client, server, port) and judge window (index = int(flow
start // judge.window), as portscan) it counts the TCP connections that failed: rejected or
unanswered (portscan.unanswered: S_RA, S_, REJ, S0 ...). It returns Evidence only.

Arithmetic (n = failed attempts in the window, T = `reconnect.attempts`, 10 by default):
  threat     = medium for n >= T, high for n >= 5 T, critical for n >= 20 T
  confidence = 0.5 + 0.5 x min(1, n / 20 T)
  so 10 attempts score 0.5 x 0.525 = 0.26 (an alert), 50 score 0.8 x 0.625 = 0.5, 100 score 0.6,
  and 200 score 1.0 x 1.0 = 1.0: the real case above blocks by itself ~100 s after its first attempt.
Evidence is emitted when n first reaches T, again when it doubles or its threat rises; one key per
tuple, so the judge counts a storm once per window at its highest score.
The offender is the server (the C&C; `reconnect.block = "client"` blocks the infected host instead).

False-positive guards:
* A service briefly down: an application retries a few times (often with back-off); below T
  nothing is said, and a server that answered ANY local host within the last day
  (`reconnect.outage_memory`; the shared servers-in-use table, detect/inuse.py, also portscan's) is
  reported but never blocked on a storm: a server people use is not a C&C that refuses its bots. A
  day, not the judge's hour: a camera retrying its vendor's broker every 10 s through a 2-hour
  outage got the broker blocked for 4 hours once its last answer was an hour old.
* Forged storms: a SYN-only flow can be forged, and a local host or a web page can make a browser
  hammer any server:port. So the evidence goes to the server only when our own host is the client
  (a private address), never when an outside client hammers one of ours (inbound storms are
  portscan's and bruteforce's business: offender there is the outside source); and the in-use
  guard above means a forged storm can get at most a server nobody here uses blocked. Allow-listed
  and own addresses are never blocked (the judge).
* A P2P client retrying a peer that left the swarm (ctx.peers says the client runs P2P software
  and the server looks like a peer): reported, never blocks.
* A LAN printer, NAS or camera that is off: both ends private, reported, never blocks
  (`reconnect.local_may_block`). DNS ports (53, 853) are skipped: a resolver down is a hiccup.
* A scan repeated on a schedule: Home Assistant's Nmap Tracker looks over the top 100 ports of every
  LAN host every 120 s, so after ten rounds each of the gateway's 97 closed ports was a "storm":
  383 alerts in 25 minutes. A client that failed on SCAN_PORTS (10) ports of one *local* server in a
  window is scanning it (portscan reports that from the same count): its storms there are reported
  only from 5 T (high) on (storms between two of ours never block anyway). Toward the Internet every
  port's storm counts, as before: a RAT cycles through a list of ports of its refusing C&C, and ten
  decoy SYNs would otherwise silence it (a review).
* A client that is not ours (a public address: a transit flow, an IPv6 LAN, a network with public
  IPv4 like the CTU day): reported, never blocks, as we cannot tell which end is ours.
Not caught: UDP (no "rejected" in UDP; an unanswered UDP flow is often a one-way stream), a C&C
that answers and then closes at once (answered: the beacon detector's case), a storm spread over
many servers (each below T) and a storm slower than T per window.

The per-flow tests (answered, a report, a skipped port, inbound) are `Intake`, compiled as
`_reconnect.Intake` (slipsq.twins chooses): almost every flow is answered and ends there, after
noting its server in the servers-in-use table; only a failed outbound attempt reaches the storms map.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from slipsq import twins
from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, FlowGate, report_due
from slipsq.detect.inuse import ServersInUse
from slipsq.detect.portscan import unanswered
from slipsq.detect.prefixes import is_local
from slipsq.flow import Flow
from slipsq.lru import put, touch
from slipsq.records import CRITICAL, HIGH, MEDIUM, Evidence

_SKIPPED_PORTS = frozenset({53, 853})
# failed ports of one server in one window that make a client a scanner of it (portscan.vertical_ports'
# default: the count at which portscan reports the scan)
SCAN_PORTS = 10
# what the intake hands a failed outbound attempt to: the storms map and the judgement
Count = Callable[[Flow], Sequence[Evidence]]


class _Storm:
    __slots__ = ("emitted", "emitted_threat", "failed", "first", "index", "last")

    def __init__(self) -> None:
        self.index = -1  # the window counted in
        self.failed = self.emitted = 0
        self.emitted_threat = 0.0
        self.first = self.last = 0.0


class Intake:
    """The detector's per-flow path, one call per flow: which flows are a failed outbound attempt.
    A TCP flow the server answered (packets back averaging over 60 bytes, or a state or packet count
    that portscan.unanswered calls answered: most flows) notes its server in the servers-in-use
    table (`servers.note`: reports too, a long session is in use) and ends there; so do a report, a
    DNS port and an inbound flow (an outside client to a local server). `on_flow` answers
    NO_EVIDENCE for those and hands the others to `count(flow)`. The readable twin of the compiled
    `_reconnect.Intake` (make_intake chooses, tests/test_detect_compiled.py holds them equal).

    `servers` is the context's table, held for the detector's life (a reload makes a new context and
    new detectors); `local` is prefixes.is_local."""

    __slots__ = ("count", "local", "note", "servers")

    def __init__(self, servers: ServersInUse, local: Callable[[str], bool], count: Count) -> None:
        self.servers, self.local, self.count = servers, local, count
        self.note = servers.note  # bound once: called for every answered TCP flow

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        if flow.proto != "tcp":
            return NO_EVIDENCE
        dpkts = flow.dpkts
        # most flows: the server sent packets averaging over 60 bytes (a reset is 40): it answered,
        # no need to read the state
        if (dpkts >= 2 and flow.dbytes > 60 * dpkts) or not unanswered(flow):
            self.note(flow)  # answered: its server is in use (reports too: a long session)
            return NO_EVIDENCE
        if flow.is_report or flow.dport in _SKIPPED_PORTS:
            return NO_EVIDENCE
        src, dst = flow.saddr, flow.daddr
        if self.local(dst) and not self.local(src):  # inbound: an outside client, not our host's C&C
            return NO_EVIDENCE
        return self.count(flow)


def make_intake(servers: ServersInUse, local: Callable[[str], bool], count: Count) -> Intake:
    """The compiled Intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._reconnect")
    cls: type[Intake] = Intake if fast is None else fast.Intake
    return cls(servers, local, count)


class Reconnect(Detector):
    name = "reconnect"
    evidence_kinds = ("reconnection-storm",)
    flow_gate = FlowGate(protos=frozenset({"tcp"}))  # on_flow's first test: TCP only
    options = (
        Option("reconnect.attempts", 10, "failed (rejected or unanswered) TCP connections from one host to one "
               "server:port in one window before it is reported; 5x is high, 20x critical", positive, "> 0"),
        Option("reconnect.block", "server", "which end of a storm to block: server (the C&C) or client",
               lambda v: v in ("server", "client"), "server or client"),
        Option("reconnect.local_may_block", False,
               "storms between two local addresses (private ranges, network.local) may block"),
        Option("reconnect.outage_memory", 86_400.0, "a server that answered a local host within this many seconds "
               "(or the judge window, if longer) is not blocked on a storm: the retries of a device whose cloud "
               "service is down look like a C&C refusing its bots", positive, "> 0", duration=True),
        Option("reconnect.max_tuples", 100_000, "(client, server, port) tuples counted at most (least recently "
               "used forgotten first)", positive, "> 0"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.t: int = self.opt("attempts")
        self.block_client = self.opt("block") == "client"
        self.local_may_block: bool = self.opt("local_may_block")
        self.max_tuples: int = self.opt("max_tuples")
        self.memory: float = max(self.window, self.opt("outage_memory"))
        self.servers = ctx.servers
        self.storms: OrderedDict[tuple[str, str, int], _Storm] = OrderedDict()
        # (client, server) -> (window, up to SCAN_PORTS ports it failed on there)
        self.failed_ports: OrderedDict[tuple[str, str], tuple[int, set[int]]] = OrderedDict()
        self.intake = make_intake(ctx.servers, is_local, self._count)
        # the engine calls on_flow once per flow: hand it the compiled path itself (the Python frame
        # of a method that only calls it would cost as much as the compiled tests)
        self.on_flow = self.intake.on_flow  # type: ignore[method-assign]

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        return self.intake.on_flow(flow)  # (not called by the engine: see __init__)

    def _count(self, flow: Flow) -> Sequence[Evidence]:
        """A failed outbound attempt the intake let through: count it in its tuple's window."""
        src, dst = flow.saddr, flow.daddr
        s = touch(self.storms, (src, dst, flow.dport), _Storm, self.max_tuples)
        index = int(flow.start // self.window)
        if index > s.index:  # a new window: count afresh (a late flow of the last one counts here)
            s.index, s.failed, s.emitted, s.emitted_threat, s.first = index, 0, 0, 0.0, flow.start
        s.failed += 1
        if flow.start > s.last:
            s.last = flow.start
        n = s.failed
        # a port of a LAN scan, as far as its own count says (only local servers' failed ports are kept)
        scanning = is_local(dst) and self._scanning(src, dst, flow.dport, s.index)
        if n < self.t or (n < 2 * s.emitted and n not in (5 * self.t, 20 * self.t)):
            return NO_EVIDENCE
        if scanning and n < 5 * self.t:
            return NO_EVIDENCE
        return self._judge(src, dst, flow.dport, s, flow)

    def _scanning(self, src: str, dst: str, port: int, index: int) -> bool:
        """Note a failed attempt of `src` on `dst`:`port` in window `index`; True once `src` failed on
        SCAN_PORTS ports of `dst` in that window."""
        seen = self.failed_ports.get((src, dst))
        if seen is None or seen[0] < index:  # (a late flow of the last window counts in this one)
            seen = (index, set())
        put(self.failed_ports, (src, dst), seen, self.max_tuples)
        ports = seen[1]
        if len(ports) < SCAN_PORTS:
            ports.add(port)
        return len(ports) >= SCAN_PORTS

    def _judge(self, src: str, dst: str, port: int, s: _Storm, flow: Flow) -> Sequence[Evidence]:
        n, t = s.failed, self.t
        threat = CRITICAL if n >= 20 * t else HIGH if n >= 5 * t else MEDIUM
        if not report_due(s, n, threat):
            return NO_EVIDENCE
        confidence = 0.5 + 0.5 * min(1.0, n / (20 * t))
        ts = max(s.last, s.index * self.window)
        span = s.last - s.first
        rate = f", one every {span / (n - 1):.1f}s" if n > 1 and span > 0 else ""
        desc = (f"reconnection storm from {src} to {dst}:{port}/tcp: {n} connections rejected or unanswered "
                f"in {span:.0f}s{rate}")
        may_block = True
        offender = src if self.block_client else dst
        if not is_local(src):
            may_block = False
            desc += f"; {src} is not a local address (a private range or network.local): reported, never blocks"
        elif is_local(dst) and not self.local_may_block:
            may_block = False
            desc += "; both ends local: reported, never blocks (reconnect.local_may_block)"
        elif self.ctx.peers.is_peer(src, dst, port, ts, self.ctx.dns_names):
            may_block = False
            desc += f"; {src} runs P2P software and {dst} looks like a peer gone: reported, never blocks"
        elif self.servers.in_use(dst, ts, self.memory):
            may_block = False
            desc += (f"; {dst} served local hosts in the last {self.memory:.0f}s: a storm alone never "
                     f"blocks it (an outage of a service in use; SYNs can be forged)")
        # against the server, one finding whoever storms it (several devices retrying one dead server
        # must not add up to its block); against the client, its own
        key = f"reconnect:{src}:{dst}:{port}/tcp" if self.block_client else f"reconnect:{dst}:{port}/tcp"
        return [Evidence(ts=ts, detector=self.name, offender=offender, src_ip=src, dst_ip=dst, dst_port=port,
                         proto="tcp", description=desc, threat_level=threat, confidence=round(confidence, 3),
                         label="reconnection-storm", key=key, flows=(flow,),
                         may_block=may_block)]
