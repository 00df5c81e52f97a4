"""Type stub of the compiled hot path (slipsq/_flowtable.pyx); its twin is slipsq/flowtable.py."""

from slipsq.config import Config
from slipsq.flowtable import FlowTable as _TwinTable

def parse_packet(
    buf: bytes, linktype: int
) -> tuple[int, bytes, bytes, int, int, int, int, int, int, int, bool, bool, int, int]: ...

def address_text(packed: bytes) -> str: ...

# Declared as a subtype of the readable twin: the interface is the same, so code typed against the
# twin (the engine picks either at run time) accepts the compiled table too.
class FlowTable(_TwinTable):
    bytes_per_flow: int
    def __init__(self, config: Config) -> None: ...
    def memory(self) -> int: ...

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
