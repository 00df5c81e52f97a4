"""Bounded maps, least recently used first. State that the network feeds (DNS names, servers in use,
beacon tuples, evidence per offender) must stay bounded however much hostile traffic arrives, and
each operation must cost O(1) whatever the map holds; these three functions on an OrderedDict are
the one way slipsq does it.

Why OrderedDict and not a plain dict: a dict keeps insertion order too, but deleting its first key
leaves a dead slot at the front that the next `next(iter(d))` must walk past, so evicting from a
full dict costs up to the whole map until the dict is rebuilt (measured: 400,000 flows to 400,000
servers took 2.1x the time of the same flows to 1,000 servers). OrderedDict's linked list makes
`popitem(last=False)` and `move_to_end` O(1). Data only: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ABSENT = object()


def touch(d: OrderedDict[K, V], key: K, make: Callable[[], V], bound: int) -> V:
    """d[key], made by make() when absent, now the most recently used; when adding it would pass
    `bound`, the least recently used key goes first."""
    value = d.get(key, _ABSENT)
    if value is _ABSENT:
        if len(d) >= bound:
            d.popitem(last=False)
        value = d[key] = make()
    else:
        d.move_to_end(key)
    return value  # type: ignore[return-value]


def put(d: OrderedDict[K, V], key: K, value: V, bound: int) -> None:
    """d[key] = value, now the most recently used; the least recently used key goes when full."""
    if key in d:
        d.move_to_end(key)
    elif len(d) >= bound:
        d.popitem(last=False)
    d[key] = value


def trim(d: OrderedDict[K, V], bound: int) -> None:
    """Drop the least recently used keys until at most `bound` are left (after a smaller bound)."""
    while len(d) > max(0, bound):
        d.popitem(last=False)
