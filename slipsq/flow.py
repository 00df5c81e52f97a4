"""The records that travel between stages: a closed flow and an application event.

Flows come out of the flow table (packets) or straight out of a flow file reader (Argus, Zeek,
Suricata, nfdump); detectors cannot tell the difference. This module holds data only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Argus's protocol names, used in flows and in flows.binetflow.
PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 2: "igmp", 47: "gre", 50: "esp", 132: "sctp"}


def proto_name(number: int) -> str:
    return PROTO_NAMES.get(number, str(number))


@dataclass(slots=True)
class Flow:
    """One bidirectional flow. `s*` is the client (the SYN sender, else the first sender).

    Bytes are IP total lengths (IP and transport headers included, no link layer) for flows built
    from packets, and the file's own counts for flows read from flow files. For ICMP, `sport` is the
    ICMP type and `dport` the echo identifier (or the code for non-echo messages), as Argus does.
    `closed_by` says why the flow was emitted: "fin", "rst", "idle", "active" (a report on a flow
    still open: the long-running one goes on), "evict", "end" (end of input) or "file" (read from a
    flow file).
    """

    start: float
    end: float
    proto: str
    saddr: str
    sport: int
    daddr: str
    dport: int
    spkts: int = 0
    dpkts: int = 0
    sbytes: int = 0
    dbytes: int = 0
    state: str = ""
    dir: str = "->"
    stos: int = 0
    dtos: int = 0
    label: str = ""
    closed_by: str = "file"

    @property
    def dur(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def pkts(self) -> int:
        return self.spkts + self.dpkts

    @property
    def bytes(self) -> int:
        return self.sbytes + self.dbytes

    @property
    def is_report(self) -> bool:
        """An active-timeout report: the flow is still open and will be emitted again."""
        return self.closed_by == "active"


@dataclass(slots=True)  # not frozen: a frozen __init__ costs 4x more, once per decoded packet
class AppEvent:
    """Something decoded from inside a packet (or a log line) that a detector may want. Read-only
    by convention: every detector sees the same event.

    kind: "dns" (data: query, qtype, answers, rcode), "tls" (data: sni; or, for a ClientHello that
    names no server, alpn: the first protocol it offers), "http" (data: host, method, uri,
    user_agent), "banner" (data: service, text; the first bytes a server or client sent on a TCP
    connection), "tunnel" (data: protocol, "openvpn": a VPN client's first bytes opened its tunnel),
    "arp" (data: op, src_mac, src_ip, dst_ip).
    `saddr`/`sport` is the packet's sender.
    """

    ts: float
    kind: str
    saddr: str
    sport: int
    daddr: str
    dport: int
    proto: str
    data: dict[str, Any] = field(default_factory=dict)
