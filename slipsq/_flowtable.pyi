"""Type stub of the compiled flow table (slipsq/_flowtable.pyx); its twin is slipsq/flowtable.py."""

from slipsq.config import Config
from slipsq.flowtable import FlowTable as _TwinTable

def address_text(packed: bytes) -> str: ...

# Declared as a subtype of the readable twin: the interface is the same, so code typed against the
# twin (the engine picks either at run time) accepts the compiled table too.
class FlowTable(_TwinTable):
    bytes_per_flow: int
    def __init__(self, config: Config) -> None: ...
    def memory(self) -> int: ...
