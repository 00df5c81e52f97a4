"""Opening a flow input: a file, a gzip file, or standard input, ready to be read line by line.

The first bytes (for magic numbers) and the first non-blank line (for detection) are looked at
without losing them, and nothing more is read: standard input stays a stream, so a line is handed
on as soon as it arrives and a paused writer costs no CPU (a read blocks in the kernel).
This module never parses rows and never reads a whole input into memory.
"""

from __future__ import annotations

import gzip
import io
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from slipsq.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
PCAP_MAGICS = (b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1",
               b"\x0a\x0d\x0d\x0a")
NFDUMP_MAGIC = b"\x0c\xa5"  # nffile header: uint16 0xA50C little-endian, then the layout version
FIRST_LINE_LIMIT = 1 << 20  # a header or first JSON event longer than 1 MiB is not a flow file


def binary_kind(magic: bytes) -> str | None:
    """'pcap', 'nfdump' or 'gzip' from a file's first bytes, None for text."""
    if magic[:4] in PCAP_MAGICS:
        return "pcap"
    if magic[:2] == NFDUMP_MAGIC and magic[2:4] in (b"\x01\x00", b"\x02\x00"):
        return "nfdump"
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    return None


class _Available(io.RawIOBase):
    """Whatever `inner` (a buffered stream) has ready: read1 returns what the pipe holds and never
    waits for a full buffer, so a gzip stream on standard input is decompressed as it arrives."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        # read1, not readinto1: CPython 3.11's readinto1 with a large buffer copies what is buffered
        # and then still blocks in a raw read for more
        data = self._inner.read1(len(b))
        b[: len(data)] = data
        return len(data)


def read_first_line(stream: IO[bytes]) -> tuple[bytes, int]:
    """The first non-blank line (bytes) and its line number; b"" for an empty stream."""
    lineno = 0
    while True:
        line = stream.readline(FIRST_LINE_LIMIT)
        lineno += 1
        if not line or line.strip():
            return line, lineno


@dataclass
class Opened:
    """An input opened for reading: `kind` from its first (decompressed) bytes; for text, `first` is
    the first non-blank line and `lines()` the lines after it."""

    name: str
    path: str | None  # None for standard input
    stream: IO[bytes]
    kind: str | None = None  # 'pcap' or 'nfdump' for binary inputs, None for text
    gzipped: bool = False
    first: str = ""
    lineno: int = 0
    _close: list[Callable[[], Any]] = field(default_factory=list)

    def lines(self) -> io.TextIOWrapper:
        # bad UTF-8 is replaced, not fatal: the row's parser then rejects (counts) that row
        text = io.TextIOWrapper(self.stream, encoding="utf-8", errors="replace", newline=None)
        # closing the wrapper would close standard input: detach it instead
        self._close.append(text.detach if self.path is None else text.close)
        return text

    def close(self) -> None:
        while self._close:
            try:
                self._close.pop()()
            except (OSError, ValueError):
                pass


def open_input(path: str) -> Opened:
    """Open `path` ("-" is standard input). InputError for a missing, unreadable or empty input."""
    name = "<stdin>" if path == "-" else path
    raw: Any
    if path == "-":
        raw = getattr(sys.stdin, "buffer", None)
        if raw is None:
            raise InputError("<stdin>: standard input is not available")
        if not hasattr(raw, "peek"):  # e.g. a BytesIO standing in for stdin
            raw = io.BufferedReader(raw)
    else:
        try:
            raw = open(path, "rb")  # closed by Opened.close
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory without conn.log (not a Zeek log folder)") from None
        except OSError as e:
            raise InputError(f"{path}: cannot open: {e.strerror or e}") from None
    opened = Opened(name, None if path == "-" else path, raw)
    if path != "-":
        opened._close.append(raw.close)
    try:
        # peek: the magic must not be lost, and a pcapng's first "line" is blank
        magic = raw.peek(8)[:8] if path == "-" else raw.read(8)
        if path != "-":
            raw.seek(0)
        opened.kind = binary_kind(magic)
        if opened.kind == "gzip":
            return _gunzip(opened)
        if opened.kind is not None:
            return opened
        first, opened.lineno = read_first_line(raw)
    except (OSError, ValueError) as e:  # ValueError: a closed standard input
        opened.close()
        raise InputError(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return _with_first(opened, first, "is empty")


def _gunzip(opened: Opened) -> Opened:
    name = opened.name
    gz: Any
    if opened.path is not None:
        opened.close()
        gz = gzip.open(opened.path, "rb")
    else:
        # unbuffered on purpose: a BufferedReader would wait for a full 128 KiB read before inflating
        gz = gzip.GzipFile(fileobj=_Available(opened.stream), mode="rb")
    opened = Opened(name, opened.path, gz, gzipped=True)
    opened._close.append(gz.close)
    try:
        inner = gz.peek(8)[:8]  # type: ignore[attr-defined]
        opened.kind = binary_kind(inner)
        if opened.kind == "gzip":
            raise InputError(f"{name}: is gzip inside gzip; decompress it once first")
        if opened.kind is not None:
            return opened
        first, opened.lineno = read_first_line(gz)
    except (OSError, EOFError, zlib.error) as e:
        opened.close()
        raise InputError(f"{name}: is not a readable gzip file: {e}") from None
    return _with_first(opened, first, "is empty (an empty gzip file)")


def _with_first(opened: Opened, first: bytes, empty: str) -> Opened:
    """`opened` with its first text line decoded; closed and InputError(`empty`) when there is none."""
    if not first:
        opened.close()
        raise InputError(f"{opened.name}: {empty}")
    opened.first = first.decode("utf-8", "replace").lstrip("\ufeff")
    return opened
