"""Opening an input: a file, a gzip, xz or zstd file, or standard input, ready to be read line by
line (flow files) or block by block (packet captures read as streams, slipsq.sources.pcapstream).

The first bytes (for magic numbers) and the first non-blank line (for detection) are looked at
without losing them, and nothing more is read: standard input stays a stream, so a line is handed
on as soon as it arrives and a paused writer costs no CPU (a read blocks in the kernel).
This module never parses rows and never reads a whole input into memory.
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from slipsq.errors import InputError

GZIP_MAGIC = b"\x1f\x8b"
XZ_MAGIC = b"\xfd7zXZ\x00"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPRESSED = ("gzip", "xz", "zstd")
PCAP_MAGICS = (b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1",
               b"\x0a\x0d\x0d\x0a")
NFDUMP_MAGIC = b"\x0c\xa5"  # nffile header: uint16 0xA50C little-endian, then the layout version
FIRST_LINE_LIMIT = 1 << 20  # a header or first JSON event longer than 1 MiB is not a flow file


def binary_kind(magic: bytes) -> str | None:
    """'pcap', 'nfdump', 'gzip', 'xz' or 'zstd' from a file's first bytes, None for text."""
    if magic[:4] in PCAP_MAGICS:
        return "pcap"
    if magic[:2] == NFDUMP_MAGIC and magic[2:4] in (b"\x01\x00", b"\x02\x00"):
        return "nfdump"
    if magic[:2] == GZIP_MAGIC:
        return "gzip"
    if magic[:6] == XZ_MAGIC:
        return "xz"
    if magic[:4] == ZSTD_MAGIC:
        return "zstd"
    return None


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: tuple[type[BaseException], ...] = (OSError, EOFError, zlib.error, lzma.LZMAError)
    try:
        import zstandard
    except ImportError:  # pragma: no cover - a declared dependency
        return errors
    return (*errors, zstandard.ZstdError)


# what reading a compressed stream raises when its data is corrupt (EOFError: it ends early)
DECOMPRESSION_ERRORS = _decompression_errors()


class _Zstd(io.RawIOBase):
    """A zstd stream (one or more frames) decompressed as it is read, with the `zstandard` package.

    Its stream_reader returns a frame cut short as if it were whole; this reader raises EOFError
    instead, as gzip and lzma do, so a truncated .zst is damage like a truncated .gz."""

    def __init__(self, inner: Any) -> None:
        import zstandard

        self._inner = inner
        self._new = zstandard.ZstdDecompressor().decompressobj
        self._obj = self._new()
        self._out = b""
        self._started = False  # data of the current frame was given to the decompressor

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._out:
            data = self._inner.read1(1 << 16) if hasattr(self._inner, "read1") else self._inner.read(1 << 16)
            if not data:
                if self._started and not self._obj.eof:
                    raise EOFError("it ends inside a zstd frame (cut short)")
                return 0
            while data:
                if self._obj.eof:  # the next frame
                    self._obj = self._new()
                self._started = True
                self._out += self._obj.decompress(data)
                data = self._obj.unused_data if self._obj.eof else b""
        n = min(len(b), len(self._out))
        b[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


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
    gzipped: bool = False  # compressed (gzip, xz or zstd: `compression`)
    compression: str = ""
    first: str = ""
    lineno: int = 0
    _close: list[Callable[[], Any]] = field(default_factory=list)

    cut: bool = False  # a streamed input's last line had no newline

    def lines(self) -> Iterator[str]:
        # bad UTF-8 is replaced, not fatal: the row's parser then rejects (counts) that row
        text = io.TextIOWrapper(self.stream, encoding="utf-8", errors="replace", newline=None)
        # closing the wrapper would close standard input: detach it instead
        self._close.append(text.detach if self.path is None else text.close)
        if self.path is not None and not self.gzipped:
            return text  # a plain file: its end is looked at by `ending`, not line by line
        return self._watched(text)

    def _watched(self, text: io.TextIOWrapper) -> Iterator[str]:
        for line in text:
            self.cut = not line.endswith("\n")
            yield line

    def ending(self) -> str | None:
        """Damage at the end of a text input (after it was read): its last line has no newline, so the
        writer stopped in the middle of a row (a row cut short can still parse, with wrong numbers)."""
        if self.path is not None and not self.gzipped:
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(0, os.SEEK_END)
                    if fh.tell() == 0:
                        return None
                    fh.seek(-1, os.SEEK_END)
                    self.cut = fh.read(1) != b"\n"
            except OSError:
                return None
        return "its last line is cut short (no newline at the end: the writer stopped mid-row)" if self.cut else None

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
        if opened.kind in COMPRESSED:
            return _decompress(opened, opened.kind)
        if opened.kind is not None:
            return opened
        first, opened.lineno = read_first_line(raw)
    except (OSError, ValueError) as e:  # ValueError: a closed standard input
        opened.close()
        raise InputError(f"{name}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return _with_first(opened, first, "is empty")


def _decompress(opened: Opened, kind: str) -> Opened:
    """`opened` (gzip, xz or zstd data) as the stream of its decompressed bytes."""
    name = opened.name
    # standard input unbuffered on purpose: a BufferedReader would wait for a full 128 KiB read
    # before inflating, and a stream's lines must go on as they arrive
    source: Any
    if opened.path is not None:
        opened.close()
        source = open(opened.path, "rb")
    else:
        source = _Available(opened.stream)
    stream: Any
    if kind == "gzip":
        stream = gzip.GzipFile(fileobj=source, mode="rb")
    elif kind == "xz":
        stream = lzma.LZMAFile(source, "rb")
    else:
        stream = io.BufferedReader(_Zstd(source))
    new = Opened(name, opened.path, stream, gzipped=True, compression=kind)
    if opened.path is not None:
        new._close.append(source.close)
    new._close.append(stream.close)
    try:
        inner = stream.peek(8)[:8]
        new.kind = binary_kind(inner)
        if new.kind in COMPRESSED:
            raise InputError(f"{name}: is {new.kind} inside {kind}; decompress it once first")
        if new.kind is not None:
            return new
        first, new.lineno = read_first_line(stream)
    except DECOMPRESSION_ERRORS as e:
        new.close()
        raise InputError(f"{name}: is not a readable {kind} file: {e}") from None
    return _with_first(new, first, f"is empty (an empty {kind} file)")


def _with_first(opened: Opened, first: bytes, empty: str) -> Opened:
    """`opened` with its first text line decoded; closed and InputError(`empty`) when there is none."""
    if not first:
        opened.close()
        raise InputError(f"{opened.name}: {empty}")
    opened.first = first.decode("utf-8", "replace").lstrip("\ufeff")
    return opened
