"""`slipsq replay --alert-format` end to end (a real process): each format on stdout alone, the
summary on stderr, the extra file in -o DIR, byte-for-byte determinism, and bad choices refused with
one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from syslog_rfc5424_parser import SyslogMessage

from slipsq.output.alerts import AlertWriter
from slipsq.records import Alert, printable
from tests.flowgen import hostile_alerts
from tests.test_replay_cli import DATA, one_clear_line, slipsq

SCAN = DATA / "portscan.pcap"


def test_eve_on_stdout_alone_and_the_summary_on_stderr() -> None:
    p = slipsq("replay", str(SCAN), "--alert-format", "eve", "--no-progress")
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.splitlines()]
    assert lines and all(x["event_type"] == "alert" for x in lines)  # `> eve.json` gives a clean file
    assert "summary:" in p.stderr and "blocked IPs: 192.168.1.99" in p.stderr
    assert any(x["alert"]["action"] == "blocked" and x["src_ip"] == "192.168.1.99" for x in lines)


def test_json_summary_goes_to_stderr_too_with_a_foreign_format() -> None:
    p = slipsq("replay", str(SCAN), "--alert-format", "idmefv2", "--json", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert all(json.loads(x)["Version"] == "2.D.V08" for x in p.stdout.splitlines())
    assert json.loads(p.stderr.strip().splitlines()[-1])["summary"]["blocks"] >= 1


def test_syslog_replays_are_identical_byte_for_byte() -> None:
    runs = [slipsq("replay", str(SCAN), "--alert-format", "syslog", "--no-progress") for _ in range(2)]
    assert runs[0].returncode == 0 and runs[0].stdout == runs[1].stdout  # no PID, no wall clock in them
    for line in runs[0].stdout.splitlines():
        m = SyslogMessage.parse(line)
        assert m.appname == "slipsq" and m.procid is None  # NILVALUE: a replay is no running process


def test_the_config_chooses_the_format_and_the_flag_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "slipsq.toml"
    cfg.write_text('[output]\nformat = "eve"\n')
    p = slipsq("replay", str(SCAN), "--config", str(cfg), "--no-progress")
    assert p.returncode == 0 and json.loads(p.stdout.splitlines()[0])["event_type"] == "alert"
    p = slipsq("replay", str(SCAN), "--config", str(cfg), "--alert-format", "text", "--no-progress")
    assert p.returncode == 0 and "[BLOCK]" in p.stdout and "summary:" in p.stdout


@pytest.mark.parametrize(("fmt", "name"), [("eve", "eve.json"), ("idmefv2", "alerts.idmefv2.jsonl"),
                                           ("syslog", "alerts.syslog")])
def test_out_dir_gets_the_format_beside_the_usual_files(tmp_path: Path, fmt: str, name: str) -> None:
    out = tmp_path / "res"
    p = slipsq("replay", str(SCAN), "--alert-format", fmt, "-o", str(out), "--no-progress")
    assert p.returncode == 0, p.stderr
    usual = len((out / "alerts.jsonl").read_text().splitlines())
    assert usual and len((out / name).read_text().splitlines()) == usual == len(p.stdout.splitlines())
    # a second run with another format into the same folder: refused, then forced, and no stale file left
    again = slipsq("replay", str(SCAN), "-o", str(out), "--no-progress")
    assert again.returncode != 0 and name in again.stderr
    forced = slipsq("replay", str(SCAN), "-o", str(out), "--force", "--no-progress")
    assert forced.returncode == 0 and not (out / name).exists()


def test_bad_choices_are_one_line() -> None:
    p = slipsq("replay", str(SCAN), "--alert-format", "cef")
    assert p.returncode == 2 and "Invalid value for '--alert-format'" in p.stderr and "Traceback" not in p.stderr


def test_bad_config_values_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "slipsq.toml"
    for text, words in (('[output]\nformat = "cef"\n', ("output.format", "eve")),
                        ('[output]\nsyslog = "localhost:514"\n', ("output.syslog", "udp://HOST")),
                        ('[output]\nsyslog_facility = "kernel9"\n', ("output.syslog_facility",)),
                        ('[hooks]\non_block = "notify \'unbalanced"\n', ("hooks.on_block", "balanced quotes"))):
        cfg.write_text(text)
        one_clear_line(slipsq("replay", str(SCAN), "--config", str(cfg)), 3, *words)


def test_inline_flag_is_refused_with_a_subcommand() -> None:
    p = slipsq("--alert-format", "eve", "replay", str(SCAN))
    assert p.returncode != 0 and "--alert-format runs slipsq inline" in p.stderr


def test_separate_runs_print_no_headings_into_a_foreign_format() -> None:
    p = slipsq("replay", str(SCAN), str(DATA / "bruteforce-ssh.pcap"), "--separate", "--alert-format", "eve",
               "--no-progress")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines and all(json.loads(x)["event_type"] == "alert" for x in lines)
    assert p.stderr.count("summary:") == 2


@given(hostile_alerts())
def test_a_hostile_description_is_one_printable_text_line(alert: Alert) -> None:
    """The text format (stdout, the journal's MESSAGE and its stderr fallback): a DNS name with a
    newline, ESC or NUL in a description stays inside its alert's one line, escaped, and cannot
    forge a second alert line or drive the admin's terminal."""
    out = io.StringIO()
    AlertWriter(out, as_json=False, fmt="text").alert(alert)
    text = out.getvalue()
    assert text.endswith("\n") and text.count("\n") == 1
    assert text[:-1].isprintable()
    assert printable(alert.evidence.description) in text


@settings(max_examples=300, deadline=None)
@given(hostile_alerts(), st.sampled_from(["text", "jsonl", "eve", "idmefv2", "syslog"]))
def test_every_format_writes_every_hostile_alert_to_a_utf8_stream(alert: Alert, fmt: str) -> None:
    """Nothing is lost: a description holding a lone surrogate (a JSON input's "\\udcff" escape)
    is still written, as one line, to a strict UTF-8 file (the journal, eve.json, a pipe), in
    every format; a UnicodeEncodeError would drop that alert from the log."""
    raw = io.BytesIO()
    stream = io.TextIOWrapper(raw, encoding="utf-8", errors="strict", newline="\n")
    AlertWriter(stream, as_json=fmt == "jsonl", fmt=fmt, hostname="gw", procid=1).alert(alert)
    stream.flush()
    line = raw.getvalue().decode("utf-8")
    assert line.endswith("\n") and line.count("\n") == 1
    if fmt in ("jsonl", "eve", "idmefv2"):  # and the same text comes back out of the JSON
        assert any(alert.evidence.description in s for s in _strings(json.loads(line)))


def _strings(obj: object) -> list[str]:
    """Every string value inside a parsed JSON document."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list):
        return [s for v in obj for s in _strings(v)]
    return []
