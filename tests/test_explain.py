"""`slipsq explain IP`: the deciding window's evidence, from a replay's output and from the block store."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from slipsq.cli import main
from slipsq.records import CRITICAL, Alert, Decision, Evidence, Finding
from slipsq.verdict.store import BlockStore
from tools import gen_corpus
from tools.gencapture import write_capture


def test_explain_a_replayed_block(tmp_path: Path) -> None:
    cap, out = tmp_path / "b.pcap", tmp_path / "out"
    write_capture(gen_corpus.BY_NAME["beacon-10s-1%"].build(random.Random(1)), cap)
    r = CliRunner().invoke(main, ["replay", str(cap), "-o", str(out)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, ["explain", gen_corpus.CNC, "--from", str(out)])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].startswith(f"{gen_corpus.CNC} blocked at ")
    body = [ln for ln in lines[2:] if not ln.strip().startswith("total")]
    assert any(ln.split()[0] == "beacon" for ln in body)
    # the sum of the listed findings is the score the judge compared
    total = float(lines[-1].split()[-1])
    block = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    block = [a for a in block if a["action"] == "block"]
    assert abs(total - block[0]["score"]) < 0.01
    r = CliRunner().invoke(main, ["explain", gen_corpus.VICTIM, "--from", str(out)])
    assert r.exit_code == 1 and "was not blocked" in r.output


def test_explain_from_the_store_with_no_daemon(tmp_path: Path) -> None:
    ev = Evidence(1000.0, "beacon", "203.0.113.5", "192.168.1.5", "203.0.113.5", 443, "tcp", "C&C beacon ...",
                  CRITICAL, 0.9, key="beacon:k")
    window = (Finding("beacon", "beacon:k", 0.9, 2, 900.0, 1000.0, 4, True, "C&C beacon ..."),
              Finding("stratosphere", "m", 0.4, 1, 950.0, 950.0, 1, True, "behaves like X"))
    alert = Alert(ev, Decision("block", "203.0.113.5", 3600.0, 2.2, "score 2.20 >= threshold 1", 1.0, window))
    store = BlockStore(tmp_path)
    store.add("203.0.113.5", since=1000.0, expires=4600.0, reason="r", detector="beacon", evidence=alert.to_dict())
    store.close()
    r = CliRunner().invoke(main, ["explain", "203.0.113.5", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "beacon        0.90 x2, 4 report(s) over 100s" in r.output
    assert "stratosphere  0.40 x1" in r.output and r.output.rstrip().endswith("total 2.20")
    r = CliRunner().invoke(main, ["explain", "not-an-ip", "--state-dir", str(tmp_path)])
    assert r.exit_code == 2 and "not an IP address" in r.output and "Traceback" not in r.output


BEACON = Path(__file__).parent / "data" / "beacon-https.pcap"  # 203.0.113.66 is blocked there


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("beacon") / "out"
    r = CliRunner().invoke(main, ["replay", str(BEACON), "-o", str(out)])
    assert r.exit_code == 0, r.output
    return out


def _damaged_copy(src: Path, dst: Path, change: Callable[[dict[str, Any]], None]) -> int:
    """`src`'s alerts.jsonl into `dst`, `change` applied to its last line (the block): that line's number."""
    lines = [json.loads(x) for x in (src / "alerts.jsonl").read_text().splitlines()]
    assert lines[-1]["action"] == "block" and lines[-1]["blocked_ip"] == "203.0.113.66"
    change(lines[-1])
    dst.mkdir()
    (dst / "alerts.jsonl").write_text("".join(json.dumps(a) + "\n" for a in lines))
    return len(lines)


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(alert: dict[str, Any]) -> None:
        *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        target: Any = alert
        for k in keys:
            target = target[k]
        target[last] = value
    return change


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("window.0.score", "hi", "window[0].score is not a number"),  # was: internal error: ValueError, exit 70
    ("window.0.weight", "x2", "window[0].weight is not a number"),
    ("window.0.weight", float("inf"), "window[0].weight is not a number"),  # int(inf): OverflowError
    ("window.0.first", 1e300, "window[0].first is not a time"),  # iso(1e300): OverflowError
    ("window.0", "beacon", "window[0] is not an object"),
    ("window", {"score": 1}, "window is not a list"),
    ("block_seconds", "4h", "block_seconds is not a number"),
])
def test_a_damaged_block_alert_is_refused_by_file_and_line(replayed: Path, tmp_path: Path, field: str, value: Any,
                                                          problem: str) -> None:
    n = _damaged_copy(replayed, tmp_path / "d", _set(field, value))
    for args in ([], ["--json"]):
        r = CliRunner().invoke(main, ["explain", "203.0.113.66", "--from", str(tmp_path / "d"), *args])
        assert r.exit_code == 2, r.output
        assert r.output == f"slipsq: {tmp_path / 'd' / 'alerts.jsonl'}:{n}: the block alert of 203.0.113.66 " \
                           f"is damaged: {problem}\n"


def test_text_fields_of_any_type_are_shown_not_refused(replayed: Path, tmp_path: Path) -> None:
    def change(alert: dict[str, Any]) -> None:
        alert["reason"], alert["window"][0]["detector"] = ["r"], None
        alert["window"][0]["description"] = "evil\x1b[2J"

    _damaged_copy(replayed, tmp_path / "d", change)
    r = CliRunner().invoke(main, ["explain", "203.0.113.66", "--from", str(tmp_path / "d")])
    assert r.exit_code == 0, r.output
    assert ": ['r']" in r.output and "  None          0.90 x2" in r.output and "evil\\x1b[2J" in r.output


def test_damaged_stored_evidence_is_one_line(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    store.add("203.0.113.5", since=1000.0, expires=4600.0, reason="r", detector="beacon",
              evidence={"action": "block", "window": [{"detector": "beacon", "score": "hi", "weight": 2}]})
    store.close()
    r = CliRunner().invoke(main, ["explain", "203.0.113.5", "--state-dir", str(tmp_path)])
    assert r.exit_code != 0 and r.exit_code != 70, r.output
    assert r.output == "slipsq: the stored evidence of 203.0.113.5 is damaged: window[0].score is not a number\n"


def test_an_ipv4_mapped_address_is_the_ipv4_one() -> None:
    """As `block` and `unblock` take it (review: `explain ::ffff:203.0.113.66` found nothing)."""
    from slipsq.explain import normalize_ip

    assert normalize_ip("::ffff:203.0.113.66") == normalize_ip(" 203.0.113.66 ") == "203.0.113.66"
    assert normalize_ip("2001:DB8::1") == "2001:db8::1"
