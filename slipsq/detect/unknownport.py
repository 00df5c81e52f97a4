"""Connection to an unusual port without a preceding DNS answer for the address.

Programs people run find their servers by name: a DNS answer comes first, then the connection.
Malware often carries its C&C's address and port in its code (a RAT's 1604, 4444, 5552 ...), so a
connection with data to an unusual port of an address no DNS answer gave is worth a note. Slips
reports both halves ("connection to unknown destination port", "connection without DNS
resolution"); this detector reports the two together, once per (client, server, port) per window.

It is a weak signal, so it is LOW and never blocks alone (may_block=False): it only adds
0.2 x confidence to a server's window, so it tips the balance when other evidence (a beacon, a
storm, a Markov match, a threat list) accuses the same server. confidence = 0.6, 0.8 once the
connection carried 10x `unknownport.min_bytes`.

False-positive guards:
* Well-known ports (below 1024) and common service ports above (VPN, XMPP, push, MQTT, STUN/TURN,
  SIP, RTMP, alternative HTTP ...: `unknownport.known_ports`) are never reported.
* LAN destinations (private, link-local, multicast) and inbound connections are not judged, nor
  flows whose source port is a service port (a flow file's "<?>" flows, seen backwards: the
  server's 22 or 443 as the source, the client's ephemeral port as the destination).
* Only connections that were answered and carried data (at least `unknownport.min_bytes` both ways,
  IP lengths: a handshake and teardown alone are ~400 bytes) count; scans and storms have their
  own detectors.
* P2P hosts: a BitTorrent or game client talks to many peers on high ports that DNS never named.
  A C&C is a few servers; so once a client has reached `unknownport.max_servers` such servers in a
  window it is taken for a P2P host and nothing more is said about it in that window; a host the
  p2p detector recognised (ctx.peers: BitTorrent handshakes, DHT, uTP) is not judged at all.
* A host whose DNS we do not see (it uses DNS over HTTPS, or a resolver whose traffic does not
  cross us; a flow file has no DNS at all) would look as if it never asked: a client is judged
  only after a DNS answer to it was seen (`unknownport.need_dns` = false judges every client).
Not caught: a C&C on a well-known port (443, 80: beacon and Markov detectors), a C&C found through
DNS (a DGA's hit: the DGA detector), UDP (games and calls use unnamed peers on high UDP ports).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from slipsq import twins
from slipsq.config import Option, non_negative, port_list, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, FlowGate
from slipsq.detect.portscan import unanswered
from slipsq.detect.prefixes import is_local
from slipsq.flow import AppEvent, Flow
from slipsq.lru import new, put, touch
from slipsq.records import LOW, Evidence

# Registered ports above 1023 that ordinary programs use (IANA and common practice)
DEFAULT_KNOWN_PORTS = [
    1080, 1194, 1433, 1521, 1701, 1723, 1883, 1935, 2049, 2083, 2087, 2096, 3074, 3268, 3306, 3389,
    3478, 3479, 3480, 3481, 4070, 4244, 4500, 5000, 5001, 5060, 5061, 5222, 5223, 5228, 5229, 5230, 5349,
    5432, 5938, 6443, 7000, 8000, 8008, 8009, 8080, 8081, 8088, 8443, 8883, 8888, 9000, 9001, 9030, 9418,
    19302, 19303, 19304, 19305, 19306, 19307, 19308, 19309, 51820,
]
_MAX_CLIENTS = 65_536


class _Client:
    __slots__ = ("index", "servers")

    def __init__(self) -> None:
        self.index = -1
        self.servers: dict[tuple[str, int], None] = {}  # (server, port) reported in this window


class DnsIntake:
    """What every DNS answer costs the detector: the client it goes to has used DNS now (refreshed at
    most once a minute, so most answers cost one lookup); nothing when `unknownport.need_dns` is off.
    The readable twin of the compiled `_dns.ClientsIntake` (make_dns_intake chooses,
    tests/test_detect_compiled.py holds them equal)."""

    __slots__ = ("clients", "need_dns")

    def __init__(self, clients: OrderedDict[str, float], need_dns: bool) -> None:
        self.clients, self.need_dns = clients, need_dns

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        if event.kind == "dns" and self.need_dns:  # a response goes to the client
            last = self.clients.get(event.daddr)
            if last is None or event.ts > last + 60.0:
                put(self.clients, event.daddr, event.ts, _MAX_CLIENTS)
        return NO_EVIDENCE


def make_dns_intake(clients: OrderedDict[str, float], need_dns: bool) -> DnsIntake:
    """The compiled intake, or its readable twin (slipsq.twins decides)."""
    fast = twins.compiled("slipsq.detect._dns")
    cls: type[DnsIntake] = DnsIntake if fast is None else fast.ClientsIntake
    return cls(clients, need_dns)


class UnknownPort(Detector):
    name = "unknownport"
    evidence_kinds = ("unknown-port-no-dns",)
    app_kinds = frozenset({"dns"})
    options = (
        Option("unknownport.known_ports", DEFAULT_KNOWN_PORTS, "ports at or above 1024 that are never unusual "
               "(below 1024 none is)", port_list, "a list of port numbers"),
        Option("unknownport.min_bytes", 1000, "bytes (both ways) a connection must carry to be judged",
               non_negative, ">= 0"),
        Option("unknownport.max_servers", 4, "a client that reaches more such servers in a window is taken for a "
               "P2P host and not reported further in that window", positive, "> 0"),
        Option("unknownport.need_dns", True, "judge a client only once a DNS answer to it was seen (false: "
               "every client, e.g. for flow files that carry no DNS)"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.window: float = self.cfg["judge.window"]
        self.known = frozenset(int(p) for p in self.opt("known_ports"))
        self.min_bytes: int = self.opt("min_bytes")
        self.max_servers: int = self.opt("max_servers")
        self.need_dns: bool = self.opt("need_dns")
        self.dns_clients: OrderedDict[str, float] = new()  # client -> last DNS answer to it (LRU order)
        self.clients: OrderedDict[str, _Client] = new()
        self.dns_intake = make_dns_intake(self.dns_clients, self.need_dns)
        self.on_app = self.dns_intake.on_app  # type: ignore[method-assign]  # the engine calls it per DNS answer
        # on_flow's first tests (nearly every flow ends there: a well-known or a known port)
        self.flow_gate = FlowGate(protos=frozenset({"tcp"}), reports=False, min_dport=1024, skip_dports=self.known,
                                  min_bytes=self.min_bytes)

    def on_app(self, event: AppEvent) -> Sequence[Evidence]:
        return self.dns_intake.on_app(event)  # (not called by the engine: see __init__)

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        port = flow.dport
        if port < 1024 or port in self.known or flow.proto != "tcp" or flow.is_report:
            return NO_EVIDENCE
        sport = flow.sport
        if sport < 1024 or sport in self.known:  # a service's port as the source: a flow seen backwards
            return NO_EVIDENCE
        dst, src = flow.daddr, flow.saddr
        if flow.sbytes + flow.dbytes < self.min_bytes or is_local(dst) or unanswered(flow):
            return NO_EVIDENCE
        if dst in self.ctx.dns_names or (self.need_dns and src not in self.dns_clients):
            return NO_EVIDENCE
        if self.ctx.peers.is_p2p(src, flow.start):  # the p2p detector saw P2P software on it
            return NO_EVIDENCE
        c = touch(self.clients, src, _Client, _MAX_CLIENTS)
        index = int(flow.start // self.window)
        if index > c.index:
            c.index = index
            c.servers.clear()
        servers = c.servers
        if (dst, port) in servers or len(servers) > self.max_servers:
            return NO_EVIDENCE
        servers[(dst, port)] = None
        if len(servers) > self.max_servers:  # one more than a C&C has: a P2P host; say nothing more
            return NO_EVIDENCE
        big = flow.sbytes + flow.dbytes >= 10 * self.min_bytes
        desc = (f"connection from {src} to unusual port {dst}:{port}/tcp without a DNS answer for {dst} "
                f"({flow.sbytes + flow.dbytes} bytes in {flow.dur:.0f}s); alone it never blocks")
        return [Evidence(ts=flow.start, detector=self.name, offender=dst, src_ip=src, dst_ip=dst, dst_port=port,
                         proto="tcp", description=desc, threat_level=LOW, confidence=0.8 if big else 0.6,
                         label="unknown-port-no-dns", key=f"unknownport:{dst}:{port}/tcp", flows=(flow,),
                         may_block=False)]
