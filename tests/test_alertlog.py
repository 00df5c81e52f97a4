"""slipsq.output.alertlog: alerts.jsonl rotated by size, a bounded number of files, failures reported."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest

from slipsq.output.alertlog import FILE_NAME, RotatingAlertLog, rotate
from slipsq.records import Alert, Decision, Evidence


def _alert(i: int) -> Alert:
    ev = Evidence(1_700_000_000.0 + i, "portscan", "203.0.113.7", "203.0.113.7", "192.168.1.2", i, "tcp",
                  f"scan {i}", 0.5, 0.9)
    return Alert(ev, Decision("alert", "", 0.0, 0.45, "below threshold"))


def _lines(p: Path) -> list[int]:
    return [json.loads(line)["dst_port"] for line in p.read_text().splitlines()]


def test_alerts_are_json_lines_in_order(tmp_path: Path) -> None:
    log = RotatingAlertLog(tmp_path / "logs")
    for i in range(3):
        log.alert(_alert(i))
    path = tmp_path / "logs" / FILE_NAME
    assert _lines(path) == [0, 1, 2]  # flushed: readable while the log is open
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    log.close()


def test_rotation_keeps_at_most_keep_files_each_under_max_bytes(tmp_path: Path) -> None:
    line = len(_alert(10).to_json()) + 1
    log = RotatingAlertLog(tmp_path, max_bytes=3 * line, keep=2)
    for i in range(10, 30):
        log.alert(_alert(i))
    log.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [FILE_NAME, f"{FILE_NAME}.1", f"{FILE_NAME}.2"]
    for p in tmp_path.iterdir():
        assert p.stat().st_size <= 3 * line
    # newest in alerts.jsonl, then .1, then .2; the oldest alerts are gone
    assert _lines(tmp_path / FILE_NAME) == [28, 29]
    assert _lines(tmp_path / f"{FILE_NAME}.1") == [25, 26, 27]
    assert _lines(tmp_path / f"{FILE_NAME}.2") == [22, 23, 24]


def test_reopening_continues_the_size_count(tmp_path: Path) -> None:
    line = len(_alert(10).to_json()) + 1
    a = RotatingAlertLog(tmp_path, max_bytes=2 * line, keep=1)
    a.alert(_alert(10))
    a.close()
    b = RotatingAlertLog(tmp_path, max_bytes=2 * line, keep=1)  # a restart of the daemon
    b.alert(_alert(11))
    b.alert(_alert(12))
    b.close()
    assert _lines(tmp_path / f"{FILE_NAME}.1") == [10, 11]
    assert _lines(tmp_path / FILE_NAME) == [12]


def test_keep_zero_truncates(tmp_path: Path) -> None:
    line = len(_alert(10).to_json()) + 1
    log = RotatingAlertLog(tmp_path, max_bytes=line, keep=0)
    for i in range(10, 13):
        log.alert(_alert(i))
    log.close()
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]
    assert _lines(tmp_path / FILE_NAME) == [12]


def test_rotate_with_gaps(tmp_path: Path) -> None:
    p = tmp_path / FILE_NAME
    p.write_text("new\n")
    (tmp_path / f"{FILE_NAME}.2").write_text("old\n")
    rotate(p, 3)
    assert not p.exists()
    assert (tmp_path / f"{FILE_NAME}.1").read_text() == "new\n"
    assert (tmp_path / f"{FILE_NAME}.3").read_text() == "old\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_failing_write_is_reported_once_and_never_raised(tmp_path: Path) -> None:
    tmp_path.chmod(0o500)
    err = io.StringIO()
    try:
        log = RotatingAlertLog(tmp_path / "sub", errors=err)
        log.alert(_alert(1))
        log.alert(_alert(2))
    finally:
        tmp_path.chmod(0o700)
    assert log.failed == 2
    assert err.getvalue().count("slipsq: cannot write") == 1


def test_a_failing_write_as_root(tmp_path: Path) -> None:
    (tmp_path / "sub").write_text("a file where the directory should be")
    err = io.StringIO()
    log = RotatingAlertLog(tmp_path / "sub", errors=err)
    log.alert(_alert(1))
    log.alert(_alert(2))
    assert log.failed == 2 and err.getvalue().count("slipsq: cannot write") == 1


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        RotatingAlertLog("/tmp", max_bytes=0)
