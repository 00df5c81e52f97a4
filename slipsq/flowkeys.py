"""What an analyst joins a flow on: its Community ID (the `communityid` package: the hash Zeek,
Suricata and Arkime write for the same 5-tuple) and its key in slipsq's flows.binetflow (the row's
StartTime, Proto, SrcAddr, Sport, DstAddr and Dport, exactly as written there).

A low module like slipsq.flow: pure functions, no I/O. slipsq.output.binetflow formats its rows with
the same functions, so the key in an alert always matches a row.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from typing import Any

from slipsq.flow import Flow

ICMP = frozenset({"icmp", "ipv6-icmp"})
PROTO_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "ipv6-icmp": 58, "sctp": 132}
ECHO_TYPES = {1: (0, 8), 58: (128, 129)}  # echo reply/request: the "port" is an identifier, the code 0


def argus_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y/%m/%d %H:%M:%S.%f")


def argus_port(proto: str, port: int) -> str:
    # Argus writes ICMP "ports" (type, id) in hex
    return f"0x{port:04x}" if proto in ICMP else str(port)


def flow_key(flow: Flow) -> str:
    """The flow's StartTime,Proto,SrcAddr,Sport,DstAddr,Dport in flows.binetflow."""
    return (f"{argus_time(flow.start)},{flow.proto},{flow.saddr},{argus_port(flow.proto, flow.sport)},"
            f"{flow.daddr},{argus_port(flow.proto, flow.dport)}")


@cache
def _calculator() -> Any:
    import communityid

    return communityid.CommunityID()


def community_id(flow: Flow) -> str | None:
    """The flow's Community ID v1 (seed 0), None for a protocol it has no tuple for."""
    import communityid

    number = PROTO_NUMBERS.get(flow.proto)
    if number is None:
        return None
    try:
        if flow.proto in ICMP:
            icmp_type = flow.sport
            code = 0 if icmp_type in ECHO_TYPES[number] else flow.dport
            make = communityid.FlowTuple.make_icmp if number == 1 else communityid.FlowTuple.make_icmp6
            tpl = make(flow.saddr, flow.daddr, icmp_type, code)
        else:
            tpl = communityid.FlowTuple(number, flow.saddr, flow.daddr, flow.sport, flow.dport)
        result: str = _calculator().calc(tpl)
    except (ValueError, TypeError, communityid.error.Error):
        return None
    return result
