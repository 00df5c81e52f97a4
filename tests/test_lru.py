"""slipsq.lru against a plain model of a least-recently-used map, on random sequences of uses."""

from __future__ import annotations

from collections import OrderedDict

from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.lru import put, touch, trim


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
