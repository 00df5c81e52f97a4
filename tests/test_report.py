"""The report's plots (slipsq.report.svg) and page (slipsq.report.html): well-formed, self-contained,
and a hostile DNS name shows as text, never as markup."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.output.timeline import build
from slipsq.report import rank, svg
from slipsq.report.html import render_report

SVG = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert(1)</script><img src=x onerror=alert(2)>"\'&.evil.example'


def _tree(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # raises on markup that is not well-formed XML


def test_a_strip_has_one_tick_per_connection_and_says_how_regular() -> None:
    starts = [1000.0 + 10 * i for i in range(30)]
    root = _tree(svg.strip(starts, 1000.0, 1300.0, "a -> b:443/tcp"))
    ticks = [e for e in root.iter(f"{SVG}line") if e.get("y1") == "18"]
    assert len(ticks) == 30
    xs = [float(e.get("x1", "0")) for e in ticks]
    gaps = [b - a for a, b in pairwise(xs)]
    assert max(gaps) - min(gaps) <= 0.2  # evenly spaced starts are evenly spaced ticks (x printed to 0.1)
    assert "every 10.0 s (spread 0.0 s)" in "".join(root.itertext())
    assert svg.regularity([5.0]) == "one connection"
    assert svg.regularity([0, 10, 20, 31, 40]) == "every 10.0 s (spread 0.5 s)"  # gaps 10 10 11 9


def test_bars_windows_and_scatter_draw_what_they_are_given() -> None:
    root = _tree(svg.bars([100, 200, 400], "x"))
    heights = [float(r.get("height", "0")) for r in root.iter(f"{SVG}rect")][1:]  # [0] is the frame
    assert heights == [12.0, 24.0, 48.0]
    root = _tree(svg.windows([(3600.0, 0.5), (0.0, 1.8)], 1.0))
    fills = [r.get("fill") for r in root.iter(f"{SVG}rect")][1:]
    assert fills == ["#c0392b", "#e0a030"]  # sorted by window: the first (1.8) is over the threshold
    assert any(e.get("stroke-dasharray") for e in root.iter(f"{SVG}line"))
    root = _tree(svg.scatter([(10.0, 0.9, False), (20.0, 1.9, True)], 0.0, 30.0))
    assert [c.get("r") for c in root.iter(f"{SVG}circle")] == ["3", "5"]


@given(st.text())
@settings(max_examples=60)
def test_any_label_stays_text(label: str) -> None:
    root = _tree(svg.strip([1.0, 2.0, 3.0], 0.0, 4.0, label))  # control characters too: XML forbids them
    assert {e.tag.removeprefix(SVG) for e in root.iter()} <= {"svg", "title", "rect", "text", "line"}


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.links: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.links += [v or "" for k, v in attrs if k in ("href", "src")]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _page(name: str) -> str:
    recs = [
        {"k": "dns", "ts": 1000.0, "host": "192.168.1.66", "name": name, "rcode": 0, "answers": ["203.0.113.66"]},
        *({"k": "flow", "ts": 1010.0 + 10 * i, "end": 1010.2 + 10 * i, "proto": "tcp", "src": "192.168.1.66",
           "sport": 40000 + i, "dst": "203.0.113.66", "dport": 443, "sbytes": 900, "dbytes": 1600}
          for i in range(12)),
        {"k": "alert", "ts": 1100.0, "decided_ts": 1100.5, "detector": "beacon", "offender": "203.0.113.66",
         "src_ip": "192.168.1.66", "description": f"C&C beacon to {name}", "score": 1.8, "action": "block"},
        {"k": "block", "ts": 1100.0, "ip": "203.0.113.66", "duration": 14400, "reason": f"beacon {name}",
         "by": "judge"},
    ]
    stories = rank(build(recs, {"192.168.1.66", "203.0.113.66"}).values())
    return render_report(stories, "test")


def test_a_hostile_name_shows_as_text_and_never_as_markup() -> None:
    page = _page(HOSTILE)
    p = Tags()
    p.feed(page)
    assert "script" not in p.tags and "img" not in p.tags
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert sum(HOSTILE in t for t in p.text) >= 3  # the name table, the timeline, the evidence


@given(st.text(min_size=1, max_size=80))
@settings(max_examples=40, deadline=None)
def test_no_name_adds_an_element(name: str) -> None:
    p = Tags()
    p.feed(_page(name))
    assert p.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "table", "tr", "th",
                      "td", "a", "span", "div", "svg", "rect", "text", "line", "circle"}


def test_the_page_is_self_contained() -> None:
    page = _page("cdn-edge.example.net")
    p = Tags()
    p.feed(page)
    assert p.links and all(link.startswith("#host-") for link in p.links)  # only links inside the page
    assert "<script" not in page and "@import" not in page and "url(" not in page
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing
    assert page.index("203.0.113.66") < page.index("192.168.1.66")  # ranked: the blocked host first
