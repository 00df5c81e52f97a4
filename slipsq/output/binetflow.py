"""Flows as Argus binetflow CSV, so other Stratosphere tools can read what slipsq saw."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TextIO

from slipsq.flow import Flow
from slipsq.sink import Sink

HEADER = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label"


def _port(flow: Flow, port: int) -> str:
    # Argus writes ICMP "ports" (type, id) in hex
    return f"0x{port:04x}" if flow.proto in ("icmp", "ipv6-icmp") else str(port)


def _clean(text: str) -> str:
    return text.replace(",", ";").replace("\n", " ")


def format_flow(flow: Flow) -> str:
    start = datetime.fromtimestamp(flow.start, UTC).strftime("%Y/%m/%d %H:%M:%S.%f")
    return (f"{start},{flow.dur:.6f},{flow.proto},{flow.saddr},{_port(flow, flow.sport)},{flow.dir:>5},"
            f"{flow.daddr},{_port(flow, flow.dport)},{_clean(flow.state)},{flow.stos},{flow.dtos},"
            f"{flow.pkts},{flow.bytes},{flow.sbytes},{_clean(flow.label)}")


class BinetflowWriter(Sink):
    """A sink that writes every closed flow (not active-timeout reports) as one CSV row."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        stream.write(HEADER + "\n")

    def flow(self, flow: Flow) -> None:
        self.stream.write(format_flow(flow) + "\n")
