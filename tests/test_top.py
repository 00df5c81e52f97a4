"""`slipsq top`: the screen as pure functions (any terminal size), and the real command in a real
pseudo-terminal (pexpect), its screen read by a terminal emulator (pyte), against a real daemon
without a kernel (tests/fakedaemon.py: real control socket, handler, engine, worker and store)."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.topview import REVERSE, View, cells, columns, fit, left, rates, render
from tests.fakedaemon import running_daemon
from tests.screen import ROOT, Term

STATUS: dict[str, Any] = {
    "pid": 4242, "uptime": 7384.2, "queue": 5, "packets": 1_000_000, "accepted": 999_000, "dropped": 1000,
    "errors": 0, "engine_errors": 0, "table": {"flows_open": 321, "flows_closed": 45_000, "evicted": 0},
    "flows": 45_000, "alerts": 12, "blocks_decided": 3, "blocks_active": 2,
    "worker": {"batches": 5, "busy_s": 0.0, "kernel_pending": 0, "store_pending": 0},
    "packet_loop_age_s": 0.01, "kernel": {"waiting": 3, "queue_dropped": 0, "user_dropped": 0, "maxlen": 1024},
    "fail_open": True, "backend": "nft", "memory": {"rss_kb": 51200, "table_bytes": 4 << 20},
    "last_alerts": [{"time": "2026-12-05T15:40:01.123456Z", "detector": "beacon", "action": "block",
                     "offender": "203.0.113.7", "description": "beacon every 2 s", "score": 1.8}],
}
BLOCKS: list[dict[str, Any]] = [
    {"ip": "203.0.113.7", "remaining": 3600.0, "detector": "beacon", "by": "judge", "reason": "beacon"},
    {"ip": "198.51.100.9", "remaining": None, "detector": "", "by": "admin:alice", "reason": "manual"}]


def view() -> View:
    v = View("/var/lib/slipsq")
    v.take_status(dict(STATUS), "", 100.0)
    v.take_blocks([dict(b) for b in BLOCKS], 100.0)
    return v


def text(lines: list[tuple[str, int]]) -> str:
    return "\n".join(t for t, _ in lines)


# --- the screen as a function -------------------------------------------------------------------

def test_the_screen_shows_what_an_admin_looks_for() -> None:
    v = view()
    later = dict(STATUS, packets=1_002_000, accepted=1_000_990, dropped=1010,
                 table={"flows_open": 300, "flows_closed": 45_100, "evicted": 0})
    v.take_status(later, "", 102.0)
    screen = text(render(v, 120, 30, 160.0))
    assert "pid 4242" in screen and "up 2h03m" in screen and "fail-open on" in screen
    assert "packets 1,002,000  1,000/s" in screen and "verdicts 1,000/s" in screen
    assert "dropped 1,010 (5.0/s)" in screen and "300 open" in screen and "45,100 closed (50/s)" in screen
    assert "queue 3/1,024 waiting" in screen and "memory 50.0 MB" in screen
    assert "blocks 2 active, 3 decided" in screen
    # blocks: time left counts down from when the list was read (60 s ago); no expiry says so
    assert "203.0.113.7" in screen and "59m00s" in screen and "no expiry" in screen
    assert "15:40:01 block beacon       203.0.113.7" in screen


def test_a_restarted_daemon_has_no_rates_from_its_predecessor() -> None:
    v = view()
    v.take_status(dict(STATUS, pid=5000, packets=10), "", 101.0)
    assert v.rates == {}
    assert rates(STATUS, dict(STATUS, packets=STATUS["packets"] + 500), 0.5)["packets"] == 1000.0
    assert rates(STATUS, STATUS, 0.0) == {}


def test_a_daemon_that_went_away() -> None:
    v = view()
    v.take_status(None, "no daemon answers on /var/lib/slipsq/control.sock", 101.0)
    screen = text(render(v, 100, 20, 101.0))
    assert "slipsq is not running: no daemon answers" in screen and "203.0.113.7" not in screen


def test_keys_select_confirm_and_cancel() -> None:
    v = view()
    assert v.selected_ip() == "203.0.113.7"  # the one expiring first is first
    assert v.key("KEY_UP") == "" and v.selected_ip() == "203.0.113.7"
    v.key("j")
    v.key("KEY_DOWN")  # past the end stays on the last
    assert v.selected_ip() == "198.51.100.9"
    assert v.key("u") == "" and v.confirm == "198.51.100.9"
    assert "unblock 198.51.100.9? y/n" in text(render(v, 80, 24, 100.0))
    assert v.key("n") == "" and v.message == "198.51.100.9 stays blocked"
    v.key("u")
    assert v.key("y") == "198.51.100.9" and not v.confirm
    assert v.key("q") == "quit"


def test_unblock_needs_a_selection_and_a_daemon() -> None:
    v = View("/s")
    v.take_status(dict(STATUS), "", 1.0)
    assert v.key("u") == "" and v.message == "no block selected" and not v.confirm
    v = view()
    v.take_status(None, "gone", 2.0)
    v.blocks = [dict(BLOCKS[0])]
    assert v.key("u") == "" and "slipsq unblock 203.0.113.7" in v.message


def test_the_selection_follows_its_ip_when_the_list_changes() -> None:
    v = view()
    v.key("j")
    v.take_blocks([{"ip": "192.0.2.1", "remaining": 5.0}, *BLOCKS], 101.0)
    assert v.selected_ip() == "198.51.100.9"
    v.take_blocks([BLOCKS[0]], 102.0)  # it was unblocked: the selection stays in the list
    assert v.selected_ip() == "203.0.113.7"


def test_many_blocks_scroll_with_the_selection() -> None:
    v = view()  # 203.0.113.7 is selected: it stays so when the list grows around it
    v.take_blocks([{"ip": f"203.0.113.{i}", "remaining": float(i), "by": "judge"} for i in range(1, 101)], 0.0)
    assert v.selected_ip() == "203.0.113.7"
    for _ in range(60):
        v.key("j")
    lines = render(v, 100, 24, 0.0)
    screen = text(lines)
    assert "> 203.0.113.67 " in screen and "203.0.113.1 " not in screen
    assert [t for t, a in lines if a == REVERSE and t.startswith(">")] == [t for t in screen.splitlines()
                                                                           if t.startswith(">")]
    # the one alert takes one line, the blocks the rest of the room
    assert sum(t.startswith("  203.0.113.") or t.startswith("> 203.0.113.") for t in screen.splitlines()) == 14


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 250), st.integers(0, 80), st.booleans(), st.integers(0, 40), st.integers(0, 40))
def test_any_terminal_size_gets_what_fits(width: int, height: int, up: bool, nblocks: int, nalerts: int) -> None:
    v = view() if up else View("/s")
    v.take_blocks([{"ip": f"2001:db8::{i:x}", "remaining": i * 1000.0} for i in range(nblocks)], 0.0)
    for i in range(nalerts):
        v.alerts.append({"time": "2026-12-05T15:40:01Z", "detector": "x" * i, "action": "alert",
                         "offender": "192.0.2.1", "description": "é" * i + "表\u0301😀" * i})
    lines = render(v, width, height, 1.0)
    # columns, not characters: a wide character (CJK, emoji) takes two, a combining mark none
    assert len(lines) <= height and all(columns(t) <= width for t, _ in lines)
    if height >= 2 and width >= 12:
        assert lines[-1][1] == REVERSE and lines[-1][0].strip()  # the keys (or the prompt) stay in sight


hostile = st.text(max_size=30)  # what a DNS name quoted in a description may hold: NUL, newline, ESC


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(hostile, hostile, hostile), max_size=5), st.lists(st.tuples(hostile, hostile), max_size=5),
       st.integers(1, 200), st.integers(1, 60))
def test_hostile_text_from_the_daemon_is_drawn_escaped(alerts: list[tuple[str, str, str]],
                                                      blocks: list[tuple[str, str]], width: int, height: int) -> None:
    """curses refuses a NUL (the view ended with "internal error: ValueError") and moves the cursor
    for a newline: every line of the screen is printable text, what the network wrote included."""
    v = view()
    for desc, detector, offender in alerts:
        v.alerts.append({"time": desc, "detector": detector, "action": "alert", "offender": offender,
                         "description": desc})
    v.take_blocks([{"ip": f"192.0.2.{i}", "remaining": 60.0, "detector": d, "by": "judge", "reason": r}
                   for i, (r, d) in enumerate(blocks)], 0.0)
    lines = render(v, width, height, 1.0)
    # fitted by terminal columns: a combining mark takes none (it may ride on the last column)
    assert lines and all(t.isprintable() and columns(t) <= width for t, _ in lines)
    # and what it said is still there to read
    v.alerts.append({"time": "2026-12-05T15:40:01Z", "detector": "dga", "action": "alert",
                     "offender": "192.0.2.1", "description": "e.g. a\x00b\nc.example"})
    if width >= 120 and height >= 30:
        assert any(t.endswith("e.g. a\\x00b\\nc.example") for t, _ in render(v, width, height, 1.0))


@pytest.mark.parametrize("seconds,want", [(None, "no expiry"), (59.9, "0m59s"), (3600, "1h00m"),
                                          (90000, "1d01h"), (-5, "0m00s")])
def test_left(seconds: float | None, want: str) -> None:
    assert left(seconds) == want


# --- the real command in a pseudo-terminal --------------------------------------------------------

@pytest.fixture
def term(tmp_path: Path) -> Iterator[Any]:
    made: list[Term] = []

    def make(rows: int = 30, cols: int = 110) -> Term:
        t = Term(tmp_path, rows, cols)
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def test_top_in_a_terminal_against_a_daemon(tmp_path: Path, term: Any) -> None:
    with running_daemon(tmp_path) as d:
        d.source.counters.update(packets=5000, accepted=4990, dropped=10)
        d.judged_block("203.0.113.7", "beacon")
        d.handle({"cmd": "block", "ip": "198.51.100.9", "duration": "forever", "reason": "manual"},
                 "admin:alice")
        t = term()
        t.wait("pid ", "packets 5,000", "BLOCKS (2)", "203.0.113.7", "198.51.100.9", "no expiry",
               "block beacon       203.0.113.7")
        # counters move: the next refresh shows them (and a rate)
        d.source.counters.update(packets=9000)
        t.wait("packets 9,000")
        d.alert("192.168.1.20", "longconn", "a 6 h SSH session")
        t.wait("alert longconn     192.168.1.20    a 6 h SSH session")

        # select the second block, refuse once, then unblock it
        first = t.screen()
        assert "> 203.0.113.7" in first
        t.child.send("j")
        t.wait("> 198.51.100.9")
        t.child.send("u")
        t.wait("unblock 198.51.100.9? y/n")
        t.child.send("n")
        t.wait("198.51.100.9 stays blocked")
        assert d.store.get("198.51.100.9") is not None
        t.child.send("u")
        t.wait("unblock 198.51.100.9? y/n")
        t.child.send("y")
        t.wait("unblocked 198.51.100.9", "BLOCKS (1)")
        assert d.store.get("198.51.100.9") is None and "198.51.100.9" not in d.fw.set
        assert d.store.audit("198.51.100.9")[-1].reason == "unblocked by admin in slipsq top"

        # a tiny terminal: what fits, no crash; back to a normal size
        t.resize(4, 20)
        small = t.wait(" slipsq top  pid", "up/down j/k select")  # the header and the keys, cut to fit
        assert len(small.splitlines()) == 4 and t.child.isalive()
        t.resize(30, 110)
        t.wait("BLOCKS (1)", "203.0.113.7")
    # the daemon went away: said so, and asked again
    t.wait("slipsq is not running")
    assert t.child.isalive()
    with running_daemon(tmp_path) as d2:
        d2.source.counters.update(packets=77)
        t.wait("packets 77")
        t.child.send("q")
        assert t.finish() == 0
    assert "Traceback" not in t.raw and "\x1b[?1049l" in t.raw


def test_ctrl_c_restores_the_terminal_and_exits_0(tmp_path: Path, term: Any) -> None:
    t = term()
    t.wait("slipsq is not running", "no daemon answers")  # started before any daemon: it waits
    t.child.sendintr()
    assert t.finish() == 0, t.raw[-500:]
    assert "\x1b[?1049l" in t.raw  # xterm's alternate screen left: the shell's screen is back
    assert "Traceback" not in t.raw and "slipsq:" not in t.raw


def test_sigterm_restores_the_terminal_too(tmp_path: Path, term: Any) -> None:
    t = term()
    t.wait("slipsq is not running")
    t.child.kill(signal.SIGTERM)
    assert t.finish() == 0 and "\x1b[?1049l" in t.raw


def test_without_a_terminal_it_says_so(tmp_path: Path) -> None:
    import subprocess

    r = subprocess.run([sys.executable, "-m", "slipsq", "top", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2 and r.stderr.strip() == \
        "slipsq: slipsq top needs a terminal; for scripts: slipsq status --json"


def test_the_light_status_top_asks_for_is_counters_only(tmp_path: Path) -> None:
    # once a second must not mean an iptables-save (drop_counters) and a store query every second
    with running_daemon(tmp_path) as d:
        d.judged_block("203.0.113.7", "beacon")
        calls: list[int] = []
        real = d.fw.drop_counters

        def counted() -> tuple[int, int]:
            calls.append(1)
            return real()

        d.fw.drop_counters = counted
        light = d.handle({"cmd": "status", "light": True}, "admin:x")["status"]
        assert calls == [] and light["kernel_block_drops"] is None and light["blocks_active"] == 1
        full = d.handle({"cmd": "status"}, "admin:x")["status"]
        assert calls == [1] and full["kernel_block_drops"] == {"packets": 0, "bytes": 0}
        assert full["blocks_active"] == 1
        # top reads these from either
        assert {"pid", "packets", "accepted", "dropped", "table", "kernel", "memory", "last_alerts",
                "blocks_active", "blocks_decided", "worker", "packet_loop_age_s"} <= set(light)


KEYS = st.sampled_from(["KEY_UP", "KEY_DOWN", "j", "k", "u", "U", "y", "Y", "n", "q", "x", "^[", "KEY_RESIZE"])


@given(st.lists(KEYS, max_size=40), st.integers(0, 5))
def test_any_keys_keep_the_selection_in_the_list_and_unblock_only_after_y(keys: list[str], n: int) -> None:
    v = View("/s")
    v.take_status(dict(STATUS), "", 1.0)
    v.take_blocks([{"ip": f"192.0.2.{i}", "remaining": float(i)} for i in range(n)], 1.0)
    prev = ""
    for key in keys:
        asked = v.confirm
        act = v.key(key)
        if act not in ("", "quit"):  # an unblock: only the IP that was asked about, only after y
            assert key in ("y", "Y") and act == asked and prev in ("u", "U")
        if act == "quit":
            assert key in ("q", "Q") and not asked
        assert 0 <= v.selected < max(1, n)
        prev = key


def test_status_and_explain_print_a_hostile_description_escaped(tmp_path: Path) -> None:
    """A DNS name quoted in a description (DGA samples) holds any bytes: `slipsq status` and `slipsq
    explain` print it escaped, one line per alert, so it cannot clear the admin's screen or add a
    line that looks like another alert."""
    from click.testing import CliRunner

    from slipsq.cli import main

    evil = "e.g. a\x1b[2J\rb.example\n  2026-12-05T00:00:00Z [block] fake 10.6.6.6: forged"
    with running_daemon(tmp_path) as d:
        d.alert("203.0.113.8", "dga", evil)
        d.judged_block("203.0.113.9", "dga", evil)
        status = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path)])
        explain = CliRunner().invoke(main, ["explain", "203.0.113.9", "--state-dir", str(tmp_path)])
    for r in (status, explain):
        assert r.exit_code == 0, r.output
        assert all(line.isprintable() for line in r.output.splitlines())
        assert "e.g. a\\x1b[2J\\rb.example\\n  2026-12-05" in r.output
        assert not any(line.lstrip().startswith("2026-12-05T00:00:00Z") for line in r.output.splitlines())


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.integers(0, 50))
def test_fit_keeps_the_longest_start_that_fits_the_columns(text: str, width: int) -> None:
    out = fit(text, width)
    assert text.startswith(out) and columns(out) <= width
    if out != text:  # the next character would not have fitted
        assert columns(out) + cells(text[len(out)]) > width


def test_columns_of_wide_and_combining_characters() -> None:
    assert columns("abc") == 3 and columns("表示") == 4 and columns("e\u0301") == 1 and columns("😀") == 2
    assert fit("表示する", 5) == "表示" and fit("ab", 0) == ""
