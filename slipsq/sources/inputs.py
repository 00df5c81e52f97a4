"""The inputs of one replay: what each is, in which order they are read, and reading each one.

Each input is one of three kinds, known from its first (decompressed) bytes or from --format:
"pcap" (a plain capture file: the compiled reader maps it), "pcap-stream" (a capture on standard
input or in a gzip/xz/zstd file: slipsq.sources.pcapstream) or "flows" (the flow-file readers).

Several inputs make one timeline, so they are read in the order of their first packet or flow,
whatever order the command line gives (rotated captures, `tcpdump -G`, are the common case). Inputs
whose times overlap cannot be made one timeline by reading them one after another (it would take a
packet-by-packet merge, i.e. the slow reader for every packet): the later one is refused, by name,
and --separate analyses each input on its own. Standard input has no first time until it is read, so
it must be the only input. This module reads; it never decides anything about the traffic.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipsq.errors import InputError
from slipsq.flow import Flow
from slipsq.records import iso
from slipsq.sources.flowfiles.streams import COMPRESSED, Opened, binary_kind, open_input

Progress = Callable[[int, int], None]
FIRST_TIME_ITEMS = 10_000  # rows looked at for a flow file's first time (bad rows may come first)


@dataclass
class Input:
    path: str
    kind: str  # "pcap", "pcap-stream" or "flows"
    opened: Opened | None = None  # standard input, opened (and its first bytes looked at) once
    first_ts: float | None = None


def classify(path: str, fmt: str) -> Input:
    """What `path` is, from --format `fmt` and its first bytes. InputError (no bytes of the input in
    the message) for a missing, unreadable or, with --format pcap, non-capture input."""
    if path == "-":
        if sys.stdin is not None and sys.stdin.isatty():
            raise InputError("standard input is a terminal, not a capture: pipe one into it (e.g. tcpdump -i "
                             "eth0 -w - | slipsq replay -), or give files")
        opened = open_input("-")
        if opened.kind == "pcap":
            if fmt not in ("auto", "pcap"):
                opened.close()
                raise InputError(f"<stdin>: is a packet capture, not {fmt}")
            return Input(path, "pcap-stream", opened)
        if fmt == "pcap":
            opened.close()
            raise InputError("<stdin>: is not a pcap or pcapng capture (no capture magic number)")
        return Input(path, "flows", opened)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: no such file or directory")
    if p.is_fifo():  # read once, as it comes: what standard input is for
        raise InputError(f"{path} is a named pipe: give it as standard input (slipsq replay - < {path})")
    if p.is_file():
        try:
            with p.open("rb") as fh:
                head = fh.read(8)
        except PermissionError:
            raise InputError(f"{path}: permission denied") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read: {e.strerror}") from None
        kind = binary_kind(head)
        if kind in COMPRESSED:
            opened = open_input(path)
            kind = opened.kind
            opened.close()
            if kind == "pcap":
                return _capture(path, fmt, "pcap-stream")
        elif kind == "pcap":
            return _capture(path, fmt, "pcap")
    if fmt == "pcap":
        if p.is_dir():
            raise InputError(f"{path} is a directory, not a packet capture")
        raise InputError(f"{path} is not a pcap or pcapng file (unknown magic number)")
    return Input(path, "flows")


def _capture(path: str, fmt: str, kind: str) -> Input:
    if fmt not in ("auto", "pcap"):
        raise InputError(f"{path} is a packet capture, not {fmt}")
    return Input(path, kind)


def plan(paths: list[str], fmt: str) -> list[Input]:
    """Every input classified (before any output) and put in time order (see the module's doc)."""
    inputs = [classify(path, fmt) for path in paths]
    if len(inputs) < 2:
        return inputs
    if any(i.path == "-" for i in inputs):
        for i in inputs:
            if i.opened is not None:
                i.opened.close()
        raise InputError("standard input cannot be put in time order with other inputs: give it alone, "
                         "or pass --separate to analyse each input on its own")
    for i in inputs:
        i.first_ts = first_time(i, fmt)
    # stable: inputs without a first time (no packets, no flows) keep their place among equals
    return sorted(inputs, key=lambda i: (i.first_ts is None, i.first_ts or 0.0))


def first_time(inp: Input, fmt: str) -> float | None:
    """The time of an input file's first packet or flow (None: it has none that can be read)."""
    if inp.kind != "flows":
        from slipsq.sources.pcapstream import first_packet_time

        return first_packet_time(open_input(inp.path))
    from slipsq.sources.flowfiles import open_flow_source

    try:
        source = open_flow_source(inp.path, fmt)
    except InputError:
        return None
    try:
        for n, item in enumerate(source):
            if isinstance(item, Flow):
                return item.start
            if n >= FIRST_TIME_ITEMS:
                break
        return None
    except InputError:
        return None
    finally:
        source.close()


def overlap(inp: Input, now: float, before: list[Input]) -> str | None:
    """Why `inp` cannot follow the inputs `before` (read up to time `now`) on one timeline, or None."""
    if any(i.path == inp.path for i in before):
        return f"{inp.path}: not read again: it was given twice"
    if inp.first_ts is None or not before or inp.first_ts >= now:
        return None
    captures = all(i.kind != "flows" for i in [*before, inp])  # mergecap merges captures only
    names = [i.path for i in before]
    return (f"{inp.path}: not read: it starts at {iso(inp.first_ts)}, before {names[-1]} ends ({iso(now)}), "
            "and inputs are read one after another on one timeline; merge them into one input first"
            + (f" (e.g. mergecap -w merged.pcap {' '.join(names)} {inp.path})" if captures else "")
            + ", or pass --separate to analyse each on its own")


def replay_input(engine: Any, inp: Input, fmt: str, progress: Progress | None = None,
                 processes: int = 1) -> dict[str, Any]:
    """Read `inp` through `engine` (the caller calls engine.finish() after the last input). Returns
    what was read; a "damage" entry says what was lost (slipsq.output.results.damage). `processes`:
    for a capture, sources.pcap.replay_capture's."""
    if inp.kind == "pcap":
        from slipsq.sources.pcap import replay_capture

        return replay_capture(engine, inp.path, progress=progress, processes=processes)
    if inp.kind == "pcap-stream":
        from slipsq.sources.pcapstream import replay_stream

        return replay_stream(engine, inp.opened or open_input(inp.path))
    return _replay_flows(engine, inp, fmt)


def _replay_flows(engine: Any, inp: Input, fmt: str) -> dict[str, Any]:
    from slipsq.sources.flowfiles import open_flow_source, source_from

    source = source_from(inp.opened, fmt) if inp.opened is not None else open_flow_source(inp.path, fmt)
    flow, app = engine.flow, engine.app
    for item in source:
        if isinstance(item, Flow):
            flow(item)
        else:
            app(item)
    info: dict[str, Any] = {"format": source.format, **source.counts}
    note = source.damage()
    if note:  # which rows were bad and why (file:line), so the admin can fix the exporter
        info["damage"] = note
    return info
