"""tools/golden.py, the byte-for-byte check of replay's output used to prove speed changes changed
nothing: it blanks only the run's timing figures, finds no difference between two runs of the same
tree, and finds one when a saved output differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools import golden

ROOT = Path(__file__).resolve().parent.parent


def test_normalise_blanks_only_the_timing_figures() -> None:
    line = ('{"summary": {"packets": 2545, "flows": 1510, "elapsed_s": 0.311, "packets_per_s": 8175, '
            '"flows_per_s": 4850, "first_ts": 1717243201.104916}}')
    assert golden.normalise(line) == ('{"summary": {"packets": 2545, "flows": 1510, "elapsed_s": 0, '
                                      '"packets_per_s": 0, "flows_per_s": 0, "first_ts": 1717243201.104916}}')


@pytest.mark.timeout(400)  # six CLI replays: slow on a busy machine
def test_save_then_check_is_identical_and_a_changed_output_is_found(tmp_path: Path) -> None:
    capture = ROOT / "tests" / "data" / "portscan.pcap"
    args = ["--only-extra", "--extra", str(capture), "--jobs", "1"]
    assert golden.main(["save", str(tmp_path), *args]) == 0
    saved = tmp_path / "outputs" / golden.key(capture)
    assert {p.name for p in saved.iterdir()} >= {"json.stdout", "tuples.stdout", "o.alerts.jsonl",
                                                   "o.flows.binetflow", "o.summary.json"}
    assert "vertical port scan" in (saved / "json.stdout").read_text()
    assert golden.main(["check", str(tmp_path), *args]) == 0
    alerts = saved / "o.alerts.jsonl"
    alerts.write_text(alerts.read_text().replace("vertical", "horizontal", 1))
    assert golden.main(["check", str(tmp_path), *args]) == 1
