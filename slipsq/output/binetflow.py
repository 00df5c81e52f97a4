"""Flows as Argus binetflow CSV, so other Stratosphere tools can read what slipsq saw."""

from __future__ import annotations

from typing import TextIO

from slipsq.flow import Flow
from slipsq.flowkeys import argus_port, argus_time
from slipsq.sink import Sink

HEADER = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label"


def _clean(text: str) -> str:
    return text.replace(",", ";").replace("\n", " ")


def format_flow(flow: Flow) -> str:
    p = flow.proto
    return (f"{argus_time(flow.start)},{flow.dur:.6f},{p},{flow.saddr},{argus_port(p, flow.sport)},{flow.dir:>5},"
            f"{flow.daddr},{argus_port(p, flow.dport)},{_clean(flow.state)},{flow.stos},{flow.dtos},"
            f"{flow.pkts},{flow.bytes},{flow.sbytes},{_clean(flow.label)}")


class BinetflowWriter(Sink):
    """A sink that writes every closed flow (not active-timeout reports) as one CSV row."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        stream.write(HEADER + "\n")

    def flow(self, flow: Flow) -> None:
        self.stream.write(format_flow(flow) + "\n")
