"""The report page: stories (slipsq.output.timeline) into one self-contained HTML file through a
Jinja2 template shipped in the package (slipsq/report/templates/report.html.j2).

Self-contained: the CSS is inline, the plots are inline SVG (slipsq.report.svg), there is no script,
no font, no image and no link to anything outside the file, so it opens on a machine without network
and leaks nothing when opened. Autoescaping is on for every value: DNS names, descriptions and
reasons came from the network, and a hostile name must show as text, never become markup; every
text is `printable` first (no control character, no lone surrogate, which UTF-8 cannot write). This
module formats; it reads no traffic and writes no file.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from slipsq import __version__
from slipsq.output.timeline import Story, TupleStats, events, printable, when
from slipsq.records import fmt_score
from slipsq.report import svg

MAX_EVENTS = 500  # timeline rows per host on the page (the text timeline has them all)
MAX_STRIPS = 4  # 4-tuples whose connection starts are drawn, per host (the busiest)
MAX_TUPLE_ROWS = 50


def environment() -> Environment:
    return Environment(loader=PackageLoader("slipsq.report", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _tuple_row(t: TupleStats) -> dict[str, Any]:
    letters = t.letters
    return {"label": printable(t.label()), "flows": t.flows, "up": t.sbytes, "down": t.dbytes, "first": when(t.first),
            "letters": letters[:160] + ("…" if len(letters) > 160 else "")}


def _block_row(b: dict[str, Any]) -> dict[str, str]:
    if b.get("k") == "block":
        dur = "until unblocked" if not b.get("duration") else f"for {float(b['duration']) / 3600:g} h"
        return {"what": "blocked", "when": when(float(b["ts"])), "how": dur, "who": printable(b.get("by", "")),
                "reason": printable(b.get("reason", ""))}
    return {"what": "unblocked", "when": when(float(b["ts"])), "how": "", "who": printable(b.get("who", "")),
            "reason": printable(b.get("reason", ""))}


def host_view(s: Story, rank: int) -> dict[str, Any]:
    """What the template shows of one host: numbers, rows and plots (Markup), all made here."""
    first, last = s.span()
    busiest = sorted(s.tuples.values(), key=lambda t: (-t.flows, t.first))
    plots = []
    for t in [t for t in busiest if t.flows >= 3][:MAX_STRIPS]:
        starts = [x[0] for x in t.samples]
        plots.append(svg.strip(starts, first, last, t.label()))
    if busiest and busiest[0].flows >= 2:
        plots.append(svg.bars([x[1] for x in busiest[0].samples], f"bytes per connection, {busiest[0].label()}"))
    if s.windows:
        plots.append(svg.windows(sorted(s.windows.items()), s.threshold))
    if s.alerts:
        points = [(float(a["ts"]), float(a.get("score") or 0.0), a.get("action") == "block") for a in s.alerts]
        plots.append(svg.scatter(points, first, last))
    rows = events(s)
    names = sorted(s.names.values(), key=lambda n: (-n.count, n.name))
    return {
        "rank": rank, "ip": printable(s.ip), "score": fmt_score(s.score, s.threshold), "over": s.score >= s.threshold,
        "blocked": s.times_blocked, "flows": s.flows, "tuples": len(s.tuples), "span": f"{when(first)} – {when(last)}",
        "plots": plots,
        "tuple_rows": [_tuple_row(t) for t in busiest[:MAX_TUPLE_ROWS]],
        "more_tuples": max(0, len(busiest) - MAX_TUPLE_ROWS),
        "names": [{"name": printable(n.name), "count": n.count,
                   "answer": printable("NXDOMAIN" if n.rcode == 3 else
                                       ", ".join(sorted(n.answers)) or f"rcode {n.rcode}")}
                  for n in names[:100]],
        "more_names": max(0, len(names) - 100),
        "blocks": [_block_row(b) for b in sorted(s.blocks, key=lambda b: float(b["ts"]))],
        "events": [{"when": when(ts), "kind": kind, "text": text} for ts, kind, text in rows[:MAX_EVENTS]],
        "more_events": max(0, len(rows) - MAX_EVENTS),
        "left_out": {k: v for k, v in s.left_out.items() if v},
    }


def render_report(found: list[Story], source: str, left_out: int = 0, skipped: int = 0,
                  now: datetime | None = None, unreadable: dict[str, tuple[int, int]] | None = None) -> str:
    """The whole page for `found` (already ranked). `unreadable`: {file: (unreadable lines, lines)}
    of the activity files that held lines no record could be read from, each told on the page."""
    spans = [s.span() for s in found]
    page = environment().get_template("report.html.j2")
    damaged = [{"file": printable(f), "bad": bad, "lines": lines} for f, (bad, lines) in (unreadable or {}).items()]
    return page.render(
        hosts=[host_view(s, i + 1) for i, s in enumerate(found)],
        source=printable(source), version=__version__, left_out=left_out, skipped=skipped, damaged=damaged,
        generated=(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%S UTC"),
        span=f"{when(min(a for a, _ in spans))} – {when(max(b for _, b in spans))} UTC" if spans else "no activity",
        blocked=sum(1 for s in found if s.times_blocked),
    )
