"""slipsq inline on the lab gateway with the outputs others read and the hooks: a manual block and a
judged block each run `hooks.on_block` with the block as JSON on stdin, and the judged block's
alert lands in an EVE file (output.format_log) as Suricata would write it from NFQUEUE.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CNC, LEGIT, Lab

pytestmark = pytest.mark.kernel


def _hook(tmp_path: Path) -> tuple[Path, Path]:
    """A hook that appends its stdin (one JSON line) and its environment's event to a file."""
    out = tmp_path / "hook.jsonl"
    script = tmp_path / "on-block"
    script.write_text(f'#!/bin/sh\nline=$(cat)\necho "$line" >> {out}\necho "env $SLIPSQ_EVENT $SLIPSQ_IP" >> {out}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script, out


def _records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.startswith("{")]


def test_blocks_run_the_hook_and_alerts_go_to_an_eve_file(lab: Lab, tmp_path: Path) -> None:
    lab.serve()
    script, out = _hook(tmp_path)
    eve = tmp_path / "logs" / "eve.json"
    cfg = {"allow.ips": [f"{LEGIT}/32"], "judge.block_duration": 600.0,
           "output.format": "eve", "output.format_log": str(eve),
           "hooks.on_block": str(script), "hooks.timeout": 5.0,
           # the beacon of tests/kernel/test_inline.py, judged within seconds
           "beacon.local_may_block": True, "beacon.min_connections": 4, "beacon.block_connections": 6,
           "beacon.min_interval": 0.5, "flowtable.tcp_closed_linger": 0.5, "judge.persist_after": 8.0}
    s = Slipsq(lab, tmp_path / "state", "nft", config=cfg)
    s.start()

    # a manual block: the hook gets it, with who asked
    s.cli("block", "192.0.2.77", "--for", "10m", "--reason", "lab")
    assert wait_for(lambda: len(_records(out)) >= 1, timeout=15) is not None, s.status()
    [manual] = _records(out)
    assert manual["event"] == "block" and manual["ip"] == "192.0.2.77" and manual["reason"] == "lab"
    assert str(manual["by"]).startswith("admin:") and manual["alert"] is None
    # (the hook writes its env line after the JSON one)
    assert wait_for(lambda: "env block 192.0.2.77" in out.read_text(), timeout=5) is not None, out.read_text()

    # a judged block: the hook gets it with its alert, and the alert is an EVE line in the file
    beacon = lab.probe(lab.ns["a"], "beacon", f"{CNC}:8080", "1.0", "40")
    try:
        took = wait_for(lambda: any(r["ip"] == CNC for r in _records(out)), timeout=40, step=0.5)
        assert took is not None, f"no hook run for a judged block within 40 s; status {s.status()}"
    finally:
        beacon.kill()
        beacon.communicate(timeout=10)
    judged = next(r for r in _records(out) if r["ip"] == CNC)
    assert judged["by"] == "judge" and judged["detector"] == "beacon"
    assert isinstance(judged["alert"], dict) and judged["alert"]["blocked_ip"] == CNC
    lines = [json.loads(x) for x in eve.read_text().splitlines()]
    blocked = [x for x in lines if x["alert"]["action"] == "blocked"]
    assert blocked and all(x["event_type"] == "alert" and x["in_iface"] == "NFQ#5" for x in lines)
    assert blocked[0]["alert"]["signature"].startswith("SLIPSQ beacon: ") and blocked[0]["dest_ip"] == CNC
    # (a run is counted once the hook has exited and been reaped, after it wrote its record)
    assert wait_for(lambda: s.status()["hooks"]["on_block"]["ok"] == 2, timeout=10) is not None, s.status()
    st = s.status()["hooks"]
    assert st["on_block"]["ok"] == 2 and st["on_block"]["failed"] == 0
    assert "hook on_block: 2 runs (2 ok, 0 failed, 0 timed out), 0 rate-limited" in s.cli("status").stdout
    code, err = s.stop()
    assert code == 0, err
