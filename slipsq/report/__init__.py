"""What happened on my network: timelines and the HTML report, from the activity log of a replay
folder (`slipsq replay -o DIR`) or of a running gateway (its state directory).

    activity.Reader ─► stories() ─► write_timelines(DIR/timeline/<ip>.txt)
                                └─► html.render() ─► one self-contained report.html

This module picks the hosts, ranks them and writes the files; the stories are built by
slipsq.output.timeline, the page by slipsq.report.html. It never touches the kernel or the store.
"""

from __future__ import annotations

import os
import secrets
import stat
import sys
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from slipsq.errors import InputError, UsageError
from slipsq.output.activity import Reader
from slipsq.output.timeline import Story, build, hosts_with_evidence, render

MAX_HOSTS = 200  # hosts in a report (the highest scores); a timeline file is written for every one
STDOUT = "-"  # `slipsq report -o -`: the page on standard output

def stories(reader: Iterable[dict[str, Any]], hosts: Iterable[str] | None = None, window: float = 3600.0,
            threshold: float = 1.0) -> list[Story]:
    """The stories of `hosts` (None: every host with evidence), highest score first (then most
    blocks, then address). Reads the records twice when it has to find the hosts first."""
    wanted = set(hosts) if hosts is not None else hosts_with_evidence(_select(reader, kinds=("alert", "block")))
    built = build(_select(reader, mentions=wanted), wanted, window, threshold)
    return rank(built.values())


def rank(stories: Iterable[Story]) -> list[Story]:
    """Highest score first, then most blocks (a blocked server before the client that called it, at
    the same score), then address: the same order on every run."""
    return sorted(stories, key=lambda s: (-s.score, -s.times_blocked, s.ip))


def _select(records: Iterable[dict[str, Any]], **how: Any) -> Iterable[dict[str, Any]]:
    """records.select(**how) where the source can skip lines unparsed (activity.Reader), else all."""
    select = getattr(records, "select", None)
    return select(**how) if select is not None else records


def file_name(ip: str) -> str:
    """timeline/<ip>.txt: an IPv6 address's colons are kept (legal on Linux) but never a slash."""
    return ip.replace("/", "_") + ".txt"


def write_timelines(out_dir: str | Path, found: list[Story], skipped: int = 0) -> Path:
    """DIR/timeline/<ip>.txt for every story; timelines of an earlier run there are removed first."""
    folder = Path(out_dir) / "timeline"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.txt"):
            old.unlink()
        for s in found:
            (folder / file_name(s.ip)).write_text(render(s, skipped), encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write timelines into {folder}: {e.strerror}") from None
    return folder


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


def output_target(path: str | Path) -> tuple[Path, os.stat_result | None]:
    """Where the report of `-o PATH` goes: PATH, or the file a symlink at PATH points to (its links
    followed), with its status (None: it does not exist yet). Anything that exists and is not a
    regular file (a device such as /dev/null, a pipe, a folder) is refused: the report replaces
    the file it writes, and must never replace a device node with a page."""
    target = Path(os.path.realpath(path))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return target, None
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        via = f" (a link to {target})" if str(target) != os.path.abspath(path) else ""
        raise UsageError(f"-o {path}{via} is {kind}: the report is written to a regular file, new or replaced "
                         f"whole, or with -o - to standard output; nothing was written")
    return target, st


def write_report(path: str | Path, found: list[Story], source: str, skipped: int = 0,
                 unreadable: dict[str, tuple[int, int]] | None = None) -> int:
    """The HTML report of the `MAX_HOSTS` highest-ranked stories into `path` (`-`: standard output),
    written whole or not at all (a temporary file beside the target renamed over it), so a browser
    never opens half a page. A symlink's target is written, and keeps its permissions; anything but
    a regular file is refused (`output_target`). Returns the page's size."""
    from slipsq.report.html import render_report

    page = render_report(found[:MAX_HOSTS], source, left_out=max(0, len(found) - MAX_HOSTS), skipped=skipped,
                         unreadable=unreadable).encode("utf-8")
    if str(path) == STDOUT:
        try:
            sys.stdout.flush()
            sys.stdout.buffer.write(page)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise InputError(f"cannot write the report to standard output: {e.strerror}") from None
        return len(page)
    target, st = output_target(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    made = False
    try:
        # O_EXCL: never through a file or link someone put at that name; 0o666 less the umask, as
        # any new file, or the mode of the file it replaces
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        made = True
        with os.fdopen(fd, "wb") as fh:
            if st is not None:
                os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode))
            fh.write(page)
        os.replace(tmp, target)
    except OSError as e:
        if made:
            tmp.unlink(missing_ok=True)
        raise InputError(f"cannot write {path}: {e.strerror}") from None
    return len(page)


def replay_outputs(out_dir: str | Path, cfg: Any, report: bool) -> dict[str, Any]:
    """After `slipsq replay -o DIR`: DIR/timeline/<ip>.txt, and DIR/report.html with --report."""
    reader = Reader.folder(out_dir)
    found = stories(reader, None, cfg["judge.window"], cfg["judge.threshold"])
    write_timelines(out_dir, found, reader.skipped)
    out: dict[str, Any] = {"timelines": len(found)}
    if report:
        out["report_bytes"] = write_report(Path(out_dir) / "report.html", found, f"replay output {out_dir}",
                                           reader.skipped, reader.unreadable)
    return out


class GatewayRecords:
    """A gateway's records since `since`: its activity log (flows, DNS answers, alerts) and, for
    blocks and unblocks, the block store's audit trail, which also holds what an admin did while
    the daemon was down (the log's own block lines are left out so none is told twice)."""

    def __init__(self, state_dir: str | None, since: float) -> None:
        from slipsq.verdict.store import resolve_state_dir

        self.folder = resolve_state_dir(state_dir)
        self.reader = Reader.folder(self.folder, since, what="is slipsq running inline with output.activity on?",
                                    live=True)
        self.since = since

    @property
    def skipped(self) -> int:
        return self.reader.skipped

    @property
    def unreadable(self) -> dict[str, tuple[int, int]]:
        return self.reader.unreadable

    def damage(self) -> list[str]:
        return self.reader.damage()

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.select()

    def select(self, kinds: Collection[str] | None = None, mentions: Collection[str] | None = None
               ) -> Iterator[dict[str, Any]]:
        for r in self.reader.select(kinds, mentions):
            if r.get("k") not in ("block", "unblock"):
                yield r
        for r in audit_records(self.folder, self.since):
            if kinds is None or r["k"] in kinds:
                yield r


def audit_records(state_dir: Path, since: float) -> list[dict[str, Any]]:
    """The block store's audit trail since `since` as activity records (none without a store)."""
    from slipsq.verdict.store import DB_NAME, BlockStore

    if not (state_dir / DB_NAME).exists():
        return []
    store = BlockStore(state_dir, create=False)
    try:
        entries = store.audit(None, limit=100_000)
    finally:
        store.close()
    out: list[dict[str, Any]] = []
    for e in entries:
        if e.ts < since:
            continue
        if e.action == "block":
            out.append({"k": "block", "ts": e.ts, "ip": e.ip, "reason": e.reason, "by": e.who,
                        "duration": (e.expires - e.ts) if e.expires else 0})
        else:
            out.append({"k": "unblock", "ts": e.ts, "ip": e.ip, "reason": e.reason, "who": e.who})
    return out
