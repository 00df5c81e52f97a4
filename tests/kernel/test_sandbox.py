"""The unit's hardening does not break slipsq: the daemon runs on a real queue in the lab under what
tests/kernel/sandbox.py rebuilds of systemd/slipsq.service (capability bounding set, no new
privileges, MemoryDenyWriteExecute, the SystemCallFilter with KILL on anything else), on both
iptables backends (legacy drives python-iptables through ctypes: the W^X check matters there), and
blocks, unblocks, reloads and stops cleanly. (The mount-namespace options are not rebuilt; the dev
machine's PID 1 is not systemd.)"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CNC, LEGIT, ROOT, Lab

pytestmark = pytest.mark.kernel

SANDBOX = str(Path(__file__).with_name("sandbox.py"))
UNIT = str(ROOT / "systemd" / "slipsq.service")


def _have_seccomp() -> bool:
    r = subprocess.run(["/usr/bin/python3", "-c", "import seccomp"], capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _have_seccomp(), reason="needs python3-seccomp for /usr/bin/python3")
def test_the_daemon_runs_under_the_units_sandbox(lab: Lab, tmp_path: Path, backend: str) -> None:
    plain = lab.popen

    def sandboxed(ns: str, *cmd: str, env: dict[str, str] | None = None, stdin: bool = False) -> Any:
        if cmd[:3] == (sys.executable, "-m", "slipsq"):
            cmd = ("/usr/bin/python3", SANDBOX, UNIT, "--", *cmd)
        return plain(ns, *cmd, env=env, stdin=stdin)

    lab.popen = sandboxed  # type: ignore[method-assign]
    lab.serve()
    s = Slipsq(lab, tmp_path / "state", backend, config={"allow.ips": [f"{LEGIT}/32"]})
    proc = s.start()
    lines = lab.sh(lab.gw, "cat", f"/proc/{proc.pid}/status").stdout.splitlines()
    status = dict(line.split(":", 1) for line in lines)
    assert status["CapBnd"].strip() == "0000000000003002"  # NET_ADMIN, NET_RAW, DAC_OVERRIDE
    assert status["Seccomp"].strip() == "2" and status["NoNewPrivs"].strip() == "1"
    assert "NFQUEUE" in s.iptables()
    assert lab.connect("a", CNC)
    s.cli("block", CNC, "--for", "10m")  # the daemon's own ipset/iptables children run sandboxed
    assert CNC in s.set_members()
    assert not lab.connect("a", CNC, timeout=0.5)
    s.cli("unblock", CNC)
    assert wait_for(lambda: lab.connect("a", CNC, timeout=0.5), 5) is not None
    proc.send_signal(signal.SIGHUP)
    # the reload runs in a thread of its own (loads, then a swap on the packet loop): let it finish
    # before SIGTERM, which would cut it short without its "reloaded" line
    assert wait_for(lambda: "reloaded" in s.stderr_so_far(), 10) is not None, s.stderr_so_far()
    assert s.cli("status").returncode == 0
    code, err = s.stop(signal.SIGTERM)
    assert code == 0, err  # -31 would be SIGSYS: a syscall the filter denies
    assert "NFQUEUE" not in s.iptables() and "reloaded" in err
