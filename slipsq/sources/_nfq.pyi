"""Type stub of the compiled NFQUEUE source (slipsq/sources/_nfq.pyx), used by sources/nfqueue.py."""

from collections.abc import Iterable
from typing import Any

LINKTYPE_RAW: int

class Queue:
    num: int
    rcvbuf: int
    fail_open: bool
    gso: bool
    bypass_mark: int
    repeat_mark: int
    def __init__(self, num: int, table: Any, *, maxlen: int = ..., copy_range: int = ..., rcvbuf: int = ...,
                 fail_open: bool = ..., gso: bool = ..., bypass_mark: int = ...,
                 repeat_mark: int = ...) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...
    def run(self, budget: int = ..., timeout: float = ..., fds: Iterable[int] = ...) -> int: ...
