"""Flow files: Argus binetflow (files and `ra` streams), Zeek logs, Suricata eve.json, nfdump.

    source = open_flow_source("capture.binetflow")      # or a Zeek folder, eve.json, "-" for stdin
    for item in source:                                  # Flow and AppEvent, in input order
        engine.flow(item) if isinstance(item, Flow) else engine.app(item)
    engine.finish(); print(source.counts, source.warning())

The format is detected from the content (magic bytes, first line), not from the name; gzip files are
read transparently (also xz and zstd). A pcap is recognised (detect_format returns "pcap") so the caller can hand it to
the pcap source. These readers skip decode and the flow table: the rows are already flows. They never
decide anything, and never raise anything but InputError (a message naming the file and line).
"""

from __future__ import annotations

import os
import zlib

from slipsq.errors import InputError
from slipsq.sources.flowfiles.base import FlowSource, Item, first_record
from slipsq.sources.flowfiles.binetflow import BinetflowSource, is_header
from slipsq.sources.flowfiles.nfdump import NfdumpSource
from slipsq.sources.flowfiles.streams import Opened, binary_kind, open_input
from slipsq.sources.flowfiles.suricata import SuricataSource, is_eve
from slipsq.sources.flowfiles.zeek import ZeekSource, is_zeek_json
from slipsq.sources.flowfiles.zeek_folder import ZeekFolderSource, find_log

__all__ = ["FORMATS", "FlowSource", "Item", "detect_format", "detect_text", "open_flow_source", "source_from"]

FORMATS = ("binetflow", "zeek", "suricata", "nfdump")
KNOWN = "Argus binetflow, Zeek conn/dns log or folder, Suricata eve.json, nfdump or pcap"
ZEEK_DIRECTIVES = ("#separator", "#set_separator", "#empty_field", "#unset_field", "#path", "#open",
                   "#fields", "#types")


def detect_text(first: str) -> str | None:
    """The format of a text input from its first non-blank line, or None."""
    s = first.strip().lstrip("\ufeff")
    if s.startswith("#"):
        return "zeek" if s.startswith(ZEEK_DIRECTIVES) else None
    if s.startswith("{"):
        record = first_record(s)
        if is_eve(record):
            return "suricata"
        return "zeek" if is_zeek_json(record) else None
    return "binetflow" if is_header(s) else None


def detect_format(path_or_first_bytes: str | os.PathLike[str] | bytes) -> str:
    """'binetflow', 'zeek', 'suricata', 'nfdump' or 'pcap', from a path (a file or a Zeek log folder)
    or from an input's first bytes. InputError when it is none of these."""
    if isinstance(path_or_first_bytes, bytes | bytearray):
        return _detect_bytes(bytes(path_or_first_bytes))
    path = os.fspath(path_or_first_bytes)
    if path == "-":
        raise InputError("<stdin>: the format of standard input is detected when it is opened")
    if os.path.isdir(path):
        if find_log(path, "conn") is None:
            raise InputError(f"{path}: is a directory without conn.log (not a Zeek log folder)")
        return "zeek"
    opened = open_input(path)
    try:
        return _detect_opened(opened)
    finally:
        opened.close()


def _detect_bytes(data: bytes) -> str:
    kind = binary_kind(data[:8])
    if kind == "gzip":
        try:
            data = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 1 << 20)
        except zlib.error as e:
            raise InputError(f"input: is not a readable gzip stream: {e}") from None
        kind = binary_kind(data[:8])
    if kind in ("pcap", "nfdump"):
        return kind
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            fmt = detect_text(line)
            if fmt is None:
                raise InputError(f"input: is not a flow file slipsq can read ({KNOWN}): starts {line[:60]!r}")
            return fmt
    raise InputError("input: is empty")


def _detect_opened(opened: Opened) -> str:
    if opened.kind is not None:
        if opened.gzipped and opened.kind == "nfdump":
            raise InputError(f"{opened.name}: is a {opened.compression}-compressed nfdump file: decompress it "
                             "first (nfdump reads files by name)")
        return opened.kind
    fmt = detect_text(opened.first)
    if fmt is None:
        head = opened.first.strip()[:60]
        if not head.isprintable():  # binary data: its bytes would only garble the terminal
            raise InputError(f"{opened.name}: is binary data, not a capture or flow file slipsq can read "
                             f"({KNOWN})")
        raise InputError(f"{opened.name}:{opened.lineno}: is not a flow file slipsq can read ({KNOWN}): "
                         f"starts {head!r}")
    return fmt


def open_flow_source(path: str, fmt: str = "auto") -> FlowSource:
    """Open a flow file, a Zeek log folder or standard input ("-") as a FlowSource.

    fmt: "auto" (detect from content) or one of FORMATS. InputError for anything unreadable."""
    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(f"unknown flow format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    path = os.fspath(path)
    if path != "-" and os.path.isdir(path):
        if fmt not in ("auto", "zeek"):
            raise InputError(f"{path}: is a directory; only a Zeek log folder can be read as a directory")
        return ZeekFolderSource(path)
    opened = open_input(path)
    try:
        return _open(opened, fmt)
    except BaseException:
        opened.close()
        raise


def source_from(opened: Opened, fmt: str = "auto") -> FlowSource:
    """A FlowSource on an input already opened (standard input, whose first bytes were looked at)."""
    if fmt != "auto" and fmt not in FORMATS:
        opened.close()
        raise InputError(f"unknown flow format {fmt!r}: use auto or one of {', '.join(FORMATS)}")
    try:
        return _open(opened, fmt)
    except BaseException:
        opened.close()
        raise


def _open(opened: Opened, fmt: str) -> FlowSource:
    name = opened.name
    if opened.kind == "pcap":
        raise InputError(f"{name}: is a packet capture (pcap), not a flow file: replay it with `slipsq replay`")
    if opened.kind == "nfdump":
        if fmt not in ("auto", "nfdump"):
            raise InputError(f"{name}: is an nfdump file, not {fmt}")
        if opened.path is None or opened.gzipped:
            raise InputError(f"{name}: nfdump data must be a plain file (nfdump reads it by name)")
        opened.close()
        return NfdumpSource(opened.path)
    if fmt == "nfdump":
        raise InputError(f"{name}: is not an nfdump file (no nfdump file header)")
    actual = _detect_opened(opened) if fmt == "auto" else fmt
    source: FlowSource
    if actual == "binetflow":
        source = BinetflowSource(name, opened.first, opened.lines(), opened.lineno)
    elif actual == "zeek":
        source = ZeekSource(name, opened.first, opened.lines(), opened.lineno)
    else:
        source = SuricataSource(name, opened.first, opened.lines(), opened.lineno)
    source.on_close(opened.close)
    source.probes.append(opened.ending)
    return source
