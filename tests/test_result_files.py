"""The result files of `slipsq replay -o DIR` (slipsq.output.results): a failed write names its
file, the first failure is the one named, and an interrupted replay leaves whole files."""

from __future__ import annotations

import signal
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from slipsq.errors import InputError
from slipsq.output import results


def test_an_interrupt_while_writing_never_writes_a_chunk_twice(tmp_path: Path) -> None:
    """Found by review: the names were first caught in the raw file's write, a Python frame between
    the buffer and the disk. A Ctrl-C (SIGTERM too: replay makes it one) landing as that frame
    returned left a chunk written but counted unwritten, and the close wrote it again: 262 of 400
    interrupted files here had ~8 kB twice. Each file must be a clean prefix of what was written."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    torn = []
    try:
        for i in range(200):
            path = tmp_path / f"f{i}.jsonl"
            f = results._ResultFile(path, results._Failure())
            n = 0
            signal.setitimer(signal.ITIMER_REAL, 0.002 + (i % 50) * 0.0003)
            try:
                while True:
                    f.write(f'{{"n": {n}, "pad": "{"x" * 2000}"}}\n')
                    n += 1
            except KeyboardInterrupt:
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            f.close()  # as the replay's ExitStack does on the way out
            numbers = [int(line.split(",")[0][6:]) for line in path.read_text().splitlines()]
            if numbers != list(range(len(numbers))):
                torn.append(i)
    finally:
        signal.signal(signal.SIGALRM, old)
    assert torn == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_the_first_file_that_failed_is_the_one_named(tmp_path: Path) -> None:
    """Found by review: on a full disk the first failure was replaced by the closes of the other
    files (their buffers cannot be written either), so the message named the wrong file."""
    out = tmp_path / "out"
    out.mkdir()
    for name in results.RESULT_FILES[:results.OPENED]:
        (out / name).symlink_to("/dev/full")
    with pytest.raises(InputError) as raised, ExitStack() as stack:
        files = results.open_results(str(out), True, stack)
        for f in files[1:]:
            f.write("x" * 100)  # buffered: their closes fail on the way out
        files[0].write("y" * 100_000)  # past the buffer: alerts.jsonl fails first
    assert raised.value.message == f"cannot write {out / 'alerts.jsonl'}: No space left on device"
    assert all(f.closed for f in files)  # and every file was closed


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_a_write_that_fails_only_at_close_is_still_an_error(tmp_path: Path) -> None:
    """Found by review: output smaller than a buffer fails only when the file closes; the close's own
    flush recorded the failure and the close then took it for an earlier one and swallowed it, so
    `replay -o` onto a full disk ended 0 with the files' last 8 kB missing."""
    path = tmp_path / "f.jsonl"
    path.symlink_to("/dev/full")
    one = results._ResultFile(path, results._Failure())
    one.write("x" * 100)
    with pytest.raises(InputError, match="No space left on device"):
        one.close()
    assert one.closed
    out = tmp_path / "out"
    out.mkdir()
    (out / "flows.binetflow").symlink_to("/dev/full")
    with pytest.raises(InputError) as raised, ExitStack() as stack:
        for f in results.open_results(str(out), True, stack):
            f.write("y" * 100)
    assert raised.value.message == f"cannot write {out / 'flows.binetflow'}: No space left on device"


def test_result_files_are_utf8_text_as_before(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    f = results._ResultFile(path, results._Failure())
    f.write("café ✓\n")
    f.close()
    assert path.read_bytes() == "café ✓\n".encode()
