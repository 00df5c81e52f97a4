"""Type stub of the compiled per-flow loop (slipsq/_dispatch.pyx); its twin is slipsq/dispatch.py."""

from collections.abc import Callable
from typing import Any

from slipsq import dispatch as _twin

class FlowCalls(_twin.FlowCalls): ...
class AppCalls(_twin.AppCalls): ...

def run_steps(engine: Any, table: Any, last: int, flows_of: Callable[[bytes], list[Any]]) -> int: ...
def pack_messages(msgs: list[Any]) -> list[Any]: ...

class Run:
    blob: bytes
    seq: int
    left: int
    def __init__(self, blob: bytes) -> None: ...
    @property
    def now(self) -> float: ...
    def take(self) -> tuple[Any, ...]: ...

class Counters:
    flows: int
    app_events: int
    alerts: int
    blocks: int
    def __init__(self, flows: int = 0, app_events: int = 0, alerts: int = 0, blocks: int = 0) -> None: ...
