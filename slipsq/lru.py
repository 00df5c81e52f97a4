"""Bounded maps, least recently used first. State that the network feeds (DNS names, servers in use,
beacon tuples, evidence per offender) must stay bounded however much hostile traffic arrives, and
each operation must cost O(1) whatever the map holds; these three functions on an OrderedDict (or
the compiled map `new()` makes, which behaves as one) are the one way slipsq does it.

Why OrderedDict and not a plain dict: a dict keeps insertion order too, but deleting its first key
leaves a dead slot at the front that the next `next(iter(d))` must walk past, so evicting from a
full dict costs up to the whole map until the dict is rebuilt (measured: 400,000 flows to 400,000
servers took 2.1x the time of the same flows to 1,000 servers). OrderedDict's linked list makes
`popitem(last=False)` and `move_to_end` O(1). `new()` makes such a map: the compiled `_lru.LruMap`
(OrderedDict's methods that these functions and their callers use, in plain C: a put costs ~300
instructions instead of ~1,100; no more memory a key) unless the readable twins were asked for.
Maps made before it existed (the judge's, reconnect's, ARP scan's, ...) are still OrderedDicts: the
steps take either. Data only: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from slipsq import twins

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
J = TypeVar("J", bound=Hashable)  # an inner key

_ABSENT = object()


def new() -> OrderedDict[Any, Any]:
    """An empty bounded map for touch/put: `_lru.LruMap` when built (it has every OrderedDict method
    slipsq calls on these maps, and keeps the same order after the same calls: tests/test_lru.py),
    else an OrderedDict. Typed as the OrderedDict it stands in for."""
    fast = twins.compiled("slipsq._lru")
    return OrderedDict() if fast is None else fast.LruMap()  # type: ignore[no-any-return]


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


class Nested(Generic[K, J, V]):
    """A bounded map of bounded maps: outer key -> {inner key: value}, least recently used first at
    both levels. A per-key bound alone is no bound at all (65,536 hosts x 4,096 names each is 268
    million entries, all inventable by forged traffic), so there are three: outer keys, inner keys per
    outer key, and inner keys in all. Adding past the total evicts whole outer keys from the least
    recently used end (never the one being added to); every operation is O(1), amortised.
    Mutate the inner maps only through these methods: they keep the count."""

    __slots__ = ("maps", "max_inner", "max_outer", "max_total", "total")

    def __init__(self, max_outer: int, max_inner: int, max_total: int) -> None:
        self.maps: OrderedDict[K, OrderedDict[J, V]] = OrderedDict()
        self.max_outer, self.max_inner, self.max_total = max_outer, max_inner, max_total
        self.total = 0  # inner entries in all maps

    def __len__(self) -> int:
        return len(self.maps)

    def __contains__(self, key: object) -> bool:
        return key in self.maps

    def get(self, key: K) -> OrderedDict[J, V] | None:
        """The inner map of `key` (read it; change it only through this class), not touched."""
        return self.maps.get(key)

    def touch(self, key: K) -> OrderedDict[J, V]:
        """The inner map of `key`, made when absent, now the most recently used."""
        inner = self.maps.get(key)
        if inner is None:
            if len(self.maps) >= self.max_outer:
                self._evict_first()
            inner = self.maps[key] = OrderedDict()
        else:
            self.maps.move_to_end(key)
        return inner

    def put(self, key: K, ikey: J, value: V) -> None:
        """maps[key][ikey] = value, both now the most recently used; the inner map's least recently
        used entry goes when it is full, other outer keys go when the total is reached."""
        inner = self.touch(key)
        if ikey in inner:
            inner.move_to_end(ikey)
        elif len(inner) >= self.max_inner:
            inner.popitem(last=False)
        else:
            while self.total >= self.max_total and next(iter(self.maps)) != key:
                self._evict_first()
            if self.total >= self.max_total:  # this key alone holds the total: make room in it
                inner.popitem(last=False)
            else:
                self.total += 1
        inner[ikey] = value

    def pop(self, key: K, ikey: J) -> V | None:
        """Remove maps[key][ikey] if present; its value, or None."""
        inner = self.maps.get(key)
        if inner is None or ikey not in inner:
            return None
        self.total -= 1
        return inner.pop(ikey)

    def pop_first(self, key: K) -> tuple[J, V]:
        """Remove and return the least recently used entry of `key`'s (non-empty) inner map."""
        item = self.maps[key].popitem(last=False)
        self.total -= 1
        return item

    def clear(self, key: K) -> None:
        """Empty `key`'s inner map (the key stays)."""
        inner = self.maps.get(key)
        if inner:
            self.total -= len(inner)
            inner.clear()

    def discard(self, key: K) -> None:
        """Forget `key` and its inner map."""
        inner = self.maps.pop(key, None)
        if inner is not None:
            self.total -= len(inner)

    def first(self) -> K | None:
        """The least recently used outer key, or None."""
        return next(iter(self.maps), None)

    def _evict_first(self) -> None:
        _, inner = self.maps.popitem(last=False)
        self.total -= len(inner)
