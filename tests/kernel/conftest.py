"""Kernel-test fixtures: a fresh namespace lab per test, and a helper that runs slipsq in its gateway.

Everything is skipped cleanly when not root or when `ip netns` does not work; the lab and every
process it started are removed in teardown, failure or not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lab import ROOT, Lab, why_no_lab

_REASON = why_no_lab()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kernel/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.kernel)
            if _REASON:
                item.add_marker(pytest.mark.skip(reason=f"kernel test: {_REASON}"))


@pytest.fixture
def lab() -> Iterator[Lab]:
    lb = Lab()
    try:
        lb.up()
        yield lb
    finally:
        lb.down()


class Slipsq:
    """slipsq in the lab's gateway: the daemon as a subprocess, admin commands, status."""

    def __init__(self, lab: Lab, state_dir: Path, backend: str, queue: int | str = 5,
                 config: dict[str, Any] | None = None) -> None:
        self.lab, self.state_dir, self.backend, self.queue = lab, state_dir, backend, queue
        self.config_path = state_dir.parent / f"slipsq-{lab.sfx}.toml"
        self.config_path.write_text(_toml(config or {}))
        self.proc: subprocess.Popen[str] | None = None

    def env(self) -> dict[str, str]:
        return {"SLIPSQ_IPTABLES_BACKEND": self.backend}

    def start(self, *extra: str, wait: bool = True) -> subprocess.Popen[str]:
        self.proc = self.lab.popen(self.lab.gw, sys.executable, "-m", "slipsq", "--queue", str(self.queue),
                                   "--install-rules", "--state-dir", str(self.state_dir),
                                   "--config", str(self.config_path), *extra, env=self.env())
        if wait:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"slipsq exited {self.proc.returncode}: {self.proc.stderr.read()}")
                if self.cli("status", check=False).returncode == 0:
                    return self.proc
                time.sleep(0.1)
            raise RuntimeError("slipsq did not answer status within 15 s")
        return self.proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = self.lab.sh(self.lab.gw, "env", f"PYTHONPATH={ROOT}", f"SLIPSQ_IPTABLES_BACKEND={self.backend}",
                        sys.executable, "-m", "slipsq", *args, "--state-dir", str(self.state_dir),
                        check=False, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"slipsq {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}")
        return r

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.cli("status", "--json").stdout))

    def blocks(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("blocks", "--json").stdout))

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, str]:
        assert self.proc is not None
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill9(self) -> None:
        assert self.proc is not None
        # the daemon runs under `ip netns exec`, which execs it: same pid
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def iptables(self) -> str:
        cmd = "iptables-nft" if self.backend == "nft" else "iptables-legacy"
        return self.lab.sh(self.lab.gw, cmd, "-S").stdout

    def set_members(self) -> str:
        return self.lab.sh(self.lab.gw, "ipset", "save", "slipsq-block4", check=False).stdout


def _toml(values: dict[str, Any]) -> str:
    sections: dict[str, list[str]] = {}
    for key, v in values.items():
        sec, _, name = key.rpartition(".")
        sections.setdefault(sec, []).append(f"{name} = {json.dumps(v)}")
    return "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


@pytest.fixture(params=["nft", "legacy"])
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if shutil.which(f"iptables-{name}") is None:
        pytest.skip(f"iptables-{name} is not installed here")
    return name


def wait_for(pred: Any, timeout: float, step: float = 0.2) -> float | None:
    """Seconds until pred() was true, or None after `timeout` (a bounded loop)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return None
