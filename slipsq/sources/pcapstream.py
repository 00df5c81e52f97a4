"""Captures that are not plain files: pcap and pcapng from standard input (`tcpdump -w - | slipsq
replay -`) and from gzip, xz or zstd files, read as a stream and fed to the engine packet by packet.

The compiled reader memory-maps a file by name, which a pipe or a compressed file is not. Spooling
such an input to a temporary file first would cost its size in disk and, on a pipe, show no alert
until the writer ends; so these inputs are read record by record (the record rules are
slipsq.sources.pcap.PureCapture's, reused block by block) and each packet goes through
`Engine.packet`, the compiled flow table's one-packet entry. Plain files keep the compiled path.
This module reads; it never decides anything about the traffic.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from slipsq.errors import InputError
from slipsq.sources.flowfiles.streams import DECOMPRESSION_ERRORS, Opened
from slipsq.sources.pcap import FUTURE_SLACK, MAX_RECORD, PCAP_MAGICS, PureCapture, check_linktypes

SHB = b"\x0a\x0d\x0d\x0a"
NOT_A_CAPTURE: tuple[type[BaseException], ...] = (ValueError, *DECOMPRESSION_ERRORS)
MAX_BLOCK = 1 << 24  # a longer pcapng block is corrupt (and is never read into memory)


class StreamCapture(PureCapture):
    """pcap/pcapng records as (ts, frame, link type) from a byte stream, by PureCapture's rules.

    Reads exactly one record (pcap) or block (pcapng) at a time, so a pipe's packets are analysed
    as they arrive. `consumed` counts the bytes read. ValueError (a message for a person, never the
    input's bytes) when the stream does not start as a capture."""

    def __init__(self, stream: IO[bytes]) -> None:  # PureCapture.__init__ wants the whole file
        self.stream = stream
        self.data, self.pos, self.packets, self.truncated, self.corrupt = b"", 0, 0, 0, 0
        self.latest = time.time() + FUTURE_SLACK  # a record dated later is damage (pcap.FUTURE_SLACK)
        self.linktypes = []
        self.ifaces = []
        self.last_ts = 0.0
        self.consumed = 0
        head = self._read(4)
        if not head:
            raise ValueError("the input is empty, not a capture")
        if len(head) < 4:
            raise ValueError(f"too short to be a capture ({len(head)} bytes)")
        for e in ("<", ">"):
            (magic,) = struct.unpack(e + "I", head)
            if magic in PCAP_MAGICS:
                header = head + self._read(20)
                if len(header) < 24:
                    raise ValueError(f"the pcap file header is cut short ({len(header)} of 24 bytes)")
                (major,) = struct.unpack_from(e + "H", header, 4)
                if major != 2:
                    raise ValueError(f"unsupported pcap version {major}")
                self.e, self.format, self.divisor = e, "pcap", PCAP_MAGICS[magic]
                self.snaplen, network = struct.unpack_from(e + "II", header, 16)
                self.linktypes.append(network & 0x0FFFFFFF)
                return
        if head != SHB:
            raise ValueError("not a pcap or pcapng capture (no capture magic number at its start)")
        self.format = "pcapng"
        error = self._take_section(head + self._read(8))
        if error:
            raise ValueError(error)

    def _read(self, n: int) -> bytes:
        data = self.stream.read(n)
        if data and len(data) < n:  # a pipe or decompressor may hand over less: read to n or the end
            parts = [data]
            got = len(data)
            while got < n:
                more = self.stream.read(n - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.consumed += len(data)
        return data

    def _take_section(self, start: bytes) -> str:
        """Read the rest of a section header block whose first 12 bytes (type, length, byte-order
        magic) are `start`, and take it as the current section; "" or why it cannot be."""
        if len(start) < 12:
            return "the pcapng section header is cut short"
        e = "<" if start[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
        (blen,) = struct.unpack_from(e + "I", start, 4)
        block = start + (self._read(blen - 12) if 12 <= blen <= MAX_BLOCK else b"")
        self.data, self.pos = block, 0
        return self._section()

    def __iter__(self) -> Iterator[tuple[float, bytes, int]]:
        return self._stream_pcap() if self.format == "pcap" else self._stream_pcapng()

    def _stream_pcap(self) -> Iterator[tuple[float, bytes, int]]:
        unpack = struct.Struct(self.e + "IIII").unpack
        linktype, divisor, snaplen = self.linktypes[0], self.divisor, self.snaplen
        while True:
            header = self._read(16)
            if len(header) < 16:
                self.truncated += bool(header)
                return
            sec, frac, caplen, _ = unpack(header)
            if caplen > MAX_RECORD and caplen > snaplen:
                self.corrupt += 1
                return
            frame = self._read(caplen)
            if len(frame) < caplen:
                self.truncated += 1
                return
            ts = sec + frac / divisor
            if not 0.0 <= ts <= self.latest:  # before 1970, in the future, NaN: damage
                self.corrupt += 1
                continue
            yield ts, frame, linktype

    def _stream_pcapng(self) -> Iterator[tuple[float, bytes, int]]:
        while True:
            head = self._read(8)
            if len(head) < 8:
                self.truncated += bool(head)
                return
            if head[:4] == SHB:  # a new section: its byte order may differ
                error = self._take_section(head + self._read(4))
                if error:
                    self.truncated += "cut short" in error
                    self.corrupt += "cut short" not in error
                    return
                continue
            btype, blen = struct.unpack(self.e + "II", head)
            if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                self.corrupt += 1
                return
            block = head + self._read(blen - 8)
            if len(block) < blen:
                self.truncated += 1
                return
            if btype not in (1, 2, 3, 6):
                continue  # statistics, name resolution, custom blocks: nothing to replay
            # one whole block: PureCapture's rules parse it (interfaces, packets, corrupt counts)
            self.data, self.pos = block, 0
            yield from PureCapture._pcapng(self)


def replay_stream(engine: Any, opened: Opened) -> dict[str, Any]:
    """Replay the capture on `opened` (standard input or a decompressed file) through `engine`, packet
    by packet. Returns what replay_capture returns; a compressed stream that ends early or is corrupt
    counts as a truncated record (damage, reported after the results), like a capture cut short."""
    name = Path(opened.name)
    try:
        try:
            reader = StreamCapture(opened.stream)
        except ValueError as e:
            raise InputError(f"{opened.name}: {e}") from None
        except DECOMPRESSION_ERRORS as e:
            raise InputError(f"{opened.name}: is not a readable {opened.compression or 'capture'} stream: "
                             f"{e}") from None
        check_linktypes(name, reader.linktypes)
        first = last = 0.0
        packet = engine.packet
        broken = ""
        try:
            for ts, buf, linktype in reader:
                if not reader.packets:
                    first = ts
                reader.packets += 1
                last = ts
                packet(buf, ts, linktype)
        except DECOMPRESSION_ERRORS as e:
            reader.truncated += 1
            broken = f"the {opened.compression} data ends early or is corrupt: {e}"
        if reader.packets:
            engine.advance(last)
            check_linktypes(name, reader.linktypes)
        info: dict[str, Any] = {"format": reader.format, "linktypes": reader.linktypes, "packets": reader.packets,
                                "truncated": reader.truncated, "corrupt": reader.corrupt,
                                "first_ts": first, "last_ts": last}
        if opened.compression:
            info["compression"] = opened.compression
        if broken:
            info["damage"] = broken
        return info
    finally:
        opened.close()


def first_packet_time(opened: Opened) -> float | None:
    """The time of the first packet on `opened` (closed after), None when there is none."""
    try:
        for ts, _, _ in StreamCapture(opened.stream):
            return ts
    except NOT_A_CAPTURE:
        return None
    finally:
        opened.close()
    return None
