"""Plots for the HTML report, as inline SVG text: no JavaScript, no fonts or files fetched, readable
in any browser and in a mail client. Four kinds, each a pure function of numbers to markup:

* `strip`   a time strip with one tick per connection start: a beacon's ticks are evenly spaced, a
            person sees the regularity at a glance (and the gaps' spread is printed beside it);
* `bars`    one bar per connection (bytes, in start order): same-sized bars are a machine talking;
* `windows` the score per judge window against the threshold line;
* `scatter` evidence over time, one dot per alert at its score, blocks in red.

Every text that goes into the markup is escaped here (printable, then markupsafe): labels may
quote DNS names. The
results are `Markup`, so the template does not escape them twice. This module does no I/O.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import pairwise

from markupsafe import Markup
from markupsafe import escape as _escape

from slipsq.output.timeline import printable

WIDTH = 640


def escape(text: str) -> Markup:
    """Text for SVG: control characters as \\xNN first (XML forbids them even escaped), then entities."""
    return _escape(printable(text))

PAD = 6  # left and right margin inside the drawing
FONT = 'font-family="sans-serif" font-size="10"'


def _hm(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M:%S")


def _x(ts: float, t0: float, t1: float, width: int) -> float:
    span = (t1 - t0) or 1.0
    return PAD + (ts - t0) / span * (width - 2 * PAD)


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
            f'<title>{escape(title)}</title>'
            f'<rect width="{width}" height="{height}" fill="#fafafa" stroke="#ddd"/>')
    return Markup(head + "".join(body) + "</svg>")


def _axis(t0: float, t1: float, width: int, y: float) -> list[str]:
    return [f'<text x="{PAD}" y="{y:.1f}" {FONT} fill="#555">{_hm(t0)}</text>',
            f'<text x="{width - PAD}" y="{y:.1f}" {FONT} fill="#555" text-anchor="end">{_hm(t1)} UTC</text>']


def regularity(starts: Sequence[float]) -> str:
    """The gaps between connection starts in words: "every 2.0 s (spread 0.1 s)"."""
    s = sorted(starts)
    gaps = [b - a for a, b in pairwise(s)]
    if not gaps:
        return "one connection"
    med = statistics.median(gaps)
    spread = statistics.median(abs(g - med) for g in gaps)  # median absolute deviation: robust
    return f"every {med:.1f} s (spread {spread:.1f} s)"


def strip(starts: Sequence[float], t0: float, t1: float, label: str, width: int = WIDTH) -> Markup:
    """One tick per connection start between t0 and t1."""
    height = 46
    body = [f'<text x="{PAD}" y="12" {FONT} fill="#222">{escape(label)} — {escape(regularity(starts))}</text>',
            f'<line x1="{PAD}" y1="30" x2="{width - PAD}" y2="30" stroke="#bbb"/>']
    for ts in starts:
        x = _x(ts, t0, t1, width)
        body.append(f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="30" stroke="#1f5fa8"/>')
    body += _axis(t0, t1, width, 42)
    return _svg(width, height, f"connection starts: {label}", body)


def bars(values: Sequence[int], label: str, width: int = WIDTH) -> Markup:
    """One bar per value (bytes per connection, in start order), scaled to the largest."""
    height = 70
    top = max(values, default=0) or 1
    n = max(len(values), 1)
    step = (width - 2 * PAD) / n
    body = [f'<text x="{PAD}" y="12" {FONT} fill="#222">{escape(label)} — largest {top:,} B</text>']
    for i, v in enumerate(values):
        h = v / top * 48
        body.append(f'<rect x="{PAD + i * step:.2f}" y="{64 - h:.1f}" width="{max(step * 0.8, 0.5):.2f}" '
                    f'height="{h:.1f}" fill="#4a8f4a"/>')
    return _svg(width, height, f"bytes per connection: {label}", body)


def windows(points: Sequence[tuple[float, float]], threshold: float, width: int = WIDTH) -> Markup:
    """Score per window: one bar per (window start, score), the threshold as a dashed red line."""
    height = 90
    top = max([threshold * 1.25, *(s for _, s in points)])
    n = max(len(points), 1)
    step = min((width - 2 * PAD) / n, 60.0)
    base, tall = 70.0, 56.0
    ty = base - threshold / top * tall
    body = [f'<text x="{PAD}" y="11" {FONT} fill="#222">score per window (threshold {threshold:g})</text>']
    for i, (start, score) in enumerate(sorted(points)):
        h = score / top * tall
        color = "#c0392b" if score >= threshold else "#e0a030"
        x = PAD + i * step
        body.append(f'<rect x="{x:.1f}" y="{base - h:.1f}" width="{step * 0.8:.1f}" height="{h:.1f}" '
                    f'fill="{color}"><title>{_hm(start)}: {score:.2f}</title></rect>')
        body.append(f'<text x="{x:.1f}" y="84" {FONT} fill="#555">{_hm(start)[:5]}</text>')
    body.append(f'<line x1="{PAD}" y1="{ty:.1f}" x2="{width - PAD}" y2="{ty:.1f}" stroke="#c0392b" '
                f'stroke-dasharray="4 3"/>')
    return _svg(width, height, "score per window", body)


def scatter(points: Sequence[tuple[float, float, bool]], t0: float, t1: float, width: int = WIDTH) -> Markup:
    """Evidence over time: (time, score, blocked) dots; a block is a larger red dot."""
    height = 80
    top = max([1.0, *(s for _, s, _ in points)])
    body = [f'<text x="{PAD}" y="11" {FONT} fill="#222">evidence over time ({len(points)} alerts; '
            f'height: window score)</text>',
            f'<line x1="{PAD}" y1="64" x2="{width - PAD}" y2="64" stroke="#bbb"/>']
    for ts, score, blocked in points:
        x, y = _x(ts, t0, t1, width), 64 - score / top * 44
        if blocked:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="#c0392b"/>')
        else:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#e0a030" fill-opacity="0.8"/>')
    body += _axis(t0, t1, width, 76)
    return _svg(width, height, "evidence over time", body)
