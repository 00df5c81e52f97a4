"""`slipsq top` (or any slipsq command) in a real pseudo-terminal: pexpect runs it, pyte (a terminal
emulator) keeps the screen a person would see. For the unit tests and the kernel lab alike."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pexpect
import pyte

ROOT = Path(__file__).resolve().parent.parent


class Term:
    """`slipsq top` in a pty; `screen()` is what a person would see."""

    def __init__(self, state_dir: Path, rows: int = 30, cols: int = 110, *extra: str) -> None:
        # without LINES and COLUMNS (pytest-xdist's workers have them): curses would take them for
        # the size and never follow the terminal's
        env = {k: v for k, v in os.environ.items() if k not in ("LINES", "COLUMNS")}
        env.update(TERM="xterm", LANG="C.UTF-8", LC_ALL="C.UTF-8", PYTHONPATH=str(ROOT))
        self.child = pexpect.spawn(sys.executable, ["-m", "slipsq", "top", "--state-dir", str(state_dir), *extra],
                                   env=env, dimensions=(rows, cols), encoding="utf-8", codec_errors="replace")
        self.raw = ""
        self.vt = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.vt)

    def pump(self) -> None:
        while True:
            try:
                data = self.child.read_nonblocking(65536, timeout=0.05)
            except (pexpect.TIMEOUT, pexpect.EOF):
                return
            self.raw += data
            self.stream.feed(data)

    def screen(self) -> str:
        self.pump()
        return "\n".join(self.vt.display)

    def wait(self, *texts: str, timeout: float = 30.0) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s = self.screen()
            if all(t in s for t in texts):
                return s
        raise AssertionError(f"not on screen after {timeout:g} s: {texts}\n{self.screen()}")

    def resize(self, rows: int, cols: int) -> None:
        """As a terminal window resized: what is drawn stays where it fits (curses may redraw only
        what changed), and the kernel sends the program SIGWINCH."""
        self.pump()
        self.vt.resize(rows, cols)
        self.child.setwinsize(rows, cols)

    def finish(self, timeout: float = 20.0) -> int | None:
        """Wait for the program to end; its exit status (None: killed by a signal). What it wrote
        last is in `raw`."""
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.raw += self.child.before or ""
        self.child.close()
        return self.child.exitstatus

    def close(self) -> None:
        if self.child.isalive():
            self.child.kill(signal.SIGKILL)
        self.child.close(force=True)
