"""Stratosphere behavioral letters: one letter (plus zeros and a time symbol) per closed flow of a
4-tuple (client IP, server IP, server port, protocol), exactly as ../shared/letters.md §1-3 defines.

Only TCP and UDP flows get letters: the published models exist for those two only, and ICMP's
"ports" (type, echo id) would split one behaviour over many tuples. Active-timeout reports
(`flow.is_report`) are ignored: the flow comes again when it closes.

Flows arrive in close order, not start order. Each tuple keeps its most recent LATE_WINDOW flows
(start time, size/duration column, piece length) in start order; a flow that starts before some of
them is inserted in place and the pieces it changes are recomputed. A flow's piece depends only on
its own start and the two before it, so an insertion at i changes pieces i, i+1 and i+2 and nothing
after: recomputing those three gives the same string as replaying the flows in start order. A flow
that starts before the window (or before its first two flows, once older flows were let go) is too
late to place: it is counted and skipped.

Memory is bounded for a long-running gateway: a tuple's string keeps only its last `max_chars`
characters (those are what gets matched), a tuple idle for `idle` seconds of flow time is dropped,
and at most `max_tuples` tuples are kept (the least recently active goes first).
Matching needs only the string's first character, its length and its transition counts, so each
tuple keeps those counts up to date as characters come and go (see markov.py).

This module computes letters; it never decides anything and never does I/O.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Iterator
from math import isfinite

from slipsq.flow import Flow

# letters.md §2: size in bytes (both directions), duration in seconds, TD ratios
SIZE_SMALL, SIZE_MEDIUM = 250, 1100
DUR_SHORT, DUR_MEDIUM = 0.1, 10.0
TD_STRONG, TD_WEAK, TD_WEAK_NOT = 1.05, 1.3, 5.0
ROW_NO_DATA, ROW_STRONG, ROW_WEAK = "123456789", "abcdefghi", "ABCDEFGHI"
ROW_WEAK_NOT, ROW_STRONG_NOT = "rstuvwxyz", "RSTUVWXYZ"
HOUR = 3600.0
MAX_ZEROS = 1000  # 41 days of silence; only reachable with a huge stratosphere.tuple_idle

VARIANTS = ("classic", "slips")
LETTER_PROTOS = frozenset(("tcp", "udp"))
LATE_WINDOW = 64  # flows kept per tuple for late insertion (a later-starting flow closes within these)

TupleKey = tuple[str, str, int, str]


def column(size: int, dur: float) -> int:
    """3 × size class + duration class (0..8)."""
    s = 0 if size <= SIZE_SMALL else 1 if size <= SIZE_MEDIUM else 2
    d = 0 if dur <= DUR_SHORT else 1 if dur <= DUR_MEDIUM else 2
    return 3 * s + d


def row(t1: float | None, t2: float | None) -> str:
    """The periodicity row for the gaps T1 and T2 (None: not known yet)."""
    if t1 is None or t2 is None:
        return ROW_NO_DATA
    lo, hi = (t1, t2) if t1 <= t2 else (t2, t1)
    td = 1.0 if lo == 0 else hi / lo
    if td <= TD_STRONG:
        return ROW_STRONG
    if td <= TD_WEAK:
        return ROW_WEAK
    if td <= TD_WEAK_NOT:
        return ROW_WEAK_NOT
    return ROW_STRONG_NOT


def time_symbol(t2: float) -> str:
    """letters.md §3: the symbol for T2, the gap to the previous flow of the tuple (<= 5 s ".", <= 60 s ",",
    <= 300 s "+", <= 1 h "*", longer: none; the hours are the leading zeros of `piece`)."""
    return "." if t2 <= 5.0 else "," if t2 <= 60.0 else "+" if t2 <= 300.0 else "*" if t2 <= HOUR else ""


def piece(t1: float | None, t2: float | None, col: int, symbol: bool = True) -> str:
    """One flow's characters: a `0` per whole hour of T2, the letter, the time symbol of T2."""
    if t2 is None:
        return ROW_NO_DATA[col]
    out = row(t1, t2)[col] + time_symbol(t2) if symbol else row(t1, t2)[col]
    if t2 >= HOUR:
        return "0" * min(MAX_ZEROS, int(t2 / HOUR)) + out
    return out


def letters_of(flows: list[tuple[float, int, float]], variant: str = "classic") -> str:
    """The reference: the string of (start, bytes, duration) flows, taken in start order."""
    starts = sorted(flows, key=lambda f: f[0])
    out = []
    for i, (start, size, dur) in enumerate(starts):
        t2 = start - starts[i - 1][0] if i >= 1 else None
        t1 = starts[i - 1][0] - starts[i - 2][0] if i >= 2 else None
        out.append(piece(t1, t2, column(size, dur), symbol=not (variant == "slips" and i == 1)))
    return "".join(out)


def _count(pairs: dict[str, int], text: str, delta: int) -> None:
    for k in range(len(text) - 1):
        p = text[k:k + 2]
        n = pairs.get(p, 0) + delta
        if n:
            pairs[p] = n
        else:
            del pairs[p]


class TupleLetters:
    """One 4-tuple: its string (the last max_chars characters), transition counts, recent flows."""

    __slots__ = ("alerted", "cols", "dropped", "first_seen", "flows", "key", "label", "last_seen", "pairs",
                 "plens", "starts", "text")

    def __init__(self, key: TupleKey, start: float, col: int) -> None:
        """The tuple of its first flow (what add() would make of it: one letter from the digit row)."""
        self.key = key  # (client, server, server port, proto)
        self.starts = array("d", (start,))  # the recent flows, in start order
        self.cols = [col]  # lists, not arrays: cheaper to create for the many one-flow tuples
        self.plens = [1]  # characters each recent flow put in the string
        self.dropped = 0  # flows let go from the front of the recent window
        self.text = ROW_NO_DATA[col]
        self.pairs: dict[str, int] = {}  # "ab" -> how often a is followed by b in text
        self.flows = 1
        self.first_seen = start
        self.last_seen = 0.0
        # set by the detector: the model label this tuple last matched, the last evidence emitted
        self.label = ""
        self.alerted: tuple[int, str, float] | None = None  # (judge window, label, confidence)

    @property
    def length(self) -> int:
        """The string's length (what the compiled twin keeps without making the string)."""
        return len(self.text)

    # the key's parts by name (read when reporting, not per flow)
    @property
    def client(self) -> str:
        return self.key[0]

    @property
    def server(self) -> str:
        return self.key[1]

    @property
    def port(self) -> int:
        return self.key[2]

    @property
    def proto(self) -> str:
        return self.key[3]

    def _piece(self, i: int, variant: str) -> str:
        n = self.dropped + i  # the flow's index in the whole tuple
        st = self.starts
        t2 = st[i] - st[i - 1] if n >= 1 else None
        t1 = st[i - 1] - st[i - 2] if n >= 2 else None
        return piece(t1, t2, self.cols[i], symbol=not (variant == "slips" and n == 1))

    def add(self, start: float, col: int, variant: str, max_chars: int) -> bool:
        """Place one flow; False when it starts too early to be placed (see the module doc)."""
        st = self.starts
        n = len(st)  # >= 1: a tuple is made with its first flow
        if start < st[-1]:
            return self._insert(start, col, variant, max_chars)
        # The common case: the flow starts after every recent one. This is _insert with i == n: only
        # the new flow's piece is computed, nothing after it changes, and the only new transitions
        # are from the string's last character through the piece.
        st.append(start)
        self.cols.append(col)
        p = self._piece(n, variant)
        self.plens.append(len(p))
        self.text += p
        _count(self.pairs, self.text[-len(p) - 1:], +1)
        self.flows += 1
        self._trim(max_chars)
        return True

    def _insert(self, start: float, col: int, variant: str, max_chars: int) -> bool:
        """A flow that starts before the tuple's last one: placed by start time (see the module doc)."""
        st = self.starts
        n = len(st)
        i = bisect_right(st, start)
        tail = sum(self.plens[i:])  # i < n: the flow starts before the last one
        if (self.dropped and i < 2) or tail > len(self.text):
            return False
        st.insert(i, start)
        self.cols.insert(i, col)
        new = [self._piece(k, variant) for k in range(i, min(i + 3, n + 1))]
        # old pieces i and i+1 (now i+1, i+2) are replaced by the recomputed ones
        old_end = min(i + 2, n)
        off_i = len(self.text) - tail
        off_j = off_i + sum(self.plens[i:old_end])
        text = self.text
        left = text[off_i - 1:off_i]
        right = text[off_j:off_j + 1]
        mid = "".join(new)
        _count(self.pairs, left + text[off_i:off_j] + right, -1)
        _count(self.pairs, left + mid + right, +1)
        self.text = text[:off_i] + mid + text[off_j:]
        self.plens[i:old_end] = [len(p) for p in new]
        self.flows += 1
        self._trim(max_chars)
        return True

    def _trim(self, max_chars: int) -> None:
        """Let go the oldest flows beyond the recent window and the first characters beyond max_chars."""
        k = len(self.starts) - LATE_WINDOW
        if k > 0:
            del self.starts[:k], self.cols[:k], self.plens[:k]
            self.dropped += k
        cut = len(self.text) - max_chars
        if cut > 0:
            _count(self.pairs, self.text[:cut + 1], -1)
            self.text = self.text[cut:]


class LetterTable:
    """Every live 4-tuple, least recently active first."""

    def __init__(self, variant: str = "classic", max_chars: int = 4096, idle: float = 21600.0,
                 max_tuples: int = 100_000) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"letters variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.variant = variant
        self.max_chars = max(2, max_chars)
        self.idle = idle
        self.max_tuples = max(1, max_tuples)
        self._tuples: OrderedDict[TupleKey, TupleLetters] = OrderedDict()
        self.too_late = 0  # flows that started too long before the tuple's recent ones
        self.expired = 0  # tuples dropped after `idle` seconds without a flow
        self.evicted = 0  # tuples dropped because max_tuples was reached

    def add(self, flow: Flow) -> TupleLetters | None:
        """Give the flow its letter; the tuple it changed, or None when the flow gets no letter."""
        start = flow.start
        if flow.proto not in LETTER_PROTOS or flow.is_report or not isfinite(start):
            return None
        end = flow.end
        col = column(flow.sbytes + flow.dbytes, end - start if end > start else 0.0)  # bytes, dur
        key = (flow.saddr, flow.daddr, flow.dport, flow.proto)
        tuples = self._tuples
        t = tuples.get(key)
        if t is None:  # most tuples have one flow: made with it, no add()
            t = tuples[key] = TupleLetters(key, start, col)
            if len(tuples) > self.max_tuples:
                tuples.popitem(last=False)
                self.evicted += 1
        else:
            tuples.move_to_end(key)
            if not t.add(start, col, self.variant, self.max_chars):
                self.too_late += 1
                return None
        if end > t.last_seen:
            t.last_seen = end
        return t

    def expire(self, now: float) -> int:
        """Drop tuples idle for longer than `idle` (cheap: only the least recently active are looked at)."""
        gone = 0
        limit = now - self.idle
        tuples = self._tuples
        while tuples:
            t = next(iter(tuples.values()))
            if t.last_seen >= limit:
                break
            tuples.popitem(last=False)
            gone += 1
        self.expired += gone
        return gone

    def get(self, key: TupleKey) -> TupleLetters | None:
        return self._tuples.get(key)

    def __len__(self) -> int:
        return len(self._tuples)

    def __iter__(self) -> Iterator[TupleLetters]:
        return iter(list(self._tuples.values()))
