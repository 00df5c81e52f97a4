"""What a replay leaves behind: the `-o DIR` folder (refused when it holds earlier results, unless
forced), the summary file in it, and the one damage line per input that `slipsq replay` prints after
its results (the rule for every input format: what was whole is analysed and reported, then any loss
is named and the exit status is 2).

This module writes files and formats text; it never analyses traffic.
"""

from __future__ import annotations

import io
import json
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from slipsq.errors import InputError

RESULT_FILES = ("alerts.jsonl", "alerts.log", "flows.binetflow", "activity.jsonl", "summary.json", "report.html",
                "timeline")
OPENED = 4  # the first four are written as the replay runs; the others after it
# the alerts in another format (--alert-format; slipsq.output.formats.RESULT_FILE), when asked for
FORMAT_FILES = ("eve.json", "alerts.idmefv2.jsonl", "alerts.syslog")


def open_results(out_dir: str, force: bool, stack: ExitStack, extra: str | None = None) -> list[TextIO]:
    """alerts.jsonl, alerts.log, flows.binetflow and activity.jsonl (and `extra`, one of FORMAT_FILES)
    opened for writing in `out_dir` (created when missing). InputError when the folder already holds
    results of an earlier run and not `force`: results an analyst may have joined on are not
    overwritten by accident."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} is a file, not a folder: results are several files (give a folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        earlier = [n for n in RESULT_FILES + FORMAT_FILES if (out / n).exists()]
        if earlier and not force:
            raise InputError(f"{out} already holds results ({', '.join(earlier)}): choose another folder, "
                             "or pass --force to overwrite them")
        for stale in ("summary.json", "report.html", *FORMAT_FILES):  # none from an earlier run beside new alerts
            (out / stale).unlink(missing_ok=True)
        names = (*RESULT_FILES[:OPENED], *([extra] if extra else []))
        failure = _Failure()
        return [stack.enter_context(_ResultFile(out / n, failure)) for n in names]
    except OSError as e:
        raise InputError(f"cannot write into {out}: {e.strerror}") from None


class _Failure:
    """The first write that failed among one replay's result files (the one the message names)."""

    first: InputError | None = None


class _ResultFile(io.TextIOWrapper):
    """A result file whose failed writes name it: a disk that fills during a replay stops it with
    "cannot write DIR/flows.binetflow: No space left on device" (exit 2, as a summary.json that
    cannot be written), not a bare "No space left on device". The files of one replay share a
    `_Failure`: once one has failed, the others' closes (whose buffers cannot be written either)
    are best effort, and the message names the file that failed first.

    The names are caught here, above the buffer, not in the raw file's write: a Python frame
    there let a Ctrl-C land after a chunk was written and before the buffer counted it, and the
    close wrote the chunk again (a review found ~8 kB twice in an interrupted replay's files)."""

    def __init__(self, path: Path, failure: _Failure) -> None:
        super().__init__(open(path, "wb"), encoding="utf-8")  # (closed with it, by the caller's stack)
        self._path, self._failure = path, failure

    def _failed(self, e: OSError) -> InputError:
        if self._failure.first is None:
            self._failure.first = InputError(f"cannot write {self._path}: {e.strerror or e}")
        return self._failure.first

    def write(self, s: str, /) -> int:
        try:
            return super().write(s)
        except OSError as e:
            raise self._failed(e) from e

    def flush(self) -> None:
        try:
            super().flush()
        except OSError as e:
            raise self._failed(e) from e

    def close(self) -> None:
        earlier = self._failure.first  # a failure before this close: another file's, or this one's
        try:
            super().close()  # (its file is closed even when the flush fails; the flush is ours above)
        except (OSError, InputError) as e:
            if earlier is None:  # this close is the first failure: it is the message (a review: the
                # flush above had just recorded it, so it was taken for an earlier one and swallowed,
                # and a replay onto a full disk ended 0 with its last 8 kB missing)
                if isinstance(e, OSError):
                    raise self._failed(e) from e
                raise
            # an earlier failure is the message: this close is best effort


def write_summary(out_dir: str, summary: dict[str, Any]) -> None:
    """summary.json beside the alerts: the same object `--json` prints last."""
    path = Path(out_dir) / "summary.json"
    try:
        path.write_text(json.dumps({"summary": summary}, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}") from None


def damage(path: str, info: dict[str, Any]) -> str | None:
    """What of one input was lost, as one line naming the file; None when it was read whole.

    A capture: records cut short or impossible. A flow file: the reader's note (bad rows, a
    compressed stream or a last line cut short, the nfdump program's complaints)."""
    path = "<stdin>" if path == "-" else path
    if info.get("refused"):
        return str(info["refused"])
    note = info.get("damage")
    if note:
        return f"{path}: damaged input: {note}; the rest ({_whole(info)}) was analysed"
    truncated, corrupt = info.get("truncated", 0), info.get("corrupt", 0)
    if not truncated and not corrupt:
        return None
    what = []
    if truncated:
        what.append("the file ends inside a record")
    if corrupt:
        what.append(f"{corrupt} corrupt record{'s' if corrupt > 1 else ''} (impossible lengths or dates)")
    return (f"{path}: damaged capture: {' and '.join(what)}; the {info.get('packets', 0)} whole packets "
            f"were analysed")


def _whole(info: dict[str, Any]) -> str:
    if "flows" in info:
        return f"{info['flows']} flows, {info.get('app_events', 0)} app events"
    return f"{info.get('packets', 0)} packets"


def lost(info: dict[str, Any]) -> str:
    """The summary's words for what one input lost ("" when nothing)."""
    counted = ("skipped_non_ip", "truncated", "corrupt") + (() if info.get("damage") else ("bad_rows",))
    parts = [f"{k.replace('_', ' ')} {info[k]}" for k in counted if info.get(k)]
    if info.get("damage"):
        parts.append(f"lost: {info['damage']}")
    if info.get("refused"):
        parts.append("not read: it overlaps an earlier input in time")
    return ", ".join(parts)
