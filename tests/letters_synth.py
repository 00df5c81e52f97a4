"""Flows that write a given letter string: the inverse of slipsq.detect.stratosphere.letters, for tests.

Each character class of letters.md is mapped back to a representative flow (size, duration) and
a gap T2 chosen so that T2/T1 lands in the letter's periodicity row and T2 in its time symbol's
bin. Not every string is reachable (e.g. `.` after a long gap in a periodic row); `flows_for`
picks the closest gap then, so tests compare `letters_of(flows)` with what they expect.
"""

from __future__ import annotations

from slipsq.detect.stratosphere.letters import ROW_NO_DATA, ROW_STRONG, ROW_STRONG_NOT, ROW_WEAK, ROW_WEAK_NOT
from slipsq.flow import Flow

SIZES = (100, 600, 6000)  # small, medium, large (bytes)
DURS = (0.05, 1.0, 30.0)  # short, medium, long (seconds)
BINS = {".": (0.5, 5.0), ",": (5.0, 60.0), "+": (60.0, 300.0), "*": (300.0, 3600.0)}
FACTORS = {ROW_STRONG: (1.0,), ROW_WEAK: (1.15, 1.25, 1.1), ROW_WEAK_NOT: (2.0, 3.0, 4.5, 1.5),
           ROW_STRONG_NOT: (8.0, 20.0, 6.0, 50.0, 200.0)}
ROWS = (ROW_NO_DATA, ROW_STRONG, ROW_WEAK, ROW_WEAK_NOT, ROW_STRONG_NOT)


def pieces(letters: str) -> list[tuple[int, str, str]]:
    """(zeros, letter, symbol) per flow."""
    out: list[tuple[int, str, str]] = []
    zeros = 0
    i = 0
    while i < len(letters):
        c = letters[i]
        if c == "0":
            zeros += 1
            i += 1
            continue
        sym = letters[i + 1] if i + 1 < len(letters) and letters[i + 1] in BINS else ""
        out.append((zeros, c, sym))
        zeros = 0
        i += 2 if sym else 1
    return out


def _bin(zeros: int, sym: str) -> tuple[float, float]:
    if zeros:
        return (3600.0 * zeros + 1, 3600.0 * (zeros + 1) - 1)
    if sym:
        lo, hi = BINS[sym]
        return (lo + 1e-3, hi)
    return (3601.0, 7199.0)


def flows_for(letters: str, client: str = "10.0.0.5", server: str = "203.0.113.9", port: int = 443,
              proto: str = "tcp", start: float = 1_000_000.0) -> list[Flow]:
    flows: list[Flow] = []
    t = start
    prev_gap: float | None = None
    for n, (zeros, letter, sym) in enumerate(pieces(letters)):
        row = next(r for r in ROWS if letter in r)
        col = row.index(letter)
        lo, hi = _bin(zeros, sym)
        if n >= 1:
            gap = (lo + hi) / 2 if not sym or sym == "*" else min(hi, max(lo, {".": 2.0, ",": 30.0,
                                                                              "+": 120.0}[sym]))
            if prev_gap is not None and row is not ROW_NO_DATA:
                for f in FACTORS[row]:
                    cands = [c for c in (prev_gap * f, prev_gap / f) if lo <= c <= hi]
                    if cands:
                        gap = cands[0]
                        break
            t += gap
            prev_gap = gap
        size, dur = SIZES[col // 3], DURS[col % 3]
        flows.append(Flow(start=t, end=t + dur, proto=proto, saddr=client, sport=40000 + n % 20000,
                          daddr=server, dport=port, spkts=3, dpkts=3, sbytes=size // 2,
                          dbytes=size - size // 2, closed_by="fin"))
    return flows
