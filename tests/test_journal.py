"""slipsq.output.journal: the native journal protocol both ways, and what an admin can filter on."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipsq.output.journal import (
    INFO,
    NOTICE,
    WARNING,
    Journal,
    JournalSink,
    decode,
    encode,
    field_name,
    started_by_systemd,
)
from slipsq.records import Alert, Block, Decision, Evidence, Unblock


def _alert(action: str = "alert") -> Alert:
    ev = Evidence(1_700_000_000.0, "beacon", "203.0.113.7", "192.168.1.66", "203.0.113.7", 443, "tcp",
                  "periodic connections every 2.0 s", 0.8, 0.9, label="")
    blocked = "203.0.113.7" if action == "block" else ""
    return Alert(ev, Decision(action, blocked, 14400.0 if blocked else 0.0, 1.2, "score 1.20 >= 1.00"))




def test_encode_plain_and_binary_fields() -> None:
    data = encode({"MESSAGE": "one\ntwo", "PRIORITY": 4, "SKIPPED": None, "slipsq_ip": "10.0.0.1"})
    assert data == b"MESSAGE\n\x07\x00\x00\x00\x00\x00\x00\x00one\ntwo\nPRIORITY=4\nSLIPSQ_IP=10.0.0.1\n"
    assert decode(data) == {"MESSAGE": "one\ntwo", "PRIORITY": "4", "SLIPSQ_IP": "10.0.0.1"}


@pytest.mark.parametrize(("key", "want"), [("dst_port", "DST_PORT"), ("_secret", "SECRET"),
                                           ("9lives", "X_9LIVES"), ("a-b.c", "A_B_C")])
def test_field_names_are_ones_the_journal_accepts(key: str, want: str) -> None:
    assert field_name(key) == want


@given(st.dictionaries(st.from_regex(r"[A-Z][A-Z0-9_]{0,20}", fullmatch=True),
                       st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=50), max_size=8))
def test_encode_decode_round_trip(fields: dict[str, str]) -> None:
    assert decode(encode(fields)) == fields


@pytest.mark.parametrize("bad", [b"MESSAGE=no newline", b"MESSAGE\n\x05\x00",
                                 b"MESSAGE\n\x09" + b"\x00" * 7 + b"abc\n"])
def test_decode_refuses_damaged_datagrams(bad: bytes) -> None:
    with pytest.raises(ValueError):
        decode(bad)


def test_alerts_and_blocks_carry_priority_and_filterable_fields(dgram: tuple[str, socket.socket]) -> None:
    path, sock = dgram
    sink = JournalSink(Journal(path))
    sink.alert(_alert("alert"))
    got = decode(sock.recv(65536))
    assert got["PRIORITY"] == str(WARNING) and got["SYSLOG_IDENTIFIER"] == "slipsq"
    assert got["SLIPSQ_ACTION"] == "alert" and got["SLIPSQ_DETECTOR"] == "beacon"
    assert got["SLIPSQ_OFFENDER"] == "203.0.113.7" and got["SLIPSQ_DST_PORT"] == "443"
    assert "SLIPSQ_BLOCKED_IP" not in got  # None fields are left out, not sent as "None"
    assert got["MESSAGE"] == _alert("alert").to_text()

    sink.alert(_alert("block"))
    got = decode(sock.recv(65536))
    assert got["SLIPSQ_ACTION"] == "block" and got["SLIPSQ_BLOCKED_IP"] == "203.0.113.7"
    assert got["SLIPSQ_BLOCK_SECONDS"] == "14400.0" and int(got["PRIORITY"]) <= WARNING
    assert got["MESSAGE_ID"] != decode(encode({"MESSAGE_ID": "x"}))["MESSAGE_ID"]

    sink.block(Block("203.0.113.7", 1_700_000_000.0, 14400.0, "score", "judge", alert=_alert("block")))
    sink.unblock(Unblock("203.0.113.7", 1_700_000_100.0, "expired", "expiry"))
    got = decode(sock.recv(65536))  # the judge's block was logged with its alert: the unblock is next
    assert got["SLIPSQ_ACTION"] == "unblock" and got["PRIORITY"] == str(NOTICE) and got["SLIPSQ_BY"] == "expiry"

    sink.block(Block("198.51.100.9", 1_700_000_200.0, 0.0, "manual", "admin:root"))
    got = decode(sock.recv(65536))
    assert got["SLIPSQ_ACTION"] == "block" and got["PRIORITY"] == str(WARNING)
    assert "until unblocked" in got["MESSAGE"] and got["SLIPSQ_BY"] == "admin:root"
    sink.block(Block("198.51.100.9", 1_700_000_300.0, 60.0, "restored", "store"))
    assert decode(sock.recv(65536))["PRIORITY"] == str(NOTICE)
    sink.journal.close()


def test_without_a_journal_the_line_goes_to_stderr(tmp_path: Path) -> None:
    err = io.StringIO()
    j = Journal(str(tmp_path / "absent.sock"), fallback=err)
    assert not j.send("started on NFQUEUE 0", INFO, SLIPSQ_ACTION="start")
    assert err.getvalue() == "slipsq: started on NFQUEUE 0\n"
    assert j.fell_back == 1 and j.sent == 0
    j.close()


def test_started_by_systemd() -> None:
    assert started_by_systemd({"INVOCATION_ID": "abc"})
    assert started_by_systemd({"JOURNAL_STREAM": "8:123"})
    assert not started_by_systemd({"TERM": "xterm"})
