"""Shared fixtures. Test helpers that build packets and flows live in tests/helpers.py."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# no per-example deadline (hypothesis's default is 200 ms): one example stalled 200 ms on a busy CI
# machine fails a property test as "Unreliable test timings", which says nothing of the property
settings.register_profile("slipsq", deadline=None)
settings.load_profile("slipsq")

ROOT = Path(__file__).resolve().parent.parent

# ../shared/data beside the checkout, or $SLIPSQ_SHARED_DATA (a git worktree lives elsewhere)
SHARED = Path(os.environ.get("SLIPSQ_SHARED_DATA") or ROOT.parent / "shared" / "data")
sys.path.insert(0, str(ROOT))  # so tests can import tools.* (the project's own generators)


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or a clean skip when this checkout has none beside it."""
    if not SHARED.is_dir():
        pytest.skip("../shared/data is absent (real captures are optional)")
    return SHARED


@pytest.fixture
def dgram(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A Unix datagram socket the test reads (a fake NOTIFY_SOCKET or journal socket): (path, socket)."""
    path = str(tmp_path / "dgram.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(2)
    try:
        yield path, s
    finally:
        s.close()
