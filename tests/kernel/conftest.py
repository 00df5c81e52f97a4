"""Kernel-test fixtures: a fresh namespace lab per test, and slipsq in its gateway as the tests run it.

Everything is skipped cleanly when not root or when `ip netns` does not work; the lab and every
process it started are removed in teardown, failure or not.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.kernel.lab import Daemon, Lab, why_no_lab

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


class Slipsq(Daemon):
    """slipsq in the lab's gateway as the kernel tests run it (tests.kernel.lab.Daemon): always on an
    explicit iptables backend and always with a config file, empty or not, so that no test reads
    another's config or leaves the backend to the host; plus what tests inspect afterwards."""

    config_path: Path  # never None here: the file is always written (tests rewrite it for SIGHUP)

    def __init__(self, lab: Lab, state_dir: Path, backend: str, queue: int | str = 5,
                 config: dict[str, Any] | None = None) -> None:
        super().__init__(lab, state_dir, queue=queue, backend=backend, config=config or {})

    def blocks(self) -> list[dict[str, Any]]:
        return list(json.loads(self.cli("blocks", "--json").stdout))

    def kill9(self) -> None:
        assert self.proc is not None
        # the daemon runs under `ip netns exec`, which execs it: same pid
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def iptables(self) -> str:
        cmd = "iptables-nft" if self.backend == "nft" else "iptables-legacy"
        return self.lab.sh(self.lab.gw, cmd, "-t", "security", "-S").stdout  # slipsq's table (backends.TABLE)

    def set_members(self) -> str:
        return self.lab.sh(self.lab.gw, "ipset", "save", "slipsq-block4", check=False).stdout


@pytest.fixture(params=["nft", "legacy"])
def backend(request: pytest.FixtureRequest) -> str:
    name = str(request.param)
    if shutil.which(f"iptables-{name}") is None:
        pytest.skip(f"iptables-{name} is not installed here")
    return name


def wait_for(pred: Any, timeout: float, step: float = 0.2) -> float | None:
    """Seconds until pred() was true, or None after `timeout` (a bounded loop). It looks once more
    at the deadline: a pred that takes seconds (a CLI on a busy machine) still gets its last look."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(step)
    return time.monotonic() - t0 if pred() else None
