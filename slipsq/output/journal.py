"""The systemd journal, natively: one datagram of fields to /run/systemd/journal/socket, so every alert
and block carries structured fields an admin can filter on, and a priority:

    journalctl -u slipsq SLIPSQ_ACTION=block          # every block, with its evidence
    journalctl -u slipsq -p warning                   # alerts and blocks (and errors), nothing else
    journalctl -u slipsq SLIPSQ_OFFENDER=203.0.113.7 -o json

The wire format (systemd's "native protocol"): `KEY=value\\n` per field; a value holding a newline
is sent as `KEY\\n`, its length as 64-bit little-endian, the bytes, `\\n`. When the socket is absent
(not under systemd, a container) or refuses, the line goes to stderr instead: a log line is never
lost silently and never stops the daemon. This module decides nothing.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
from collections.abc import Iterator, Mapping
from typing import TextIO

from slipsq.records import Alert, Block, Unblock, iso
from slipsq.sink import Sink

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "slipsq"

# syslog priorities (journalctl -p)
ERR, WARNING, NOTICE, INFO = 3, 4, 5, 6

# MESSAGE_ID: one fixed id per kind of message, as journal catalogs use (journalctl MESSAGE_ID=...)
MESSAGE_IDS = {
    "alert": "5e7a1c0d8f2b4b7f9a3c6d1e2f4a5b60",
    "block": "5e7a1c0d8f2b4b7f9a3c6d1e2f4a5b61",
    "unblock": "5e7a1c0d8f2b4b7f9a3c6d1e2f4a5b62",
}


def field_name(key: str) -> str:
    """A journal field name: upper-case letters, digits and '_', not starting with '_' or a digit."""
    name = "".join(c if c.isascii() and c.isalnum() else "_" for c in key.upper()).lstrip("_")
    return name if name and not name[0].isdigit() else "X_" + name


def encode(fields: Mapping[str, object]) -> bytes:
    """The native-protocol datagram for `fields` (values as str; None values are left out)."""
    out = bytearray()
    for key, value in fields.items():
        if value is None:
            continue
        k = field_name(key).encode()
        v = str(value).encode("utf-8", "replace")
        if b"\n" in v:
            out += k + b"\n" + struct.pack("<Q", len(v)) + v + b"\n"
        else:
            out += k + b"=" + v + b"\n"
    return bytes(out)


def decode(data: bytes) -> dict[str, str]:
    """The inverse of `encode` (used by the tests and by anyone reading a captured datagram).
    Raises ValueError on a datagram that is not in the native format."""
    return dict(_fields(data))


def _fields(data: bytes) -> Iterator[tuple[str, str]]:
    i = 0
    while i < len(data):
        nl = data.find(b"\n", i)
        if nl < 0:
            raise ValueError("field without a final newline")
        line = data[i:nl]
        eq = line.find(b"=")
        if eq >= 0:
            yield line[:eq].decode(), line[eq + 1:].decode("utf-8", "replace")
            i = nl + 1
            continue
        start = nl + 1 + 8
        if start > len(data):
            raise ValueError("binary field without its length")
        (n,) = struct.unpack("<Q", data[nl + 1:start])
        if start + n >= len(data) or data[start + n] != 0x0A:
            raise ValueError("binary field shorter than its length")
        yield line.decode(), data[start:start + n].decode("utf-8", "replace")
        i = start + n + 1


def started_by_systemd(env: Mapping[str, str] | None = None) -> bool:
    """True when systemd started this process (so its journal is the place for our lines; run by
    hand in a terminal, an admin expects them on the terminal)."""
    env = os.environ if env is None else env
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


class Journal:
    """A sender of journal entries; `send` falls back to one line on `fallback` (stderr)."""

    def __init__(self, path: str = JOURNAL_SOCKET, fallback: TextIO | None = None) -> None:
        self.path = path
        self.fallback = fallback
        self._sock: socket.socket | None = None
        self.sent = 0
        self.fell_back = 0

    def send(self, message: str, priority: int = INFO, **fields: object) -> bool:
        """One entry; True when the journal took it, False when it went to the fallback."""
        data = encode({"MESSAGE": message, "PRIORITY": priority, "SYSLOG_IDENTIFIER": IDENTIFIER, **fields})
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self.path)
        except OSError:  # no journal here, or a datagram too big (EMSGSIZE): never lose the line
            self.fell_back += 1
            stream = self.fallback if self.fallback is not None else sys.stderr
            stream.write(f"slipsq: {message}\n")
            stream.flush()
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def alert_fields(alert: Alert) -> dict[str, object]:
    """Every field of the alert's JSON (records.Alert.to_dict) as SLIPSQ_<NAME>, enrichment left out
    (nested; it stays in alerts.jsonl)."""
    fields: dict[str, object] = {}
    for key, value in alert.to_dict().items():
        if key == "enrich" or value is None:
            continue
        fields[f"SLIPSQ_{key}"] = value
    return fields


class JournalSink(Sink):
    """Alerts (priority warning, SLIPSQ_ACTION=alert), blocks (warning, SLIPSQ_ACTION=block, the
    deciding alert's fields with them) and unblocks (notice, SLIPSQ_ACTION=unblock) to the journal."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def alert(self, alert: Alert) -> None:
        # SLIPSQ_ACTION is the alert's own action: "block" when this alert decided a block, so
        # SLIPSQ_ACTION=block lists exactly the blocks with the evidence that made them
        action = alert.decision.action
        self.journal.send(alert.to_text(), WARNING, MESSAGE_ID=MESSAGE_IDS.get(action, MESSAGE_IDS["alert"]),
                          **alert_fields(alert))

    def block(self, block: Block) -> None:
        """A block no alert decided (an admin's, or one re-applied from the store at start); the
        judge's blocks were logged with their alert."""
        if block.alert is not None:
            return
        until = "until unblocked" if not block.duration else f"for {block.duration / 3600:g}h"
        self.journal.send(f"{iso(block.ts)} [BLOCK] {block.ip} {until} by {block.by}: {block.reason}",
                          NOTICE if block.by == "store" else WARNING, MESSAGE_ID=MESSAGE_IDS["block"],
                          SLIPSQ_ACTION="block", SLIPSQ_BLOCKED_IP=block.ip, SLIPSQ_BLOCK_SECONDS=block.duration,
                          SLIPSQ_REASON=block.reason, SLIPSQ_BY=block.by)

    def unblock(self, unblock: Unblock) -> None:
        self.journal.send(f"{iso(unblock.ts)} [UNBLOCK] {unblock.ip}: {unblock.reason} ({unblock.who})", NOTICE,
                          MESSAGE_ID=MESSAGE_IDS["unblock"], SLIPSQ_ACTION="unblock", SLIPSQ_BLOCKED_IP=unblock.ip,
                          SLIPSQ_REASON=unblock.reason, SLIPSQ_BY=unblock.who)
