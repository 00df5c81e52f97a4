"""systemd/slipsq.service: systemd-analyze accepts it (skipped where systemd-analyze is absent), and
it says what the service needs: notify with a watchdog, restart on failure, reload by SIGHUP."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "slipsq.service"


def _keys() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def test_the_unit_asks_for_what_the_daemon_does() -> None:
    k = _keys()
    assert k["Type"] == ["notify"] and k["NotifyAccess"] == ["main"]
    assert k["WatchdogSec"] == ["30s"] and k["Restart"] == ["on-failure"]
    assert k["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert k["ExecStart"][0].startswith("/opt/slipsq/bin/slipsq --queue 0 --install-rules")
    assert {"StateDirectory", "LogsDirectory", "ConfigurationDirectory"} <= set(k)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    # verify checks that ExecStart's binary exists: point it at one that does
    unit = tmp_path / "slipsq.service"
    unit.write_text(UNIT.read_text().replace("/opt/slipsq/bin/slipsq", "/bin/true"))
    r = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                       text=True, timeout=60)
    if "--offline" in r.stderr:
        pytest.skip("systemd-analyze too old for --offline security")
    line = next(x for x in r.stdout.splitlines() if "Overall exposure level" in x)
    assert float(line.split(":")[1].split()[0]) <= 3.0, line  # 2.3 when written; 6.0 before hardening
