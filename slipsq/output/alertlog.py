"""alerts.jsonl on a gateway: one JSON object per alert (records.Alert.to_json), in the logs (or
state) directory, rotated by size with a bounded number of old files, so a noisy week cannot fill a
Raspberry Pi's SD card:

    alerts.jsonl  alerts.jsonl.1  ...  alerts.jsonl.<keep>     (newest first; the oldest is deleted)

Each line is written whole and flushed (a `tail -f` or a log shipper sees it at once). A write that
fails (disk full, the directory removed) is counted and reported once, never raised: alerts still go
to the journal, and inspection must go on. Never called from the packet loop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from slipsq.records import Alert
from slipsq.sink import Sink

FILE_NAME = "alerts.jsonl"


def rotate(path: Path, keep: int) -> None:
    """alerts.jsonl → .1 → .2 … → .<keep>; what would become .<keep+1> is deleted. keep = 0: the
    file is simply truncated by the caller (no old files)."""
    if keep <= 0:
        return
    oldest = path.with_name(f"{path.name}.{keep}")
    oldest.unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        src = path.with_name(f"{path.name}.{n}")
        if src.exists():
            src.rename(path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        path.rename(path.with_name(f"{path.name}.1"))


class RotatingAlertLog(Sink):
    """A sink that appends every alert to `directory`/alerts.jsonl, at most `max_bytes` per file
    (a line longer than that still gets a file of its own) and `keep` old files. `name` and `line`
    make it another file in another format (output.format_log: eve.json in EVE, for instance)."""

    def __init__(self, directory: str | Path, max_bytes: int = 10_000_000, keep: int = 5,
                 errors: TextIO | None = None, name: str = FILE_NAME,
                 line: Callable[[Alert], str] = Alert.to_json) -> None:
        if max_bytes <= 0 or keep < 0:
            raise ValueError("max_bytes must be > 0 and keep >= 0")
        self.path = Path(directory) / name
        self.line = line
        self.max_bytes = max_bytes
        self.keep = keep
        self.errors = errors
        self.failed = 0
        self._fh: TextIO | None = None
        self._size = 0

    def _open(self) -> TextIO:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # 0640: alerts name hosts of the network; root and the adm group (log readers) only
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            self._fh = os.fdopen(fd, "a", encoding="utf-8")
            self._size = os.fstat(fd).st_size
        return self._fh

    def write_line(self, line: str) -> None:
        data = line + "\n"
        n = len(data.encode("utf-8"))
        try:
            fh = self._open()
            if self._size and self._size + n > self.max_bytes:
                fh.close()
                self._fh = None
                if self.keep:
                    rotate(self.path, self.keep)
                else:
                    self.path.unlink(missing_ok=True)
                fh = self._open()
            fh.write(data)
            fh.flush()
            self._size += n
        except OSError as e:
            self.failed += 1
            if self.failed == 1:  # once: a full disk must not turn into a line per alert
                stream = self.errors if self.errors is not None else sys.stderr
                stream.write(f"slipsq: cannot write {self.path} ({e}); alerts still go to the journal\n")
            self.close()

    def alert(self, alert: Alert) -> None:
        self.write_line(self.line(alert))

    def close(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                pass
            self._fh = None
