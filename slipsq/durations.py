"""The one duration syntax of slipsq, for the command line (`block --for 4h`) and the configuration
file (`block_duration = "4h"` or `14400`) alike: a number of seconds, or numbers with units s, m, h,
d, w, largest first and each at most once ("90s", "15m", "1h30m", "2d", "1.5h"). Pure functions."""

from __future__ import annotations

import math
import re

UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+(?:\.\d+)?|\.\d+)([wdhms])")
SYNTAX = "a number of seconds or e.g. 90s, 15m, 4h, 1h30m, 2d, 1w"


def parse_duration(value: str | int | float) -> float:
    """Seconds (finite, >= 0) from a number or a duration text. ValueError naming the syntax otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration ({SYNTAX})")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        try:
            seconds = float(text)  # "90", "2.5": plain seconds
        except ValueError:
            seconds = _with_units(text, value)
    if not (0 <= seconds < math.inf):  # NaN, inf and negatives
        raise ValueError(f"{value!r} is not a duration ({SYNTAX})")
    return seconds


def _with_units(text: str, original: str) -> float:
    pos, total, last = 0, 0.0, -1
    order = list(UNITS)
    for m in _PART.finditer(text):
        rank = order.index(m.group(2))
        if m.start() != pos or rank <= last:
            break
        total += float(m.group(1)) * UNITS[m.group(2)]
        pos, last = m.end(), rank
    if pos != len(text) or not text:
        raise ValueError(f"{original!r} is not a duration ({SYNTAX})")
    return total


def format_duration(seconds: float) -> str:
    """The shortest text parse_duration reads back as `seconds` when whole ("4h", "1h30m", "90.5s")."""
    if seconds != int(seconds) or seconds == 0:
        return f"{seconds:.6f}".rstrip("0").rstrip(".") + "s"
    left, parts = int(seconds), []
    for unit, size in UNITS.items():
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)
