"""Capture replay: a pcap/pcapng file through the engine, in packet time.

The fast path hands the whole file to the compiled reader (`_flowtable.PcapFile.feed`), which parses
and updates the flow table in C and returns to Python only when the table has something for the
engine (closed flows, app packets) or after a batch; Python runs no code per packet. With
SLIPSQ_PURE_PYTHON=1 the reference path reads with dpkt and feeds `Engine.packet` one by one.
This module reads files and reports progress; it never decides anything about the traffic.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from slipsq.errors import InputError

Progress = Callable[[int, int], None]
BATCH = 65536          # packets per call into C when nothing is pending
PROGRESS_EVERY = 0.25  # seconds between progress callbacks


def replay_capture(engine: Any, path: str | os.PathLike[str],
                   progress: Progress | None = None) -> dict[str, Any]:
    """Replay one capture through `engine` (the caller calls `engine.finish()` after all inputs).
    Returns what was read: format, link types, packets, truncated and corrupt records, time span."""
    p = Path(path)
    if os.environ.get("SLIPSQ_PURE_PYTHON") == "1":
        return _replay_pure(engine, p, progress)
    from slipsq._flowtable import PcapFile

    try:
        pcap = PcapFile(str(p))
    except (ValueError, OSError) as e:
        raise InputError(f"{p}: {_reason(e)}") from None
    try:
        table = engine.table
        size = pcap.total
        next_report = time.monotonic() + PROGRESS_EVERY
        while pcap.feed(table, BATCH):
            engine.advance(pcap.last_ts)
            if progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY
                progress(pcap.offset, size)
        if pcap.packets:
            engine.advance(pcap.last_ts)
        if progress is not None:
            progress(size, size)
        return {"format": pcap.format, "linktypes": pcap.linktypes, "packets": pcap.packets,
                "truncated": pcap.truncated, "corrupt": pcap.corrupt,
                "first_ts": pcap.first_ts, "last_ts": pcap.last_ts}
    finally:
        pcap.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e)


def _replay_pure(engine: Any, path: Path, progress: Progress | None) -> dict[str, Any]:
    """The reference path: dpkt readers and one `Engine.packet` call per packet. dpkt's pcapng
    reader knows one interface only: every packet gets the first interface's link type."""
    import dpkt

    try:
        fh = path.open("rb")
    except OSError as e:
        raise InputError(f"{path}: {_reason(e)}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        magic = fh.read(4)
        fh.seek(0)
        if not magic:
            raise InputError(f"{path}: the file is empty, not a capture")
        try:
            reader: Any = dpkt.pcapng.Reader(fh) if magic == b"\x0a\x0d\x0d\x0a" else dpkt.pcap.Reader(fh)
        except (ValueError, dpkt.Error) as e:
            raise InputError(f"{path}: not a pcap or pcapng capture ({e})") from None
        linktype = reader.datalink()
        counts = {"packets": 0, "truncated": 0, "corrupt": 0}
        first = last = 0.0
        next_report = time.monotonic() + PROGRESS_EVERY
        for ts, buf in _records(reader, counts):
            if not counts["packets"]:
                first = ts
            counts["packets"] += 1
            last = ts
            engine.packet(buf, ts, linktype)
            if progress is not None and time.monotonic() >= next_report:
                next_report = time.monotonic() + PROGRESS_EVERY
                progress(fh.tell(), size)
        if counts["packets"]:
            engine.advance(last)
        if progress is not None:
            progress(size, size)
    fmt = "pcapng" if magic == b"\x0a\x0d\x0d\x0a" else "pcap"
    return {"format": fmt, "linktypes": [linktype], **counts, "first_ts": first, "last_ts": last}


def _records(reader: Any, counts: dict[str, int]) -> Iterator[tuple[float, bytes]]:
    """dpkt's records, with a cut-short last record counted instead of raised."""
    import dpkt

    it = iter(reader)
    while True:
        try:
            ts, buf = next(it)
        except StopIteration:
            return
        except (dpkt.Error, ValueError, struct.error):
            counts["truncated"] += 1
            return
        yield ts, buf

