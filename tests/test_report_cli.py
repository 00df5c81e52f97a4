"""`slipsq replay -o DIR [--report]`, `slipsq timeline IP` and `slipsq report` as a user meets them:
from a replay folder and from a gateway's state directory (activity log + block store)."""

from __future__ import annotations

import json
import os
import random
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from slipsq.cli import main
from slipsq.output.activity import RotatingActivityLog
from slipsq.verdict.store import BlockStore
from tools import gen_corpus
from tools.gencapture import write_capture

CNC, VICTIM = gen_corpus.CNC, gen_corpus.VICTIM


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("replay")
    write_capture(gen_corpus.BY_NAME["beacon-10s-1%"].build(random.Random(1)), d / "b.pcap")
    r = CliRunner().invoke(main, ["replay", str(d / "b.pcap"), "-o", str(d / "out"), "--report"])
    assert r.exit_code == 0, r.output
    return d / "out"


def test_replay_writes_a_timeline_per_host_with_evidence_and_the_report(out: Path) -> None:
    names = sorted(p.name for p in (out / "timeline").iterdir())
    assert f"{CNC}.txt" in names and f"{VICTIM}.txt" in names
    assert "192.168.1.11.txt" not in names  # the phone browsing beside it has no evidence
    text = (out / "timeline" / f"{CNC}.txt").read_text()
    assert text.startswith(f"timeline of {CNC}: ") and "BLOCKED" in text
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and CNC in page and "<svg" in page


def test_timeline_from_a_replay_folder_is_the_file(out: Path) -> None:
    r = CliRunner().invoke(main, ["timeline", VICTIM, "--from", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output == (out / "timeline" / f"{VICTIM}.txt").read_text()
    # any host of the folder has a story, evidence or not
    r = CliRunner().invoke(main, ["timeline", "192.168.1.11", "--from", str(out)])
    assert r.exit_code == 0 and "asked " in r.output


def test_since_on_a_replay_folder_counts_back_from_its_last_traffic(out: Path) -> None:
    whole = CliRunner().invoke(main, ["timeline", VICTIM, "--from", str(out)]).output
    # the traffic runs 12:00:00-12:06:27 (the beacon blocked at 12:02:00, the laptop's NTP goes on)
    last = CliRunner().invoke(main, ["timeline", VICTIM, "--from", str(out), "--since", "300s"]).output
    assert "asked cdn-edge.example.net" in whole and "asked cdn-edge.example.net" not in last  # at 12:00:09
    assert "[BLOCK] " in last and "12:02:00" in last
    assert "nothing about" in CliRunner().invoke(main, ["timeline", "192.168.1.11", "--from", str(out),
                                                         "--since", "1s"]).output


def test_report_from_a_replay_folder(out: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--from", str(out), "-o", str(page)])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{page}: 2 host(s) with evidence")
    assert CNC in page.read_text()


@pytest.mark.parametrize(("args", "code", "message"), [
    (["timeline", "not-an-ip", "--from", "."], 2, "'not-an-ip' is not an IP address"),
    (["timeline", "10.9.9.9", "--from", "OUT"], 1, "nothing about 10.9.9.9 in "),
    (["timeline", "10.9.9.9", "--from", "/nonexistent"], 2, "/nonexistent: no activity.jsonl there"),
    (["report", "--from", "OUT", "--since", "soon"], 2, "--since: "),
    (["report", "--from", "OUT", "-o", "/nonexistent/x.html"], 2, "cannot write /nonexistent/x.html"),
    (["replay", "x.pcap", "--report"], 2, "--report needs -o DIR"),
])
def test_bad_input_is_one_line_and_an_exit_code(out: Path, args: list[str], code: int, message: str) -> None:
    r = CliRunner().invoke(main, [str(out) if a == "OUT" else a for a in args])
    assert r.exit_code == code, r.output
    assert r.output.startswith("slipsq: ") and message in r.output and "Traceback" not in r.output


def test_a_second_replay_into_the_folder_is_refused_then_forced(out: Path, tmp_path: Path) -> None:
    d = tmp_path / "o"
    d.mkdir()
    (d / "timeline").mkdir()
    (d / "timeline" / "10.0.0.1.txt").write_text("stale")
    cap = out.parent / "b.pcap"
    r = CliRunner().invoke(main, ["replay", str(cap), "-o", str(d)])
    assert r.exit_code == 2 and "already holds results (timeline)" in r.output
    r = CliRunner().invoke(main, ["replay", str(cap), "-o", str(d), "--force"])
    assert r.exit_code == 0, r.output
    assert not (d / "timeline" / "10.0.0.1.txt").exists() and (d / "timeline" / f"{CNC}.txt").exists()
    assert not (d / "report.html").exists()


def test_the_gateway_source_is_the_activity_log_and_the_store_audit(out: Path, tmp_path: Path) -> None:
    """What the daemon's worker writes (the same records, through the rotating log) and the store's
    audit trail, which also has what an admin did while the daemon was down."""
    log = RotatingActivityLog(tmp_path, max_bytes=50_000_000)
    for line in (out / "activity.jsonl").read_text().splitlines():
        log.write_line(line)
    log.close()
    store = BlockStore(tmp_path)
    store.add(CNC, since=gen_corpus.T0 + 500, expires=gen_corpus.T0 + 4100, reason="beacon", detector="beacon",
              evidence={})
    store.remove(CNC, ts=gen_corpus.T0 + 900, who="admin:alice", reason="false positive?")
    store.close()
    r = CliRunner().invoke(main, ["--state-dir", str(tmp_path), "timeline", CNC, "--since", "100000d"])
    assert r.exit_code == 0, r.output
    assert "UNBLOCKED 203.0.113.66 by admin:alice: false positive?" in r.output
    assert r.output.count("BLOCKED  ") == 1  # the audit's block, not the log's copy as well
    page = tmp_path / "gw.html"
    r = CliRunner().invoke(main, ["--state-dir", str(tmp_path), "report", "-o", str(page), "--since", "100000d"])
    assert r.exit_code == 0 and "gateway state" in page.read_text()
    # the default is the last 24 h: this traffic is older, so nobody is in it
    r = CliRunner().invoke(main, ["--state-dir", str(tmp_path), "report", "-o", str(page)])
    assert r.exit_code == 0 and "0 host(s)" in r.output
    r = CliRunner().invoke(main, ["--state-dir", str(tmp_path / "none"), "timeline", CNC])
    assert r.exit_code == 2 and "no activity.jsonl there (is slipsq running inline" in r.output


def test_activity_records_are_json_objects_with_a_kind(out: Path) -> None:
    kinds = {json.loads(line)["k"] for line in (out / "activity.jsonl").read_text().splitlines()}
    assert kinds == {"flow", "dns", "alert", "block"}


def test_a_hostile_dns_name_from_the_wire_is_text_in_the_report(out: Path, tmp_path: Path) -> None:
    """A DNS answer whose name is markup (a label may hold any byte) reaches the page as text: the
    capture goes through the real decoder, the activity log and the template."""
    from html.parser import HTMLParser

    from tests.helpers import dns_query, dns_response, eth, udp, write_pcap

    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)>.evil.example"
    t = gen_corpus.T0 - 60  # before the beacon capture: one timeline, no overlap
    write_pcap(tmp_path / "h.pcap", [
        (t, eth(udp(VICTIM, 40000, "192.168.1.1", 53, dns_query(hostile)))),
        (t + 0.01, eth(udp("192.168.1.1", 53, VICTIM, 40000, dns_response(hostile, ["198.51.100.9"])))),
    ])
    r = CliRunner().invoke(main, ["replay", str(tmp_path / "h.pcap"), str(out.parent / "b.pcap"),
                                  "-o", str(tmp_path / "o"), "--report"])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "o" / "report.html").read_text()

    tags: set[str] = set()

    class Tags(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.add(tag)

    Tags().feed(page)
    assert "script" not in tags and "img" not in tags
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;.evil.example" in page
    timeline = (tmp_path / "o" / "timeline" / f"{VICTIM}.txt").read_text()
    assert f"asked {hostile} -> 198.51.100.9" in timeline


def test_hostile_activity_lines_are_left_out_never_an_internal_error(tmp_path: Path) -> None:
    """Lines a damaged or hand-edited log may hold (each of them ended `slipsq report` and `slipsq
    timeline` in "internal error: OverflowError ..." before): the page and the story are written
    from the rest, and the lines without a usable time are counted as skipped."""
    host = "10.0.0.1"
    lines = [{"k": "alert", "ts": 5.0, "offender": host, "src_ip": host, "score": 1.5, "description": "kept"},
             {"k": "dns", "ts": float("inf"), "host": host, "name": "x", "rcode": 0},
             {"k": "dns", "ts": 1e300, "host": host, "name": "x", "rcode": 0},
             {"k": "flow", "ts": 6.0, "src": host, "dst": "10.0.0.2", "dport": 80, "proto": "tcp", "sbytes": "x",
              "dbytes": 0},
             {"k": "alert", "ts": 7.0, "offender": host, "score": "high"},
             {"k": "block", "ts": 8.0, "ip": host, "duration": [1]}]
    (tmp_path / "activity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    damage = (f"slipsq: {tmp_path / 'activity.jsonl'}: damaged activity log: 2 of 6 lines unreadable (not a JSON "
              "object with a time), skipped; the rest was read\n")
    r = CliRunner().invoke(main, ["report", "--from", str(tmp_path), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 2 and r.stderr == damage, r.output  # what was read is shown, then the damage: as replay
    assert "1 host(s) with evidence" in r.stdout and "kept" in (tmp_path / "r.html").read_text()
    r = CliRunner().invoke(main, ["timeline", host, "--from", str(tmp_path)])
    assert r.exit_code == 2 and r.stderr == damage, r.output
    assert "kept" in r.stdout and "2 unreadable log lines skipped" in r.stdout and "4-tuples, 0 flows" in r.stdout


def test_a_report_holds_no_lone_surrogate_and_no_control_character(tmp_path: Path) -> None:
    """An address, an answer or a by-line that is no text (a lone surrogate, which a damaged log's
    JSON escape makes) and a folder named in bytes that are no UTF-8 (Python hands them over as
    surrogates) ended `slipsq report` in an internal error, its temporary file left behind."""
    host = "10.0.0.1"
    folder = tmp_path / "bad-\udcff-name"  # the bytes b"bad-\xff-name" on disk
    folder.mkdir()
    lines = [{"k": "alert", "ts": 5.0, "offender": host, "src_ip": host, "score": 1.5, "description": "kept"},
             {"k": "flow", "ts": 6.0, "end": 7.0, "src": host, "dst": "\ud800\x1b[2J", "dport": 80, "proto": "tcp",
              "sbytes": 1, "dbytes": 1},
             {"k": "dns", "ts": 6.0, "host": host, "name": "n", "rcode": 0, "answers": ["\ud800\x1b"]},
             {"k": "block", "ts": 8.0, "ip": host, "duration": 60, "reason": "r", "by": "\ud800\x1b"}]
    (folder / "activity.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    r = CliRunner().invoke(main, ["report", "--from", str(folder), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    page = (tmp_path / "r.html").read_text()
    assert "kept" in page and "\\ud800\\x1b[2J" in page and "\x1b" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([folder.name, "r.html"])


# --- damaged activity logs: told, never a quiet network -------------------------------------------

def _damaged_folder(out: Path, dst: Path, damage: Callable[[int, dict[str, Any]], None]) -> int:
    """A copy of the replay folder's activity log, `damage(line number, record)` applied to each record:
    its number of lines."""
    dst.mkdir()
    recs = [json.loads(line) for line in (out / "activity.jsonl").read_text().splitlines()]
    for n, rec in enumerate(recs, 1):
        damage(n, rec)
    (dst / "activity.jsonl").write_text("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in recs))
    return len(recs)


def test_a_log_whose_every_time_is_damaged_is_no_quiet_network(out: Path, tmp_path: Path) -> None:
    """Every "ts" set to "x": the report said "0 host(s) with evidence", exit 0, and the timeline
    "nothing about" the host, as of a network where nothing happened."""
    n = _damaged_folder(out, tmp_path / "d", lambda _, rec: rec.update(ts="x"))
    log = tmp_path / "d" / "activity.jsonl"
    damage = (f"slipsq: {log}: damaged activity log: all {n} lines unreadable (not a JSON object with a time), "
              "skipped; nothing could be read from it\n")
    page = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--from", str(tmp_path / "d"), "-o", str(page)])
    assert r.exit_code == 2, r.output
    assert r.stdout.startswith(f"{page}: 0 host(s) with evidence") and r.stderr == damage
    assert (f'<p class="damage">Damaged activity log: {n} of {n} line(s) of {log} could not be read'
            in page.read_text())
    r = CliRunner().invoke(main, ["timeline", VICTIM, "--from", str(tmp_path / "d")])
    assert r.exit_code == 2 and r.stdout == "", r.output
    assert r.stderr == f"slipsq: nothing about {VICTIM} in what could be read of {tmp_path / 'd'}\n" + damage


def test_a_few_damaged_lines_are_counted_over_the_whole_log(out: Path, tmp_path: Path) -> None:
    """Three flow lines of a host with no evidence: no pass of the report parses them (its prefilters
    skip other kinds and other hosts unparsed), yet they are counted, on the page too."""
    def damage(_: int, rec: dict[str, Any]) -> None:
        if rec["k"] == "flow" and rec["src"] == "192.168.1.11" and rec["sport"] % 3 == 0:
            rec["ts"] = float("inf")
    _damaged_folder(out, tmp_path / "d", damage)
    bad = sum(line.count("Infinity") for line in (tmp_path / "d" / "activity.jsonl").read_text().splitlines())
    assert bad >= 1
    page = tmp_path / "r.html"
    r = CliRunner().invoke(main, ["report", "--from", str(tmp_path / "d"), "-o", str(page)])
    assert r.exit_code == 2 and r.stdout.startswith(f"{page}: 2 host(s) with evidence"), r.output
    assert f" {bad} of " in r.stderr and r.stderr.count("\n") == 1
    assert f"{bad} of " in page.read_text() and CNC in page.read_text()
    r = CliRunner().invoke(main, ["timeline", "192.168.1.11", "--from", str(tmp_path / "d")])
    assert r.exit_code == 2 and f"{bad} unreadable log lines skipped" in r.stdout and f" {bad} of " in r.stderr


def test_a_gateway_log_being_written_is_not_damaged_but_its_rotated_files_may_be(out: Path, tmp_path: Path) -> None:
    """The last line of the live activity.jsonl, its newline not written yet, is a record on its way;
    a damaged line in a rotated file is named by its file."""
    lines = (out / "activity.jsonl").read_text().splitlines(keepends=True)
    (tmp_path / "activity.jsonl.1").write_text("".join(lines[:10]))
    (tmp_path / "activity.jsonl").write_text("".join(lines[10:]) + lines[0][:30])
    page = tmp_path / "gw.html"
    args = ["--state-dir", str(tmp_path), "report", "-o", str(page), "--since", "100000d"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and r.stderr == "", r.output
    (tmp_path / "activity.jsonl.1").write_text("".join(lines[:9]) + "{not json}\n")
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith(f"slipsq: {tmp_path / 'activity.jsonl.1'}: damaged activity log: 1 of 10 lines ")
    assert r.stderr.count("\n") == 1


# --- where -o writes ------------------------------------------------------------------------------

def _report(out: Path, target: str) -> Any:
    return CliRunner().invoke(main, ["report", "--from", str(out), "-o", target])


@pytest.mark.parametrize("kind", ["character device", "named pipe", "folder"])
def test_report_refuses_to_replace_what_is_not_a_regular_file(out: Path, tmp_path: Path, kind: str) -> None:
    """It wrote a temporary file and renamed it over PATH, whatever PATH was: a device node (even
    /dev/null, for root) or a pipe became a regular file holding the page."""
    node = tmp_path / "node"
    if kind == "character device":
        try:
            os.mknod(node, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
        except PermissionError:
            pytest.skip("making a device node needs root (CAP_MKNOD)")
    elif kind == "named pipe":
        os.mkfifo(node)
    else:
        node.mkdir()
    before = node.lstat()
    for target in (node, tmp_path / "link"):
        if target.name == "link":
            target.symlink_to(node)
        r = _report(out, str(target))
        assert r.exit_code == 2 and r.stdout == "", r.output
        via = f" (a link to {node})" if target.name == "link" else ""
        assert r.stderr == (f"slipsq: -o {target}{via} is a {kind}: the report is written to a regular file, "
                            "new or replaced whole, or with -o - to standard output; nothing was written\n")
        assert stat.S_IFMT(node.lstat().st_mode) == stat.S_IFMT(before.st_mode) and node.lstat().st_ino == before.st_ino
        assert (tmp_path / "link").is_symlink() or target.name != "link"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "node"]  # no temporary file left


def test_report_through_a_symlink_writes_its_target(out: Path, tmp_path: Path) -> None:
    """The link stays a link; its target (in another folder) is replaced whole, its mode kept, and
    the temporary file was beside the target; a link to a file not there yet makes it."""
    (tmp_path / "pages").mkdir()
    (tmp_path / "links").mkdir()
    target = tmp_path / "pages" / "today.html"
    target.write_text("old")
    target.chmod(0o640)
    link = tmp_path / "links" / "report.html"
    link.symlink_to(target)
    r = _report(out, str(link))
    assert r.exit_code == 0 and r.stdout.startswith(f"{link}: 2 host(s) with evidence"), r.output
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("<!DOCTYPE html>") and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in (tmp_path / "pages").iterdir()] == ["today.html"]
    assert [p.name for p in (tmp_path / "links").iterdir()] == ["report.html"]
    dangling = tmp_path / "links" / "new.html"
    dangling.symlink_to(tmp_path / "pages" / "new.html")
    r = _report(out, str(dangling))
    assert r.exit_code == 0, r.output
    assert dangling.is_symlink() and (tmp_path / "pages" / "new.html").read_text().startswith("<!DOCTYPE html>")


def test_report_to_a_regular_file_is_still_atomic(out: Path, tmp_path: Path) -> None:
    page = tmp_path / "r.html"
    page.write_text("old")
    ino = page.stat().st_ino
    r = _report(out, str(page))
    assert r.exit_code == 0, r.output
    assert page.read_text().startswith("<!DOCTYPE html>") and page.stat().st_ino != ino  # renamed over it
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]


def test_report_dash_is_standard_output(out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-o - made a file named "-"; now the page is standard output, the summary line on stderr."""
    monkeypatch.chdir(tmp_path)
    r = _report(out, "-")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("<!DOCTYPE html>") and r.stdout.rstrip().endswith("</html>") and CNC in r.stdout
    assert r.stderr.startswith("<stdout>: 2 host(s) with evidence")
    assert list(tmp_path.iterdir()) == []


def test_report_help_says_what_o_takes() -> None:
    r = CliRunner().invoke(main, ["report", "--help"])
    text = " ".join(r.output.split())
    assert r.exit_code == 0
    assert "-o, --out FILE" in text and "- for standard output" in text and "symlink's target" in text
    assert "(a device, a pipe, a folder) is refused" in text


def test_a_line_nested_past_the_parsers_depth_is_one_unreadable_line(out: Path, tmp_path: Path) -> None:
    """"[[[[..." ended report and timeline (and --since on a folder) in "internal error: RecursionError"."""
    (tmp_path / "d").mkdir()
    log = tmp_path / "d" / "activity.jsonl"
    log.write_text((out / "activity.jsonl").read_text() + "[" * 100_000 + "\n")
    page = str(tmp_path / "r.html")
    for args in (["report", "-o", page], ["report", "-o", page, "--since", "1h"],
                 ["timeline", VICTIM], ["timeline", VICTIM, "--since", "1h"]):
        r = CliRunner().invoke(main, [*args, "--from", str(tmp_path / "d")])
        assert r.exit_code == 2, r.output
        assert r.stderr.startswith(f"slipsq: {log}: damaged activity log: 1 of ") and r.stderr.count("\n") == 1
