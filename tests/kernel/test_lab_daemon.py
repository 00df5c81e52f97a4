"""The lab's Daemon helper (tests/kernel/lab.py) on its failure paths: what every kernel test and the
benches rely on to fail clearly and leave nothing behind.

A daemon that exits at once, or never answers, raises RuntimeError (never a hang); a run that fails
after a good start still loses its daemon, its rules and its namespaces in `Lab.down()`. These build
their own Lab rather than the `lab` fixture so they can look after `down()`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.kernel.lab import Daemon, Lab, alive


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_a_daemon_that_exits_fails_at_once_with_its_message(tmp_path: Path) -> None:
    lab = Lab().up()
    try:
        d = Daemon(lab, tmp_path / "state", config={"no.such": 1})
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"slipsq exited 3: .*unknown configuration key 'no.such'"):
            d.start(timeout=60)
        assert time.monotonic() - t0 < 30  # it saw the exit, it did not wait out the timeout
    finally:
        lab.down()
    assert not set(lab.ns.values()) & namespaces()


def test_a_daemon_that_never_answers_fails_after_the_timeout_and_is_killed(tmp_path: Path) -> None:
    lab = Lab().up()
    try:
        # `sh -c 'sleep 600'` takes the daemon's command line as its arguments and sleeps: a daemon
        # that runs but never answers status
        d = Daemon(lab, tmp_path / "state", prefix=("sh", "-c", "sleep 600"))
        with pytest.raises(RuntimeError, match="did not answer status within 2 s"):
            d.start(timeout=2)
        assert d.proc is not None and d.proc.poll() is None
        pid = d.proc.pid
    finally:
        lab.down()
    assert not alive(pid)
    assert not set(lab.ns.values()) & namespaces()


def test_a_run_that_fails_after_a_good_start_still_loses_daemon_rules_and_namespaces(tmp_path: Path) -> None:
    lab = Lab().up()
    pid = 0
    with pytest.raises(ZeroDivisionError):
        try:
            backend = "nft" if shutil.which("iptables-nft") else "legacy"
            d = Daemon(lab, tmp_path / "state", backend=backend, config={"bypass.enabled": True})
            d.start()
            assert d.config_path is not None and d.config_path.read_text() == "[bypass]\nenabled = true\n"
            st = d.status()
            assert d.proc is not None and st["pid"] == d.proc.pid
            assert "NFQUEUE" in lab.sh(lab.gw, f"iptables-{backend}", "-t", "security", "-S").stdout
            pid = d.proc.pid
            _ = 1 / 0  # the bench or test fails here, with the daemon and its rules in place
        finally:
            lab.down()
    assert pid and not alive(pid)
    assert not set(lab.ns.values()) & namespaces()
