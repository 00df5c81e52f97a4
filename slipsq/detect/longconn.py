"""Long connection detector: a flow to a host outside the local network that lasts at least
`longconn.min_duration` seconds (25 minutes by default, as in Slips).

Long connections are normal for many things (chat, VPNs, streaming, ssh), but they are also how
reverse shells and some C&C channels live; so this is evidence with may_block=False: it shows in the
alerts and adds to the remote host's score, and it can never cause a block on its own (the judge
needs at least one blocking finding in the window). It never blocks and never does I/O.

Seen on active-timeout reports (the flow is still open) and on closed flows, and reported once per
connection: a 5-tuple seen again while it is still going (the next record starts within 10 minutes of
the last one's end, as the flow table's reports and Argus's hourly status records do) is the same
connection. Only the protocols in `longconn.protocols` (TCP by default: long UDP "flows" are NTP,
DHCP and DNS status records of a flow exporter, not sessions).
Arithmetic: threat low (0.2) × confidence 1.0 = 0.2 per remote service
(key longconn:<client>:<server>:<port>/<proto>, counted once per window by the judge).
Connections of a P2P host to its peers (detect/p2p.py) are not reported: the p2p line says it once.
"Local" is a private, link-local, loopback or multicast address, one of the gateway's own addresses
or one on the allow list.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from slipsq.config import Option, positive
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, FlowGate
from slipsq.detect.prefixes import is_local
from slipsq.flow import PROTO_NAMES, Flow
from slipsq.records import LOW, Evidence

# records of one 5-tuple this close are one connection (Argus status records of an idle ssh session
# are ~100 s apart: a keepalive every few minutes); an ephemeral port reused sooner is very unlikely
_SAME_CONNECTION_GAP = 600.0


class LongConnection(Detector):
    name = "longconn"
    evidence_kinds = ("long-connection",)
    options = (
        Option("longconn.min_duration", 1500.0, "a connection to a non-local host lasting this long (s) is "
               "reported (never blocks on its own)", positive, "> 0", duration=True),
        Option("longconn.protocols", ["tcp"], "protocols whose long flows are reported",
               lambda v: all(p in PROTO_NAMES.values() for p in v),
               f"a list of protocol names ({', '.join(PROTO_NAMES.values())}), e.g. [\"tcp\"]"),
        Option("longconn.max_connections", 100_000, "connections remembered as already reported (least "
               "recently seen forgotten first)", positive, "> 0"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.min_dur: float = self.opt("min_duration")
        self.protocols = frozenset(self.opt("protocols"))
        self.flow_gate = FlowGate(protos=self.protocols, min_dur=self.min_dur)  # on_flow's first test
        self.max_seen: int = self.opt("max_connections")
        # 5-tuple -> end of its last record: the same connection while records keep following on
        self.reported: OrderedDict[tuple[str, int, str, int, str], float] = OrderedDict()

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        if flow.dur < self.min_dur or flow.proto not in self.protocols:
            return NO_EVIDENCE
        dst = flow.daddr
        if is_local(dst) or self.ctx.allow.why_protected(dst) is not None:
            return NO_EVIDENCE
        if self.ctx.peers.is_peer(flow.saddr, dst, flow.dport, flow.end, self.ctx.dns_names):
            return NO_EVIDENCE  # a P2P host's peer connection (detect/p2p.py): the swarm is reported once
        conn = (flow.saddr, flow.sport, dst, flow.dport, flow.proto)
        last_end = self.reported.pop(conn, None)
        self.reported[conn] = max(flow.end, last_end or 0.0)  # (re)inserted last: the LRU order
        if last_end is not None and flow.start <= last_end + _SAME_CONNECTION_GAP:
            return NO_EVIDENCE
        if len(self.reported) > self.max_seen:
            self.reported.popitem(last=False)
        state = "still open" if flow.is_report else "closed"
        mb = flow.bytes / 1e6
        desc = (f"long connection from {flow.saddr} to {dst}:{flow.dport}/{flow.proto}: "
                f"{flow.dur / 60:.0f} min ({state}), {mb:.2f} MB, {flow.pkts} packets")
        return [Evidence(ts=flow.end, detector=self.name, offender=dst, src_ip=flow.saddr, dst_ip=dst,
                         dst_port=flow.dport, proto=flow.proto, description=desc, threat_level=LOW,
                         confidence=1.0, may_block=False,
                         key=f"longconn:{dst}:{flow.dport}/{flow.proto}", flows=(flow,))]
