"""Capture replay: a pcap/pcapng file through the engine, in packet time.

The fast path hands the whole file to the compiled reader beside this module (`_pcap.PcapFile.feed`,
sources/_pcap.pyx), which parses and updates the compiled flow table in C and returns to Python only
when the table has something for the engine (closed flows, app packets) or after a batch; Python
runs no code per packet. With SLIPSQ_PURE_PYTHON=1 the reference path reads with `PureCapture`
below (the readable twin of the compiled reader) and feeds `Engine.packet` one by one.
This module reads files and reports progress; it never decides anything about the traffic.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from slipsq import twins
from slipsq.errors import InputError
from slipsq.linktypes import ETHERNET, IPV4, IPV6, LINUX_SLL, LINUX_SLL2, RAW_TYPES

Progress = Callable[[int, int], None]
BATCH = 65536          # packets per call into C when nothing is pending
PROGRESS_EVERY = 0.25  # seconds between progress callbacks
STEP_BUDGET = 1024     # hand-ups feed_steps analyses before it returns (for progress) at most
ADVANCE, TAKE = 1, 2   # feed_steps' answers besides 0 (the capture's end)


def replay_capture(engine: Any, path: str | os.PathLike[str],
                   progress: Progress | None = None, processes: int = 1) -> dict[str, Any]:
    """Replay one capture through `engine` (the caller calls `engine.finish()` after all inputs).
    Returns what was read: format, link types, packets, truncated and corrupt records, time span.
    `processes` 2: the reader and flow table run in a second process (slipsq.pipeline; `engine` is
    then a runmode.Offline and this capture its last input), with the same results."""
    p = Path(path)
    table_mod, reader_mod = twins.compiled("slipsq._flowtable"), twins.compiled("slipsq.sources._pcap")
    if table_mod is None or reader_mod is None:
        return _replay_pure(engine, p, progress)
    FlowTable, PcapFile = table_mod.FlowTable, reader_mod.PcapFile

    if not isinstance(engine.table, FlowTable):  # an engine given the twin table: the twin's reader
        return _replay_pure(engine, p, progress)

    try:
        pcap = PcapFile(str(p))
    except (ValueError, OSError) as e:
        raise InputError(f"{p}: {_reason(e)}") from None
    try:
        check_linktypes(p, pcap.linktypes)
        if processes > 1:
            from slipsq import pipeline

            def check(info: dict[str, Any]) -> None:
                if info["packets"]:  # pcapng: its interfaces are known once read
                    check_linktypes(p, info["linktypes"])

            return pipeline.replay_capture(engine, pcap, progress, check=check)
        table = engine.table
        size = pcap.total
        next_report = time.monotonic() + PROGRESS_EVERY
        # `while pcap.feed(table, BATCH): engine.advance(pcap.last_ts)`, its plain advances made by
        # feed_steps (compiled: no Python frame a closed flow); `engine` is a runmode.Offline (its
        # Engine's commands go to its sinks) or a bare Engine (its commands dropped, as advance's were)
        eng, carry_out = getattr(engine, "engine", engine), getattr(engine, "apply", None)
        steps = reader_mod.feed_steps
        while step := steps(eng, pcap, table, BATCH, STEP_BUDGET):
            if step == ADVANCE:
                engine.advance(pcap.last_ts)
            else:
                commands = eng.take()
                if commands and carry_out is not None:
                    carry_out(commands)
            if progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY
                progress(pcap.offset, size)
        if pcap.packets:
            engine.advance(pcap.last_ts)
        if progress is not None:
            progress(size, size)
        if pcap.packets:
            check_linktypes(p, pcap.linktypes)
        return {"format": pcap.format, "linktypes": pcap.linktypes, "packets": pcap.packets,
                "truncated": pcap.truncated, "corrupt": pcap.corrupt,
                "first_ts": pcap.first_ts, "last_ts": pcap.last_ts}
    finally:
        pcap.close()


SUPPORTED_LINKTYPES = {ETHERNET: "Ethernet", **dict.fromkeys(RAW_TYPES, "raw IP"), LINUX_SLL: "Linux SLL",
                       LINUX_SLL2: "Linux SLL2", IPV4: "IPv4", IPV6: "IPv6"}


def feed_steps(engine: Any, pcap: Any, table: Any, batch: int, budget: int) -> int:
    """The one-process replay loop, `while pcap.feed(table, batch): engine.advance(pcap.last_ts)`,
    for as long as each advance is a plain one: Engine._advance's steps (the time, the table's
    hand-ups to the detectors) with no tick due at the time the feed reached. Returns 0 at the
    capture's end; ADVANCE when the last feed needs engine.advance(pcap.last_ts), nothing of it done
    yet (a tick is due); TAKE when the engine holds commands the caller is to take and carry out
    (engine.take()), or after `budget` feeds (a chance to report progress). The readable twin of
    sources/_pcap.feed_steps, which runs the same steps without a Python frame a hand-up."""
    out = engine._out
    for _ in range(budget):
        if not pcap.feed(table, batch):
            return 0
        now = pcap.last_ts
        if (now if now > engine.now else engine.now) >= engine._next_tick:
            return ADVANCE
        if now > engine.now:
            engine.now = now
        while table.pending:  # Engine.drain
            engine._hand_up(table.pop_app(), table.pop_closed())
        if out:
            return TAKE
    return TAKE


def check_linktypes(path: Path, linktypes: list[int]) -> None:
    """A capture none of whose interfaces slipsq can read is an error, not a file of non-IP packets."""
    if linktypes and not any(lt in SUPPORTED_LINKTYPES for lt in linktypes):
        names = ", ".join(sorted(set(SUPPORTED_LINKTYPES.values())))
        raise InputError(f"{path}: unsupported link type {', '.join(map(str, linktypes))} "
                         f"(slipsq reads {names})")


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e)


def _replay_pure(engine: Any, path: Path, progress: Progress | None) -> dict[str, Any]:
    """The reference path: the readable twin of PcapFile below and one `Engine.packet` call per
    packet. (dpkt's readers were the first choice, but dpkt.pcapng.Reader gives every packet the
    first interface's link type and time resolution, and dpkt.pcap.Reader hands a record cut short
    over as if whole; the compiled reader does neither.)"""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: {_reason(e)}") from None
    try:
        reader = PureCapture(data)
    except ValueError as e:
        raise InputError(f"{path}: {e}") from None
    check_linktypes(path, reader.linktypes)
    first = last = 0.0
    next_report = time.monotonic() + PROGRESS_EVERY
    for ts, buf, linktype in reader:
        if not reader.packets:
            first = ts
        reader.packets += 1
        last = ts
        engine.packet(buf, ts, linktype)
        if progress is not None and time.monotonic() >= next_report:
            next_report = time.monotonic() + PROGRESS_EVERY
            progress(reader.pos, len(data))
    if reader.packets:
        engine.advance(last)
        check_linktypes(path, reader.linktypes)
    if progress is not None:
        progress(len(data), len(data))
    return {"format": reader.format, "linktypes": reader.linktypes, "packets": reader.packets,
            "truncated": reader.truncated, "corrupt": reader.corrupt, "first_ts": first, "last_ts": last}


PCAP_MAGICS = {0xA1B2C3D4: 1e6, 0xA1B23C4D: 1e9}
MAX_RECORD = 262144  # libpcap's largest snaplen: a longer record length means a corrupt file
# A record dated more than this past the time the file is opened is damage, counted corrupt and
# skipped: nothing is captured in the future, and one such timestamp (a seconds field of 0xFFFFFFFF:
# 2106) would move replay's time past the end of every block and flow (review: a capture with one
# blocked nothing, exit 0). A day leaves room for a capture host whose clock is off by hours.
FUTURE_SLACK = 86400.0


class PureCapture:
    """pcap/pcapng records as (ts, frame, link type), by the compiled PcapFile's rules."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.packets, self.truncated, self.corrupt = data, 0, 0, 0, 0
        self.latest = time.time() + FUTURE_SLACK
        self.linktypes: list[int] = []
        self.ifaces: list[tuple[int, float, float]] = []  # (link type, divisor, offset)
        self.last_ts = 0.0
        if not data:
            raise ValueError("the file is empty, not a capture")
        if len(data) < 4:
            raise ValueError(f"too short to be a capture ({len(data)} bytes)")
        for e in ("<", ">"):
            (magic,) = struct.unpack_from(e + "I", data)
            if magic in PCAP_MAGICS:
                if len(data) < 24:
                    raise ValueError(f"the pcap file header is cut short ({len(data)} of 24 bytes)")
                (major,) = struct.unpack_from(e + "H", data, 4)
                if major != 2:
                    raise ValueError(f"unsupported pcap version {major}")
                self.e, self.format, self.divisor = e, "pcap", PCAP_MAGICS[magic]
                self.snaplen, network = struct.unpack_from(e + "II", data, 16)
                self.linktypes.append(network & 0x0FFFFFFF)
                self.pos = 24
                return
        if data[:4] != b"\x0a\x0d\x0d\x0a":
            raise ValueError(f"not a pcap or pcapng capture (it starts with {data[:4].hex()})")
        self.format = "pcapng"
        error = self._section()
        if error:
            raise ValueError(error)

    def _section(self) -> str:
        d, at = self.data, self.pos
        if len(d) - at < 28:
            return "the pcapng section header is cut short"
        bom = d[at + 8:at + 12]
        if bom not in (b"\x4d\x3c\x2b\x1a", b"\x1a\x2b\x3c\x4d"):
            return "the pcapng section header has no valid byte-order magic"
        self.e = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
        (blen,) = struct.unpack_from(self.e + "I", d, at + 4)
        if blen < 28 or blen % 4:
            return "the pcapng section header has an impossible length"
        if at + blen > len(d):
            return "the pcapng section header is cut short"
        if struct.unpack_from(self.e + "H", d, at + 12)[0] != 1:
            return "the pcapng version is not 1.x"
        self.ifaces = []
        self.pos = at + blen
        return ""

    def __iter__(self) -> Iterator[tuple[float, bytes, int]]:
        return self._pcap() if self.format == "pcap" else self._pcapng()

    def _pcap(self) -> Iterator[tuple[float, bytes, int]]:
        d, e = self.data, self.e
        while self.pos < len(d):
            if len(d) - self.pos < 16:
                self.truncated += 1
                return
            sec, frac, caplen = struct.unpack_from(e + "III", d, self.pos)
            if caplen > MAX_RECORD and caplen > self.snaplen:
                self.corrupt += 1
                return
            if 16 + caplen > len(d) - self.pos:
                self.truncated += 1
                return
            start = self.pos + 16
            self.pos = start + caplen
            ts = sec + frac / self.divisor
            if not 0.0 <= ts <= self.latest:  # before 1970, in the future, NaN: damage
                self.corrupt += 1
                continue
            yield ts, d[start:start + caplen], self.linktypes[0]

    def _pcapng(self) -> Iterator[tuple[float, bytes, int]]:
        d = self.data
        while self.pos < len(d):
            at, left = self.pos, len(d) - self.pos
            if left < 12:
                self.truncated += 1
                return
            if d[at:at + 4] == b"\x0a\x0d\x0d\x0a":
                error = self._section()
                if error:
                    self.truncated += "cut short" in error
                    self.corrupt += "cut short" not in error
                    return
                continue
            e = self.e
            btype, blen = struct.unpack_from(e + "II", d, at)
            if blen < 12 or blen % 4:
                self.corrupt += 1
                return
            if blen > left:
                self.truncated += 1
                return
            self.pos = at + blen
            if btype == 1 and blen >= 20:
                self._interface(at, blen)
            elif btype in (6, 2):
                if blen < 32:
                    self.corrupt += 1
                    continue
                iface = struct.unpack_from(e + ("I" if btype == 6 else "H"), d, at + 8)[0]
                hi, lo, caplen = struct.unpack_from(e + "III", d, at + 12)
                if iface >= len(self.ifaces) or 28 + caplen > blen - 4:
                    self.corrupt += 1
                    continue
                linktype, divisor, offset = self.ifaces[iface]
                ts = offset + ((hi << 32) | lo) / divisor
                if not 0.0 <= ts <= self.latest:  # before 1970, in the future, NaN: damage
                    self.corrupt += 1
                    continue
                self.last_ts = ts
                yield ts, d[at + 28:at + 28 + caplen], linktype
            elif btype == 3:
                if not self.ifaces:
                    self.corrupt += 1
                    continue
                caplen = min(struct.unpack_from(e + "I", d, at + 8)[0], blen - 16)
                yield self.last_ts, d[at + 12:at + 12 + caplen], self.ifaces[0][0]

    def _interface(self, at: int, blen: int) -> None:
        d, e = self.data, self.e
        divisor, offset = 1e6, 0.0
        o, end = at + 16, at + blen - 4
        while o + 4 <= end:
            code, olen = struct.unpack_from(e + "HH", d, o)
            if code == 0 or o + 4 + olen > end:
                break
            if code == 9 and olen >= 1:  # if_tsresol: 10^-v, or 2^-v when the top bit is set
                v = d[o + 4]
                divisor = 1.0
                for _ in range(v & 0x7F):
                    divisor *= 2.0 if v & 0x80 else 10.0
            elif code == 14 and olen >= 8:  # if_tsoffset
                offset = float(struct.unpack_from(e + "q", d, o + 4)[0])
            o += 4 + ((olen + 3) & ~3)
        linktype = struct.unpack_from(e + "H", d, at + 8)[0]
        self.ifaces.append((linktype, divisor, offset))
        if linktype not in self.linktypes:
            self.linktypes.append(linktype)
