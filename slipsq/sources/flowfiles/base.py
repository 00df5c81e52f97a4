"""What every flow-file reader shares: the FlowSource base, counters and problem notes, and address,
time and number parsing (with caches: these run once per row).

A reader turns lines into `Flow`s and `AppEvent`s in input order and counts what it skips. It never
decides anything about the traffic, never sorts or buffers a stream (standard input must flow through
line by line) and never lets an exception other than InputError escape to the caller.
"""

from __future__ import annotations

import calendar
import datetime
import ipaddress
import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from slipsq.errors import InputError
from slipsq.flow import AppEvent, Flow
from slipsq.records import utf8_text
from slipsq.sources.flowfiles.streams import DECOMPRESSION_ERRORS
from slipsq.sources.pcap import FUTURE_SLACK

Item = Flow | AppEvent

ICMP = frozenset({"icmp", "ipv6-icmp"})  # protocols whose "ports" are type and code (or echo id)
MAX_PROBLEMS = 5  # first problems kept (file:line: why) for the warning; the rest are only counted
# what building an item from a JSON object of unexpected shape may raise: the row is bad, not the input
JSON_ROW_ERRORS = (ValueError, KeyError, TypeError, IndexError, AttributeError, OverflowError, RecursionError)


READ_ERRORS: tuple[type[BaseException], ...] = (*DECOMPRESSION_ERRORS, UnicodeError)


def new_counts() -> dict[str, int]:
    return {"rows": 0, "flows": 0, "app_events": 0, "skipped_non_ip": 0, "bad_rows": 0, "other_events": 0}


class FlowSource:
    """An iterable of Flow and AppEvent read from a flow file or stream, in input order.

    `counts`: rows read, flows and app events yielded, non-IP rows skipped, bad rows skipped, other
    events skipped. `problems`: the first few bad rows as "file:line: why". Iterate once.
    """

    format = ""

    def __init__(self, name: str, counts: dict[str, int] | None = None,
                 problems: list[str] | None = None) -> None:
        self.name = name
        # a Zeek folder shares one counter dict and problem list among its logs
        self.counts = counts if counts is not None else new_counts()
        self.problems = problems if problems is not None else []
        self._closers: list[Callable[[], Any]] = []
        self._started = False
        # damage found while reading: the input stopped early (a compressed stream cut short, a
        # read error), and probes asked after reading (a last line cut short, the reader's stderr)
        self.broken = ""
        self.probes: list[Callable[[], str | None]] = []

    def __iter__(self) -> Iterator[Item]:
        if self._started:
            raise InputError(f"{self.name}: a flow source can be read only once")
        self._started = True
        latest = time.time() + FUTURE_SLACK
        try:
            for item in self._items():
                t = item.start if isinstance(item, Flow) else item.ts
                if not 0.0 <= t <= latest:  # before 1970, in the future, NaN: damage, as a capture's record
                    self.counts["flows" if isinstance(item, Flow) else "app_events"] -= 1
                    self.counts["bad_rows"] += 1
                    if len(self.problems) < MAX_PROBLEMS:
                        self.problems.append(f"{self.name}: a record dated {t!r} "
                                             f"({'before 1970' if t < 0 else 'in the future'})")
                    continue
                yield item
        except READ_ERRORS as e:
            # a compressed file cut short (EOFError) or corrupt, or a read error: what came before
            # was whole and has been analysed; the rest is lost, and the caller says so
            self.broken = ("it ends early: " if isinstance(e, EOFError) else "reading stopped: ") + str(e)
        finally:
            self.close()

    def _items(self) -> Iterator[Item]:  # pragma: no cover - every reader overrides it
        raise NotImplementedError

    def json_rows(self, lines: Iterable[str], lineno: int,
                  make: Callable[[dict[str, Any]], Item | list[AppEvent] | None]) -> Iterator[Item]:
        """The items `make` builds from JSON lines (one object per line; `lineno` is the number of the
        line before the first). Counts rows; a line that is not a JSON object or that `make` rejects is
        counted and skipped as bad."""
        counts = self.counts
        loads = json.loads
        for line in lines:
            lineno += 1
            if not line.strip():
                continue
            counts["rows"] += 1
            try:
                record = loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                if "\\ud" in line or "\\uD" in line:  # a surrogate's escape: the one way JSON holds one
                    record = scrub(record)
                item = make(record)
            except JSON_ROW_ERRORS as e:
                self.bad(lineno, row_error(e))
                continue
            if isinstance(item, list):
                yield from item
            elif item is not None:
                yield item

    def bad(self, lineno: int, why: str) -> None:
        """Count a malformed row and keep the first few reasons."""
        self.counts["bad_rows"] += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(f"{self.name}:{lineno}: {why}")

    def warning(self) -> str | None:
        """One line for the user when rows were skipped as malformed, else None."""
        n = self.counts["bad_rows"]
        if not n:
            return None
        return f"{self.name}: {n} malformed row(s) skipped; first: " + "; ".join(self.problems)

    def damage(self) -> str | None:
        """One line saying what of this input was lost (call after reading it), else None: bad rows
        skipped, the input ending early or mid-row, what its reader program complained about."""
        what = [self.broken] if self.broken else []
        what += [note for probe in self.probes if (note := probe())]
        n = self.counts["bad_rows"]
        if n:
            what.append(f"{n} malformed row{'s' if n > 1 else ''} skipped (first: {'; '.join(self.problems)})")
        return "; ".join(what) or None

    def on_close(self, fn: Callable[[], Any]) -> None:
        self._closers.append(fn)

    def close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except OSError:
                pass

    def __enter__(self) -> FlowSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def scrub(value: Any) -> Any:
    """`value` (parsed JSON) with every lone surrogate in its strings, keys included, written as the
    text \\udcff. JSON may escape one ("\\udcff" is valid JSON, not valid Unicode); no UTF-8 output
    (flows.binetflow, alerts, eve.json, the block store) could write it, and the run would end on
    that line. A surrogate pair (an escaped emoji) is one proper character after parsing and stays."""
    if isinstance(value, str):
        return utf8_text(value)
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def first_record(line: str) -> Any:
    """The JSON value of an input's first line, or None when it is not JSON (nesting too deep for the
    parser included: a RecursionError must not escape as anything but "not this format")."""
    try:
        return json.loads(line)
    except (ValueError, RecursionError):
        return None


def row_error(e: Exception) -> str:
    """A short reason for a bad row from the exception its parsing raised."""
    if isinstance(e, IndexError):
        return "too few fields"
    if isinstance(e, KeyError):
        return f"missing field {e}"
    return str(e) or type(e).__name__


class Addresses:
    """Validates and normalises IP address text, with a cache: flow files repeat addresses a lot and
    ipaddress.ip_address costs a microsecond or more per call."""

    def __init__(self) -> None:
        self.cache: dict[str, str] = {}

    def __call__(self, text: str) -> str:
        hit = self.cache.get(text)
        if hit is not None:
            return hit
        try:
            norm = ipaddress.ip_address(text).compressed
        except ValueError:
            raise ValueError(f"bad address {text[:60]!r}") from None
        if len(self.cache) >= 200_000:
            self.cache.clear()
        self.cache[text] = norm
        return norm

    def valid(self, text: str) -> str | None:
        try:
            return self(text)
        except ValueError:
            return None


class ArgusTime:
    """Argus start times as epoch seconds (UTC): `YYYY/MM/DD HH:MM:SS.ffffff` (or `-` separated dates),
    epoch seconds (`ra -u`), or a bare `HH:MM:SS.ffffff` (ra's default; the date is unknown, so day 0
    is 1970-01-01 and a jump back of more than 12 hours is taken as midnight passing).

    strptime is slow; the date part is sliced and cached, the time of day is three slices, and
    `minutes` maps a checked "YYYY/MM/DD HH:MM" prefix to its epoch for the readers' fast paths (flows
    come many per minute)."""

    def __init__(self) -> None:
        self._days: dict[str, float] = {}
        self.minutes: dict[str, float] = {}
        self._tod_day = 0.0
        self._tod_last = -1.0

    def __call__(self, s: str) -> float:
        if len(s) >= 19 and (s[4] == "/" or s[4] == "-"):
            day = self._days.get(s[:10])
            if day is None:
                day = self._day(s[:10])
            if s[10] not in " T" or s[13] != ":" or s[16] != ":":
                raise ValueError(f"bad time {s[:40]!r}")
            h = int(s[11:13])
            m = int(s[14:16])
            sec = float(s[17:])
            if not (0 <= h < 24 and 0 <= m < 60 and 0.0 <= sec < 61.0):
                raise ValueError(f"bad time {s[:40]!r}")
            minute = day + h * 3600 + m * 60
            if len(self.minutes) > 100_000:
                self.minutes.clear()
            self.minutes[s[:16]] = minute
            return minute + sec
        if len(s) >= 8 and s[2] == ":" and s[5] == ":":
            return self._time_of_day(s)
        t = float(s)
        if not (0.0 <= t < 1e11):
            raise ValueError(f"bad time {s[:40]!r}")
        return t

    def _day(self, date: str) -> float:
        if date[7] != date[4]:
            raise ValueError(f"bad date {date!r}")
        y, mo, d = int(date[0:4]), int(date[5:7]), int(date[8:10])
        datetime.date(y, mo, d)  # raises ValueError on 2019/02/30
        day = float(calendar.timegm((y, mo, d, 0, 0, 0)))
        if len(self._days) > 10_000:
            self._days.clear()
        self._days[date] = day
        return day

    def _time_of_day(self, s: str) -> float:
        h, m, sec = int(s[0:2]), int(s[3:5]), float(s[6:])
        if not (0 <= h < 24 and 0 <= m < 60 and 0.0 <= sec < 61.0):
            raise ValueError(f"bad time {s[:40]!r}")
        tod = h * 3600 + m * 60 + sec
        if self._tod_last - tod > 43200:
            self._tod_day += 86400.0
        self._tod_last = tod
        return self._tod_day + tod


def finite(text: str, what: str, limit: float = 1e10) -> float:
    """A float in [0, limit): rejects nan, inf and negatives, which float() accepts."""
    v = float(text)
    if not (0.0 <= v < limit):
        raise ValueError(f"bad {what} {text[:40]!r}")
    return v


def port(text: str) -> int:
    """A port, decimal or Argus's hex (`0x0303`); empty means none (0)."""
    if not text:
        return 0
    v = int(text, 16) if text[:2] in ("0x", "0X") else int(text)
    if not (0 <= v <= 0xFFFF):
        raise ValueError(f"bad port {text[:20]!r}")
    return v


def count(text: str, what: str) -> int:
    if not text:
        return 0
    v = int(text)
    if v < 0 or v >= 1 << 63:
        raise ValueError(f"bad {what} {text[:30]!r}")
    return v
