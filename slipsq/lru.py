"""Bounded maps in plain dicts. A dict keeps insertion order, so moving a key to the end whenever it
is used makes the order least recently used first, and the first key is the one to drop when the map
is full. State that the network feeds (DNS names, servers in use, beacon tuples) must stay bounded
however much hostile traffic arrives; these three functions are the one way slipsq does it.
Data only: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ABSENT = object()


def touch(d: dict[K, V], key: K, make: Callable[[], V], bound: int) -> V:
    """d[key], made by make() when absent, now the most recently used; when adding it would pass
    `bound`, the least recently used key goes first."""
    value = d.pop(key, _ABSENT)
    if value is _ABSENT:
        value = make()
        if len(d) >= bound:
            del d[next(iter(d))]
    d[key] = value  # type: ignore[assignment]
    return value  # type: ignore[return-value]


def put(d: dict[K, V], key: K, value: V, bound: int) -> None:
    """d[key] = value, now the most recently used; the least recently used key goes when full."""
    if d.pop(key, _ABSENT) is _ABSENT and len(d) >= bound:
        del d[next(iter(d))]
    d[key] = value


def trim(d: dict[K, V], bound: int) -> None:
    """Drop the least recently used keys until at most `bound` are left (after a smaller bound)."""
    for key in list(d)[:max(0, len(d) - bound)]:
        del d[key]
