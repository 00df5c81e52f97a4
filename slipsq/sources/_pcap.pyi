"""Type stub of the compiled capture reader (slipsq/sources/_pcap.pyx); its twin is sources.pcap.PureCapture."""

from typing import Any

from slipsq._flowtable import FlowTable

class PcapFile:
    path: str
    format: str
    linktypes: list[int]
    packets: int
    truncated: int
    corrupt: int
    first_ts: float
    last_ts: float
    def __init__(self, path: str) -> None: ...
    def close(self) -> None: ...
    @property
    def offset(self) -> int: ...
    @property
    def total(self) -> int: ...
    def feed(self, table: FlowTable, max_packets: int) -> int: ...

def feed_plain(proc: Any, pcap: PcapFile, table: FlowTable, batch: int, flush_messages: int,
               flush_bytes: int) -> int: ...
def feed_steps(engine: Any, pcap: PcapFile, table: FlowTable, batch: int, budget: int) -> int: ...
