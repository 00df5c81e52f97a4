"""A Zeek log folder: conn.log (required) and dns.log (where present), read by the Zeek reader and
merged in time order.

Each log is in Zeek's own write order; the merge interleaves the two streams and never sorts or
buffers either one. Other logs in the folder (http.log, ssl.log, ...) are not read.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterator

from slipsq.errors import InputError
from slipsq.flow import Flow
from slipsq.sources.flowfiles.base import FlowSource, Item
from slipsq.sources.flowfiles.streams import open_input
from slipsq.sources.flowfiles.zeek import ZeekSource


def _time(item: Item) -> float:
    return item.start if isinstance(item, Flow) else item.ts


def find_log(folder: str, kind: str) -> str | None:
    for name in (f"{kind}.log", f"{kind}.log.gz", f"{kind}.log.labeled", f"{kind}.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    return None


def open_zeek_log(path: str, counts: dict[str, int] | None = None,
                  problems: list[str] | None = None) -> ZeekSource:
    opened = open_input(path)
    if opened.kind is not None:
        opened.close()
        raise InputError(f"{path}: is a {opened.kind} file, not a Zeek log")
    try:
        source = ZeekSource(opened.name, opened.first, opened.lines(), opened.lineno, counts, problems)
    except InputError:
        opened.close()
        raise
    source.on_close(opened.close)
    source.probes.append(opened.ending)
    return source


class ZeekFolderSource(FlowSource):
    """A Zeek log folder: conn.log (required) and dns.log (where present), merged by time.

    Each log is in Zeek's write order; the merge interleaves the two without sorting either."""

    format = "zeek"

    def __init__(self, folder: str) -> None:
        super().__init__(folder)
        conn = find_log(folder, "conn")
        if conn is None:
            raise InputError(f"{folder}: is a directory without conn.log (not a Zeek log folder)")
        self.logs = [open_zeek_log(conn, self.counts, self.problems)]
        self.on_close(self.logs[0].close)
        dns = find_log(folder, "dns")
        if dns is not None and os.path.getsize(dns) > 0:  # Zeek may leave an empty dns.log behind
            try:
                self.logs.append(open_zeek_log(dns, self.counts, self.problems))
            except InputError:
                self.close()
                raise
            self.on_close(self.logs[1].close)

    def _items(self) -> Iterator[Item]:
        yield from heapq.merge(*self.logs, key=_time)

    def damage(self) -> str | None:
        # the logs share this folder's counts and problems: those are reported once, here
        notes = [f"{log.name}: {note}" for log in self.logs
                 if (note := "; ".join(x for x in [log.broken, *(p() for p in log.probes)] if x))]
        own = super().damage()
        return "; ".join([*notes, *([own] if own else [])]) or None
