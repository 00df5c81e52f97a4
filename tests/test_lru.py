"""slipsq.lru against a plain model of a least-recently-used map, on random sequences of uses; its
compiled twin (slipsq._lru, which the compiled detectors cimport) against slipsq.lru."""

from __future__ import annotations

from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.lru import Nested, put, touch, trim


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 12)), max_size=80), st.integers(1, 6), st.integers(0, 6))
def test_touch_and_put_keep_the_most_recently_used(uses: list[tuple[bool, int]], bound: int, smaller: int) -> None:
    d: OrderedDict[int, list[int]] = OrderedDict()
    model: list[int] = []  # keys, least recently used first
    for with_put, key in uses:
        if key in model:
            model.remove(key)
        elif len(model) >= bound:
            model.pop(0)
        model.append(key)
        if with_put:
            put(d, key, [key], bound)
        else:
            touch(d, key, list, bound).append(key)
        assert list(d) == model and len(d) <= bound
    for key, value in d.items():
        assert set(value) <= {key}  # a value made for one key never serves another
    trim(d, smaller)
    assert list(d) == model[max(0, len(model) - smaller):]


def test_touch_returns_the_same_value_while_the_key_stays() -> None:
    d: OrderedDict[str, set[str]] = OrderedDict()
    touch(d, "a", set, 2).add("x")
    touch(d, "b", set, 2)
    assert touch(d, "a", set, 2) == {"x"}  # kept, now the most recent
    touch(d, "c", set, 2)  # full: "b", the least recently used, goes
    assert list(d) == ["a", "c"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 9)), max_size=120),
       st.integers(1, 4), st.integers(1, 5), st.integers(1, 8))
def test_nested_keeps_all_three_bounds_and_an_exact_total(
        ops: list[tuple[int, int, int]], max_outer: int, max_inner: int, max_total: int) -> None:
    n: Nested[int, int, int] = Nested(max_outer, max_inner, max_total)
    for op, key, ikey in ops:
        if op == 0:
            n.put(key, ikey, ikey)
            assert n.get(key) is not None and n.get(key)[ikey] == ikey  # type: ignore[index]
            assert list(n.maps)[-1] == key and list(n.maps[key])[-1] == ikey  # both most recently used
        elif op == 1:
            had = ikey in (n.get(key) or {})
            assert (n.pop(key, ikey) is not None) == had
        elif op == 2:
            if n.get(key):
                n.pop_first(key)
            n.clear(key + 1)
        else:
            n.discard(key)
        assert n.total == sum(len(m) for m in n.maps.values())
        assert len(n) <= max_outer and n.total <= max_total
        assert all(len(m) <= max_inner for m in n.maps.values())


def test_nested_evicts_the_least_recently_used_keys_for_the_total() -> None:
    n: Nested[str, int, None] = Nested(100, 100, 6)
    for i in range(3):
        n.put("old", i, None)
    for i in range(3):
        n.put("mid", i, None)
    n.touch("old")  # now "mid" is the least recently used
    n.put("new", 0, None)
    assert list(n.maps) == ["old", "new"] and n.total == 4
    for i in range(10):  # one key alone at the total: it makes room in itself
        n.put("new", i + 1, None)
    assert list(n.maps) == ["new"] and list(n.maps["new"]) == [5, 6, 7, 8, 9, 10]


class _Ordered(OrderedDict):  # type: ignore[type-arg]
    """A subclass: the compiled steps leave it to slipsq.lru (it may override what they call)."""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 9), st.integers()), max_size=80), st.integers(1, 6),
       st.sampled_from([OrderedDict, _Ordered]))
def test_compiled_touch_and_put_equal_the_twins(ops: list[tuple[int, int, int]], bound: int,
                                                kind: type[OrderedDict[int, list[int]]]) -> None:
    c = pytest.importorskip("slipsq._lru", reason="the compiled extension is not built")
    mine, twin = kind(), kind()
    for op, key, value in ops:
        if op == 0:
            got, want = c.touch_(mine, key, list, bound), touch(twin, key, list, bound)
            assert got == want
            got.append(value)  # the value kept in the map, not a copy
            want.append(value)
        elif op == 1 or kind is not OrderedDict:
            c.put_(mine, key, [value], bound)
            put(twin, key, [value], bound)
        else:  # put_known: the caller has looked the key up (OrderedDicts only)
            c.put_known_(mine, key, [value], key in mine, bound)
            put(twin, key, [value], bound)
        assert list(mine.items()) == list(twin.items())
        assert type(mine) is kind and len(mine) <= bound


def test_compiled_touch_passes_on_what_make_raises() -> None:
    c = pytest.importorskip("slipsq._lru", reason="the compiled extension is not built")
    d: OrderedDict[str, int] = OrderedDict(a=1)

    def make() -> int:
        raise RuntimeError("make")

    with pytest.raises(RuntimeError, match="make"):
        c.touch_(d, "b", make, 1)
    assert list(d) == []  # touch evicts before it makes, as lru.touch does


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.integers(0, 9), st.integers()), st.integers(0, 12),
       st.sampled_from([dict, OrderedDict, _Ordered, MappingProxyType]))
def test_compiled_get_is_the_mappings_get(d: dict[int, int], key: int, kind: Any) -> None:
    """_lru.get(d, key, default): a C lookup for a dict or an OrderedDict, d.get for any other mapping;
    what d.get(key, default) gives, either way."""
    c = pytest.importorskip("slipsq._lru", reason="the compiled extension is not built")
    m = kind(d)
    default = object()
    assert c.get_(m, key, default) is m.get(key, default)


class _Same:
    """A key whose hash is one of three: runs of colliding keys in the LruMap's index (and == by value)."""

    def __init__(self, v: int) -> None:
        self.v = v

    def __hash__(self) -> int:
        return self.v % 3

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.v == self.v

    def __repr__(self) -> str:
        return f"_Same({self.v})"


class _Far(_Same):
    """A key whose hash is one of five that share their low 32 bits (the LruMap index's tag) and
    differ above them: a tag that matches is no proof of a key."""

    def __hash__(self) -> int:
        return (self.v % 5) * 2**32 + 7

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Far) and other.v == self.v

    def __repr__(self) -> str:
        return f"_Far({self.v})"


def _step(c: Any, d: Any, compiled: bool, op: int, key: Any, value: int, flag: bool, bound: int) -> Any:
    """One call on `d` (what it returned, or the type of what it raised): the mapping's own methods,
    or lru's steps (the compiled one on the LruMap side, the readable one on the OrderedDict side)."""
    try:
        if op == 0:
            d[key] = value
        elif op == 1:
            del d[key]
        elif op == 2:
            return d.pop(key, None) if flag else d.pop(key)
        elif op == 3:
            return d.popitem(last=flag)
        elif op == 4:
            d.move_to_end(key, last=flag)
        elif op == 5:
            return d.get(key), key in d, d[key]
        elif op == 6:
            return d.setdefault(key, value)
        elif op == 7:
            if flag and value % 7 == 0:
                d.clear()
            return len(d)
        elif op == 8:  # lru.put
            (c.put_ if compiled else put)(d, key, value, bound)
        elif op == 9:  # put_known: the caller has looked the key up
            if compiled:
                c.put_known_(d, key, value, key in d, bound)
            else:
                put(d, key, value, bound)
        elif op == 10:
            return (c.touch_ if compiled else touch)(d, key, lambda: value, bound)
        elif op == 11:
            return c.get_(d, key, "absent") if compiled else d.get(key, "absent")
        elif op == 12:
            (c.to_end_ if compiled else OrderedDict.move_to_end)(d, key)
        else:  # the readable steps work on an LruMap too (a twin may be handed one)
            put(d, key, value, max(bound, 1))
    except (KeyError, RuntimeError) as e:
        return ("raised", type(e))
    return None


_KEYS = st.one_of(st.integers(-3, 40), st.integers(0, 40).map(_Same), st.integers(0, 40).map(_Far),
                  st.text("ab", max_size=3),
                  st.tuples(st.integers(0, 3), st.text("xy", max_size=1)))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 13), _KEYS, st.integers(), st.booleans()), max_size=200),
       st.integers(0, 8))
def test_lrumap_is_an_ordered_dict_for_every_use(ops: list[tuple[int, Any, int, bool]], bound: int) -> None:
    """The compiled LruMap against OrderedDict: the same answers, the same exceptions and the same
    order after any sequence of the calls slipsq makes (the mapping's own, and lru's steps)."""
    c = pytest.importorskip("slipsq._lru", reason="the compiled extension is not built")
    mine: Any = c.LruMap()
    twin: OrderedDict[Any, Any] = OrderedDict()
    for op, key, value, flag in ops:
        assert _step(c, mine, True, op, key, value, flag, bound) == _step(c, twin, False, op, key, value, flag,
                                                                          bound), (op, key)
        assert mine.items() == list(twin.items()) and len(mine) == len(twin)
        assert list(mine) == list(twin) and mine == twin and mine.values() == list(twin.values())
    assert list(reversed(mine)) == list(reversed(twin))
    assert mine == dict(twin) and mine.copy() == twin


def test_lrumap_at_its_bound_keeps_the_newest_keys_and_stays_findable() -> None:
    """Many keys through a full map (each new one evicting the oldest): every key kept is found, none
    evicted is, and the order is the use order; the index never holds a stale position."""
    c = pytest.importorskip("slipsq._lru", reason="the compiled extension is not built")
    d: Any = c.LruMap()
    model: OrderedDict[str, float] = OrderedDict()
    bound = 1000
    for i in range(20_000):
        for key, value in [(f"10.0.{i // 256}.{i % 256}", float(i))] + (  # each 7th: an old one refreshed
                [(f"10.0.{(i - 500) // 256}.{(i - 500) % 256}", -1.0)] if i % 7 == 0 and i >= 500 else []):
            c.put_(d, key, value, bound)
            put(model, key, value, bound)
    assert d.items() == list(model.items()) and len(d) == bound
    for k in model:
        assert k in d and c.get_(d, k, None) == model[k]
    assert "10.0.0.1" not in d and c.get_(d, "10.0.0.1", None) is None


def test_lrumap_iteration_stops_when_the_map_changes() -> None:
    c = pytest.importorskip("slipsq._lru", reason="the compiled extension is not built")
    d: Any = c.LruMap([("a", 1), ("b", 2)])
    with pytest.raises(RuntimeError):
        for k in d:
            d[k + "!"] = 0
    assert repr(c.LruMap([("a", 1)])) == "LruMap([('a', 1)])"
