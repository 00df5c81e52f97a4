"""The block store: decisions survive, the audit trail says who did what, expiry is recorded."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.errors import SystemSetupError
from slipsq.records import utf8_text
from slipsq.verdict.store import DB_NAME, BlockStore, resolve_state_dir


def test_state_dir_flag_then_env_then_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SLIPSQ_STATE_DIR", raising=False)
    assert resolve_state_dir(None) == Path("/var/lib/slipsq")
    monkeypatch.setenv("SLIPSQ_STATE_DIR", str(tmp_path / "env"))
    assert resolve_state_dir(None) == tmp_path / "env"
    assert resolve_state_dir(tmp_path / "flag") == tmp_path / "flag"


def test_block_unblock_and_audit(tmp_path: Path) -> None:
    st = BlockStore(tmp_path / "state")
    assert oct(os.stat(tmp_path / "state").st_mode & 0o777) == "0o700"
    assert oct(os.stat(tmp_path / "state" / DB_NAME).st_mode & 0o777) == "0o600"
    b = st.add("203.0.113.7", since=1000.0, expires=1000.0 + 3600, reason="beacon", detector="beacon",
               evidence={"score": 1.2}, by="judge")
    assert b.times == 1
    assert st.get("203.0.113.7") == b
    assert json.loads(b.evidence) == {"score": 1.2}
    assert b.remaining(1600.0) == 3000.0
    st.add("198.51.100.9", since=1001.0, expires=None, reason="manual", by="admin:root")
    assert [x.ip for x in st.active(2000.0)] == ["203.0.113.7", "198.51.100.9"]
    gone = st.remove("203.0.113.7", ts=1100.0, who="admin:alice", reason="false positive")
    assert gone is not None and gone.detector == "beacon"
    assert st.remove("203.0.113.7", ts=1101.0, who="admin:alice", reason="again") is None
    log = st.audit()
    assert [(e.action, e.ip, e.who) for e in log] == [
        ("block", "203.0.113.7", "judge"), ("block", "198.51.100.9", "admin:root"),
        ("unblock", "203.0.113.7", "admin:alice")]
    assert log[-1].reason == "false positive"
    assert [e.action for e in st.audit("198.51.100.9")] == ["block"]


def test_repeat_offender_counts_up(tmp_path: Path) -> None:
    st = BlockStore(tmp_path)
    for i in range(3):
        b = st.add("192.0.2.5", since=float(i), expires=float(i) + 10, reason="r")
        assert b.times == i + 1
        st.remove("192.0.2.5", ts=float(i) + 1, who="expiry", reason="x")
    assert st.get("192.0.2.5") is None


def test_purge_expired_keeps_unexpired_and_permanent(tmp_path: Path) -> None:
    st = BlockStore(tmp_path)
    st.add("192.0.2.1", since=0.0, expires=50.0, reason="old")
    st.add("192.0.2.2", since=0.0, expires=500.0, reason="new")
    st.add("192.0.2.3", since=0.0, expires=None, reason="forever")
    gone = st.purge_expired(100.0)
    assert [b.ip for b in gone] == ["192.0.2.1"]
    assert {b.ip for b in st.active(100.0)} == {"192.0.2.2", "192.0.2.3"}
    assert st.audit("192.0.2.1")[-1].who == "expiry"
    assert st.purge_expired(100.0) == []


def test_a_crash_right_after_a_decision_loses_nothing(tmp_path: Path) -> None:
    # the writer dies without closing anything (os._exit skips every cleanup)
    code = ("import os, sys; from slipsq.verdict.store import BlockStore; "
            "s = BlockStore(sys.argv[1]); "
            "s.add('203.0.113.9', since=5.0, expires=None, reason='r'); os._exit(9)")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=Path(__file__).parent.parent)
    assert r.returncode == 9
    assert BlockStore(tmp_path).get("203.0.113.9") is not None


def test_two_openers_see_each_other(tmp_path: Path) -> None:
    a, b = BlockStore(tmp_path), BlockStore(tmp_path)
    a.add("192.0.2.8", since=1.0, expires=None, reason="r")
    assert b.get("192.0.2.8") is not None
    assert b.remove("192.0.2.8", who="admin:x", reason="r") is not None
    assert a.get("192.0.2.8") is None


def test_unusable_state_dir_is_one_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(SystemSetupError, match=r"state directory|block store"):
        BlockStore(f)
    with pytest.raises(SystemSetupError, match="has not run"):
        BlockStore(tmp_path / "nothing", create=False)


def test_damaged_database_is_reported(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SystemSetupError, match=r"damaged|block store"):
        BlockStore(tmp_path)


def test_schema_is_plain_sqlite(tmp_path: Path) -> None:
    BlockStore(tmp_path).add("192.0.2.4", since=1.0, expires=2.0, reason="r", detector="d", by="judge")
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = db.execute("SELECT ip, reason, detector, by FROM blocks").fetchall()
    assert rows == [("192.0.2.4", "r", "d", "judge")]


@settings(max_examples=60, deadline=None)
@given(st.tuples(st.text(max_size=20), st.sampled_from(["\udcff", "\ud800", "é", ""]),
                 st.text(max_size=20)).map("".join))
def test_any_text_is_stored_and_its_batch_with_it(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    """A reason or admin name SQLite cannot encode (a lone surrogate: non-UTF-8 bytes in a
    command-line argument) is kept as its escape, and the judge's block written in the same
    transaction is not lost with it."""
    from slipsq.records import Block, Unblock

    store = BlockStore(tmp_path_factory.mktemp("state"))
    stored = store.write([Block("203.0.113.7", 1000.0, 3600.0, "score 1.2", "judge"),
                          Block("198.51.100.9", 1000.0, 0.0, text, f"admin:{text}")])
    assert set(stored) == {"203.0.113.7", "198.51.100.9"}
    kept = store.get("198.51.100.9")
    assert kept is not None and kept.reason == utf8_text(text) and kept.by == utf8_text(f"admin:{text}")
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert utf8_text(text) == text  # UTF-8 text is kept as it is
    store.write([Unblock("198.51.100.9", 1001.0, text, text)])
    assert store.get("198.51.100.9") is None
    assert store.audit("198.51.100.9")[-1].reason == utf8_text(text)
