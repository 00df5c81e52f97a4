"""Handing freed heap back to the kernel. After a flood of invented keys expires, CPython has freed
its objects but glibc's allocator keeps the pages (the top of the heap, and arenas, shrink only when
asked), so the RSS of a long-running gateway stays at its peak. `trim()` asks glibc to return what
it can (malloc_trim(0)); elsewhere it does nothing. It costs a few milliseconds on a large heap:
call it after big expiries or from a housekeeping timer, never per packet.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache
from typing import Any


@cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


def trim() -> bool:
    """Return freed heap memory to the kernel; True when glibc's malloc_trim released some."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
