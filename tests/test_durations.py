"""The one duration syntax (slipsq.durations): for config values and `block --for` alike."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipsq.durations import UNITS, format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("90s", 90), ("15m", 900), ("4h", 14400), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
    ("1.5h", 5400), (" 4H ", 14400), ("0", 0), (3600, 3600), (2.5, 2.5), ("1d2h3m4s", 93784)])
def test_valid(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "4x", "30m1h", "1h1h", "-5", "nan", "inf", "4 h", "4h ago", "1e400",
                                  True, -1, math.inf])
def test_invalid(text: object) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)  # type: ignore[arg-type]


@given(st.text(max_size=20))
def test_any_text_is_seconds_or_a_value_error(text: str) -> None:
    try:
        v = parse_duration(text)
    except ValueError as e:
        assert "not a duration" in str(e)
        return
    assert 0 <= v < math.inf


@given(st.dictionaries(st.sampled_from(list(UNITS)), st.integers(1, 999), min_size=1))
def test_units_add_up(parts: dict[str, int]) -> None:
    text = "".join(f"{parts[u]}{u}" for u in UNITS if u in parts)  # largest unit first
    assert parse_duration(text) == sum(n * UNITS[u] for u, n in parts.items())


@given(st.integers(0, 10**9) | st.floats(0, 1e9, allow_nan=False))
def test_format_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, rel=1e-9, abs=1e-6)
