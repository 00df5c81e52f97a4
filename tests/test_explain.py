"""`slipsq explain IP`: the deciding window's evidence, from a replay's output and from the block store."""

from __future__ import annotations

import json
import random
from pathlib import Path

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
