"""The activity log: what `slipsq timeline` and `slipsq report` are built from, one JSON object per
line, the same format from a replay folder (`slipsq replay -o DIR`: DIR/activity.jsonl) and from a
running gateway (its state directory: activity.jsonl, rotated by size like alerts.jsonl, so a busy
week cannot fill a Pi's SD card; the newest lines are the last hours).

    {"k": "flow",    "ts": start, "end": .., "proto": .., "src": .., "sport": .., "dst": .., "dport": ..,
                     "sbytes": .., "dbytes": .., "pkts": .., "state": ..}
    {"k": "dns",     "ts": .., "host": who asked, "name": .., "rcode": .., "answers": [..]}
    {"k": "alert",   ...records.Alert.to_dict()}
    {"k": "block",   "ts": .., "ip": .., "duration": .., "reason": .., "by": .., "times": ..}
    {"k": "unblock", "ts": .., "ip": .., "reason": .., "who": ..}

Written by a sink: in replay as the commands come, inline by the daemon's worker thread, never on
the packet loop. Reading skips lines that are not whole JSON objects with a time (a log being
written ends in a half line; a hand-edited one may hold anything) and counts them. This module
writes and reads lines; it decides nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from slipsq.config import Option, positive
from slipsq.errors import InputError
from slipsq.flow import Flow
from slipsq.output.alertlog import RotatingAlertLog
from slipsq.records import Alert, Block, Query, Unblock
from slipsq.sink import Sink

FILE_NAME = "activity.jsonl"
MAX_TS = 1e11  # a time past year 5000 (or Infinity, which json reads) is no record slipsq wrote
MAX_MENTIONS = 64  # addresses a text prefilter looks for; with more, every line is parsed

OPTIONS = (
    Option("output.activity", True, "inline: keep an activity log (flows, DNS answers, alerts, blocks) in the "
           "state directory, for `slipsq timeline` and `slipsq report`"),
    Option("output.activity_max_bytes", 16_000_000, "activity.jsonl is rotated when it would grow past this",
           positive, "> 0"),
    Option("output.activity_files", 4, "rotated activity.jsonl files kept (activity.jsonl.1 ... .N): the log "
           "holds at most (N + 1) x activity_max_bytes", lambda v: v >= 0, ">= 0"),
)


# --- commands to records ------------------------------------------------------------------------

def flow_record(f: Flow) -> dict[str, Any]:
    return {"k": "flow", "ts": round(f.start, 6), "end": round(f.end, 6), "proto": f.proto, "src": f.saddr,
            "sport": f.sport, "dst": f.daddr, "dport": f.dport, "sbytes": f.sbytes, "dbytes": f.dbytes,
            "pkts": f.pkts, "state": f.state}


def query_record(q: Query) -> dict[str, Any]:
    return {"k": "dns", "ts": round(q.ts, 6), "host": q.host, "name": q.name, "rcode": q.rcode,
            "answers": list(q.answers)}


def alert_record(a: Alert) -> dict[str, Any]:
    return {"k": "alert", **a.to_dict()}


def block_record(b: Block) -> dict[str, Any]:
    return {"k": "block", "ts": round(b.ts, 6), "ip": b.ip, "duration": b.duration, "reason": b.reason,
            "by": b.by, "times": b.times}


def unblock_record(u: Unblock) -> dict[str, Any]:
    return {"k": "unblock", "ts": round(u.ts, 6), "ip": u.ip, "reason": u.reason, "who": u.who}


def dumps(record: dict[str, Any]) -> str:
    # ensure_ascii: a hostile name's control characters stay escaped inside the file too
    return json.dumps(record, separators=(",", ":"))


class ActivityWriter(Sink):
    """The activity log on a text stream (replay's DIR/activity.jsonl)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write_line(self, line: str) -> None:
        self.stream.write(line + "\n")

    def flow(self, flow: Flow) -> None:
        self.write_line(dumps(flow_record(flow)))

    def query(self, query: Query) -> None:
        self.write_line(dumps(query_record(query)))

    def alert(self, alert: Alert) -> None:
        self.write_line(dumps(alert_record(alert)))

    def block(self, block: Block) -> None:
        self.write_line(dumps(block_record(block)))

    def unblock(self, unblock: Unblock) -> None:
        self.write_line(dumps(unblock_record(unblock)))


class RotatingActivityLog(ActivityWriter):
    """The gateway's activity log: `directory`/activity.jsonl, rotated by size with `keep` old files
    (RotatingAlertLog's rotation and its never-raise rule: a full disk is reported once)."""

    def __init__(self, directory: str | Path, max_bytes: int = 16_000_000, keep: int = 4,
                 errors: TextIO | None = None) -> None:
        self.log = RotatingAlertLog(directory, max_bytes, keep, errors)
        self.log.path = Path(directory) / FILE_NAME
        self.path = self.log.path

    def write_line(self, line: str) -> None:
        self.log.write_line(line)

    def close(self) -> None:
        self.log.close()


def gateway_sink(cfg: Any, state_dir: str | Path) -> RotatingActivityLog | None:
    """The daemon's activity log per the config (None when output.activity is false)."""
    if not cfg["output.activity"]:
        return None
    return RotatingActivityLog(state_dir, cfg["output.activity_max_bytes"], cfg["output.activity_files"])


# --- reading ------------------------------------------------------------------------------------

def log_files(folder: str | Path) -> list[Path]:
    """The activity files of a folder, oldest first: activity.jsonl.N ... .1, activity.jsonl."""
    folder = Path(folder)
    rotated = []
    for p in folder.glob(FILE_NAME + ".*"):
        suffix = p.name[len(FILE_NAME) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if (folder / FILE_NAME).is_file():
        files.append(folder / FILE_NAME)
    return files


# a line as dumps() writes it, "k" then a time slipsq can write: taken as whole unparsed by the
# count of unreadable lines (json.loads of every line of a full gateway log costs a second)
_WRITTEN = re.compile(r'\{"k":"[a-z]+","ts":(?:0|[1-9][0-9]{0,10})(?:\.[0-9]+)?,.*\}$')


class Reader:
    """The records of some activity files, read again on each iteration (the timeline reads twice:
    first which hosts have evidence, then their stories), and, per file, how many lines were no
    record (not a JSON object with a usable time), over all its lines, although the prefilters of a
    pass skip most lines unparsed (a report's second pass, which looks for the hosts with evidence,
    parses none when there are none: a log whose every time was damaged must not read as a quiet
    network). A line in the shape slipsq writes is taken as whole unless a pass parses it.

    `live`: a gateway's log, still written: the last line of its newest file, without its newline
    yet, is a record being written, not damage."""

    def __init__(self, files: list[Path], since: float = float("-inf"), live: bool = False) -> None:
        self.files = files
        self.since = since
        self.live = live
        self._lines: dict[Path, int] = {}  # lines that are not blank, per file
        self._bad: dict[Path, int] = {}  # unreadable lines not in the written shape (any pass finds them all)
        self._odd: set[tuple[Path, int]] = set()  # unreadable lines in the written shape that a pass parsed

    @classmethod
    def folder(cls, folder: str | Path, since: float = float("-inf"), what: str = "",
               live: bool = False) -> Reader:
        files = log_files(folder)
        if not files:
            hint = what or "give the folder of `slipsq replay -o DIR`, or the state directory of a gateway"
            raise InputError(f"{folder}: no {FILE_NAME} there ({hint})")
        return cls(files, since, live)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.select()

    @property
    def skipped(self) -> int:
        """The unreadable lines found so far, in every file."""
        return sum(self._bad.values()) + len(self._odd)

    @property
    def unreadable(self) -> dict[str, tuple[int, int]]:
        """{file: (unreadable lines, lines)} of the files read so far that held unreadable lines."""
        out = {}
        for path, lines in self._lines.items():
            bad = self._bad.get(path, 0) + sum(1 for p, _ in self._odd if p == path)
            if bad:
                out[str(path)] = (bad, lines)
        return out

    def damage(self) -> list[str]:
        """One line per file that held unreadable lines, for after the results (as `slipsq replay`
        names a damaged input)."""
        return damage_lines(self.unreadable)

    def last_ts(self) -> float | None:
        """The time of the newest record (where "the last hour" of a replayed capture ends), for any
        line: one nested past the JSON parser's depth ("[[[[...")
        is unreadable, and when the end of the newest file holds no record (a damaged last line of
        64 kB), the time is looked for in the whole file, then in the older ones."""
        for path in reversed(self.files):
            try:
                with path.open("rb") as fh:
                    fh.seek(max(0, fh.seek(0, 2) - 65536))
                    found = _newest(fh.read().decode("utf-8", "replace").splitlines())
                    if found is None and fh.tell() > 65536:
                        fh.seek(0)
                        found = _newest(line.decode("utf-8", "replace") for line in fh)
            except OSError:
                continue
            if found is not None:
                return found
        return None

    def select(self, kinds: Collection[str] | None = None, mentions: Collection[str] | None = None
               ) -> Iterator[dict[str, Any]]:
        """The records, or only those of `kinds`, or only lines that mention one of a few addresses
        (a prefilter on the text: most lines of a busy log are skipped without parsing them; the
        caller still checks the fields), counting unreadable lines per file."""
        since = self.since
        prefixes = tuple(f'{{"k":"{k}"' for k in kinds) if kinds is not None else None
        words = list(mentions) if mentions is not None and len(mentions) <= MAX_MENTIONS else None
        newest = self.files[-1] if self.files else None
        for path in self.files:
            try:
                fh = path.open(encoding="utf-8", errors="replace")
            except FileNotFoundError:  # rotated away between listing and opening
                continue
            except OSError as e:
                raise InputError(f"cannot read {path}: {e.strerror}") from None
            writing = self.live and path == newest
            lines = bad = 0
            with fh:
                for n, line in enumerate(fh, 1):
                    lines += 1
                    # dumps() writes "k" first: another kind's line is skipped unparsed
                    skip = ((prefixes is not None and line.startswith('{"k":"') and not line.startswith(prefixes))
                            or (words is not None and not any(w in line for w in words)))
                    if skip and _WRITTEN.match(line) is not None:
                        continue
                    rec = _record(line)
                    if rec is None:
                        if not line.strip():
                            lines -= 1
                        elif writing and not line.endswith("\n"):
                            lines -= 1  # the record being written
                        elif _WRITTEN.match(line) is None:
                            bad += 1
                        else:
                            self._odd.add((path, n))
                        continue
                    if not skip and (rec["ts"] >= since or (rec.get("k") == "flow" and is_time(rec.get("end"))
                                                            and rec["end"] >= since)):
                        yield rec
            self._lines[path], self._bad[path] = lines, bad


def _newest(lines: Iterable[str]) -> float | None:
    """The latest time (a flow's end, else the record's) of the records among `lines`."""
    times = []
    for line in lines:
        rec = _record(line)
        if rec is not None:
            end: Any = rec.get("end")
            times.append(max(float(rec["ts"]), float(end) if is_time(end) else float("-inf")))
    return max(times, default=None)


def _record(line: str) -> dict[str, Any] | None:
    """The record of one line, or None when it is no JSON object with a usable time."""
    try:
        rec = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser's depth
        return None
    return rec if isinstance(rec, dict) and is_time(rec.get("ts")) else None


def damage_lines(unreadable: dict[str, tuple[int, int]]) -> list[str]:
    """`{file: (unreadable lines, lines)}` as one line per file."""
    out = []
    for path, (bad, lines) in unreadable.items():
        what = f"all {lines} lines" if bad == lines else f"{bad} of {lines} lines"
        rest = "nothing could be read from it" if bad == lines else "the rest was read"
        out.append(f"{path}: damaged activity log: {what} unreadable (not a JSON object with a time), skipped; {rest}")
    return out


def is_time(v: Any) -> bool:
    """A record's time: a number of seconds since 1970 that a date can be made of (not NaN or inf)."""
    return isinstance(v, (int, float)) and 0 <= v < MAX_TS


def _num(v: Any) -> float:
    return float(v) if is_time(v) else float("-inf")
