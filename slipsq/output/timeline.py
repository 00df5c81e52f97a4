"""Timelines: for each host with evidence, the story of what it did, built from the activity log
(slipsq.output.activity): its flows summarised per 4-tuple with their behavioral letters, the DNS
names it asked, the evidence as it came, its score per judge window, its blocks and unblocks.

    records ─► hosts_with_evidence() ─► build() ─► Story per host ─► render() (text) / slipsq.report (HTML)

Letters are recomputed from the flows (letters.letters_of, the detector's reference: the same string
the detector matched, from the tuple's last MAX_SAMPLES flows). Every per-host map is bounded
(MAX_TUPLES, MAX_NAMES, MAX_ALERTS): a scanner's story says how much was left out, it never grows
without end. Text that came from the network (DNS names, descriptions that quote them) is printed
through `printable`, so a name cannot move a terminal's cursor. This module reads records and
formats text; it never reads a file itself and never decides anything.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slipsq.detect.stratosphere.letters import LETTER_PROTOS, letters_of
from slipsq.output.activity import is_time
from slipsq.records import fmt_score, printable

MAX_SAMPLES = 2000  # flows per 4-tuple kept for letters and plots (the newest)
MAX_TUPLES = 2000  # 4-tuples per host (the first seen; later ones are counted)
MAX_NAMES = 2000  # DNS names per host
MAX_ALERTS = 2000  # alerts per host (the first ones: the story's beginning matters)
MAX_LINES = 400  # 4-tuple lines in a text timeline (the busiest)
SPREAD = 5  # one-flow 4-tuples of one client to one port (or one host) that make one "scan" line
HOUR = 3600.0


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class TupleStats:
    """One 4-tuple (client, server, server port, protocol) as seen in the flows."""

    src: str
    dst: str
    dport: int
    proto: str
    flows: int = 0
    sbytes: int = 0
    dbytes: int = 0
    first: float = math.inf
    last: float = -math.inf
    samples: deque[tuple[float, int, float]] = field(default_factory=lambda: deque(maxlen=MAX_SAMPLES))

    def add(self, start: float, end: float, sbytes: int, dbytes: int) -> None:
        self.flows += 1
        self.sbytes += sbytes
        self.dbytes += dbytes
        self.first = min(self.first, start)
        self.last = max(self.last, end, start)
        self.samples.append((start, sbytes + dbytes, max(0.0, end - start)))

    @property
    def letters(self) -> str:
        return letters_of(list(self.samples)) if self.proto in LETTER_PROTOS else ""

    def label(self) -> str:
        return f"{self.src} -> {self.dst}:{self.dport}/{self.proto}"


@dataclass
class NameStats:
    name: str
    first: float
    last: float
    count: int = 1
    rcode: int = 0
    answers: set[str] = field(default_factory=set)


@dataclass
class Story:
    """What one host did. `windows`: per judge window (its start), the highest score of the evidence
    that names the host as offender or as source."""

    ip: str
    tuples: dict[tuple[str, str, int, str], TupleStats] = field(default_factory=dict)
    names: dict[str, NameStats] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)  # "block" and "unblock" records
    windows: dict[float, float] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=lambda: {"tuples": 0, "names": 0, "alerts": 0})
    threshold: float = 1.0

    @property
    def score(self) -> float:
        """The highest window score of the evidence that names it."""
        return max(self.windows.values(), default=0.0)

    @property
    def flows(self) -> int:
        return sum(t.flows for t in self.tuples.values())

    @property
    def times_blocked(self) -> int:
        return sum(1 for b in self.blocks if b.get("k") == "block")

    def span(self) -> tuple[float, float]:
        times = [t.first for t in self.tuples.values()] + [t.last for t in self.tuples.values()]
        times += [n.first for n in self.names.values()] + [n.last for n in self.names.values()]
        times += [_alert_ts(a) for a in self.alerts] + [float(b["ts"]) for b in self.blocks]
        return (min(times), max(times)) if times else (0.0, 0.0)


def _alert_ts(a: dict[str, Any]) -> float:
    """Its traffic's time, the clock of flows, names and blocks alike (a block is stamped with the
    traffic time of the evidence that decided it; `decided_ts` is the engine's later clock)."""
    return float(a.get("ts") or a.get("decided_ts") or 0.0)


def hosts_with_evidence(records: Iterable[dict[str, Any]]) -> set[str]:
    """Every host an alert names as offender or source, and every blocked host."""
    hosts: set[str] = set()
    for r in records:
        k = r.get("k")
        if k == "alert":
            hosts.update(h for h in (r.get("offender"), r.get("src_ip")) if isinstance(h, str) and h)
        elif k == "block" and isinstance(r.get("ip"), str):
            hosts.add(r["ip"])
    return hosts


def build(records: Iterable[dict[str, Any]], hosts: Iterable[str], window: float = HOUR,
          threshold: float = 1.0) -> dict[str, Story]:
    """The stories of `hosts` from activity records (in any order; each story is sorted when read).
    `window`/`threshold`: the judge's (judge.window, judge.threshold), for the score per window."""
    stories = {h: Story(h, threshold=threshold) for h in hosts}
    for r in records:
        k = r.get("k")
        try:
            if k == "flow":
                _flow(stories, r)
            elif k == "dns":
                _dns(stories.get(r.get("host")), r)  # type: ignore[arg-type]
            elif k == "alert":
                _alert(stories, r, window)
            elif k in ("block", "unblock"):
                _block(stories.get(r.get("ip")), r)  # type: ignore[arg-type]
        except (TypeError, ValueError, KeyError, OverflowError):  # (int() of a JSON 1e400 is inf)
            continue  # a record of the wrong shape (a hand-edited log): left out, never a crash
    return stories


# Each record is read whole before it changes a story: a field of the wrong kind raises (build leaves
# the record out) while nothing of it is kept, so what a story holds can always be printed.

def _time(v: Any) -> float:
    if not is_time(v):
        raise ValueError(f"not a time: {v!r:.40}")
    return float(v)


def _number(v: Any) -> float:
    f = float(v)
    if not math.isfinite(f):
        raise ValueError(f"not a finite number: {v!r:.40}")
    return f


def _flow(stories: dict[str, Story], r: dict[str, Any]) -> None:
    src, dst = r["src"], r["dst"]
    key = (src, dst, int(r["dport"]), str(r["proto"]))
    ts = _time(r["ts"])
    values = (ts, _time(r.get("end") or ts), int(r["sbytes"]), int(r["dbytes"]))
    for ip in (src, dst) if src != dst else (src,):
        s = stories.get(ip)
        if s is None:
            continue
        t = s.tuples.get(key)
        if t is None:
            if len(s.tuples) >= MAX_TUPLES:
                s.left_out["tuples"] += 1
                continue
            t = s.tuples[key] = TupleStats(*key)
        t.add(*values)


def _dns(s: Story | None, r: dict[str, Any]) -> None:
    if s is None:
        return
    name, ts, rcode = str(r["name"]), _time(r["ts"]), int(r.get("rcode") or 0)
    answers = [str(a) for a in list(r.get("answers") or ())[:8]]
    n = s.names.get(name)
    if n is None:
        if len(s.names) >= MAX_NAMES:
            s.left_out["names"] += 1
            return
        n = s.names[name] = NameStats(name, ts, ts, 0)
    n.count += 1
    n.first, n.last = min(n.first, ts), max(n.last, ts)
    n.rcode = rcode
    for a in answers:
        if len(n.answers) < 8:
            n.answers.add(a)


def _alert(stories: dict[str, Story], r: dict[str, Any], window: float) -> None:
    # the offender's window score after this evidence; the source of the evidence (an infected
    # host whose C&C server is the offender) shares it: its traffic made that score
    start = (_time(r["ts"]) // window) * window  # the judge's windows are aligned (judge.py)
    score = _number(r.get("score") or 0.0)
    _time(_alert_ts(r))
    for ip in {r.get("offender"), r.get("src_ip")}:
        s = stories.get(ip)  # type: ignore[arg-type]
        if s is None:
            continue
        if len(s.alerts) < MAX_ALERTS:
            s.alerts.append(r)
        else:
            s.left_out["alerts"] += 1
        s.windows[start] = max(s.windows.get(start, 0.0), score)


def _block(s: Story | None, r: dict[str, Any]) -> None:
    if s is None:
        return
    _time(r["ts"])
    if r.get("k") == "block" and r.get("duration"):
        _number(r["duration"])
    s.blocks.append(r)


# --- text ---------------------------------------------------------------------------------------

def events(story: Story) -> list[tuple[float, str, str]]:
    """The story's lines in time order: (time, kind, text). A 4-tuple is one line at its first flow."""
    out: list[tuple[float, str, str]] = []
    single, spread = _spreads(list(story.tuples.values()))
    for first, text in spread:
        out.append((first, "flows", text))
    busiest = sorted(single, key=lambda t: -t.flows)[:MAX_LINES]
    for t in busiest:
        letters = t.letters
        tail = f"; letters {letters[:60]}{'…' if len(letters) > 60 else ''}" if letters else ""
        out.append((t.first, "flows", f"{t.label()}: {t.flows} flow{'s' if t.flows != 1 else ''}, "
                    f"{_bytes(t.sbytes)} up, {_bytes(t.dbytes)} down, until {when(t.last)[11:]}{tail}"))
    for n in story.names.values():
        what = "NXDOMAIN" if n.rcode == 3 else ", ".join(sorted(n.answers)) or f"rcode {n.rcode}"
        times = f" ({n.count} times until {when(n.last)[11:]})" if n.count > 1 else ""
        out.append((n.first, "dns", f"asked {printable(n.name)} -> {what}{times}"))
    for a in story.alerts:
        action = "BLOCK" if a.get("action") == "block" else "alert"
        score = fmt_score(float(a.get("score") or 0), story.threshold)
        out.append((_alert_ts(a), "evidence", f"[{action}] {a.get('detector', '?')}: "
                    f"{printable(a.get('description', ''))} (score {score}, against {a.get('offender', '?')})"))
    for b in story.blocks:
        if b.get("k") == "block":
            dur = "until unblocked" if not b.get("duration") else f"for {float(b['duration']) / 3600:g}h"
            out.append((float(b["ts"]), "BLOCKED", f"{b['ip']} {dur} by {b.get('by', '?')}: "
                        f"{printable(b.get('reason', ''))}"))
        else:
            out.append((float(b["ts"]), "UNBLOCKED", f"{b['ip']} by {b.get('who', '?')}: "
                        f"{printable(b.get('reason', ''))}"))
    order = {"flows": 0, "dns": 1, "evidence": 2, "BLOCKED": 3, "UNBLOCKED": 4}
    out.sort(key=lambda e: (e[0], order[e[1]]))  # at one time: a block after the evidence that decided it
    return [(ts, kind, printable(text)) for ts, kind, text in out]  # (addresses and detectors too)


def _spreads(tuples: list[TupleStats]) -> tuple[list[TupleStats], list[tuple[float, str]]]:
    """One-flow 4-tuples of one client to one port on many hosts (a horizontal scan), then to many
    ports of one host (a vertical one), SPREAD or more: one line each, so a scan is one line of the
    story, not a thousand. Returns the other tuples and those lines."""
    rest = [t for t in tuples if t.flows != 1]
    singles = [t for t in tuples if t.flows == 1]
    lines: list[tuple[float, str]] = []
    for key, what in ((lambda t: (t.src, t.dport, t.proto), "hosts"), (lambda t: (t.src, t.dst, t.proto), "ports")):
        groups: dict[tuple[str, Any, str], list[TupleStats]] = {}
        for t in singles:
            groups.setdefault(key(t), []).append(t)
        singles = []
        for (src, mid, proto), group in groups.items():
            if len(group) < SPREAD:
                singles += group
                continue
            up, down = sum(t.sbytes for t in group), sum(t.dbytes for t in group)
            first, last = min(t.first for t in group), max(t.last for t in group)
            target = f"{len(group)} hosts:{mid}/{proto}" if what == "hosts" else f"{mid}: {len(group)} ports/{proto}"
            lines.append((first, f"{src} -> {target}, one flow each, {_bytes(up)} up, {_bytes(down)} down, "
                                 f"until {when(last)[11:]}"))
    return rest + singles, lines


def render(story: Story, skipped: int = 0) -> str:
    """The text timeline of one host (what `slipsq timeline IP` prints, and -o DIR's timeline/IP.txt)."""
    first, last = story.span()
    lines = [f"timeline of {printable(story.ip)}: {when(first)} to {when(last)} UTC",
             f"  highest window score {fmt_score(story.score, story.threshold)} (threshold "
             f"{story.threshold:g}); blocked {story.times_blocked} time(s); {len(story.tuples)} 4-tuples, "
             f"{story.flows} flows, {len(story.names)} DNS names, {len(story.alerts)} alerts"]
    left = [f"{n} {what}" for what, n in story.left_out.items() if n]
    if len(story.tuples) > MAX_LINES:
        left.append(f"{len(story.tuples) - MAX_LINES} quieter 4-tuples not listed")
    if skipped:
        left.append(f"{skipped} unreadable log lines skipped")
    if left:
        lines.append("  left out: " + ", ".join(left))
    lines.append("")
    for ts, kind, text in events(story):
        lines.append(f"{when(ts)}  {kind:<9} {text}")
    if story.windows:
        lines += ["", "score per window:"]
        for start in sorted(story.windows):
            lines.append(f"  {when(start)}  {fmt_score(story.windows[start], story.threshold)}")
    return "\n".join(lines) + "\n"


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
