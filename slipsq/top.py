"""`slipsq top`: a live terminal view of the running daemon, a client of its control socket.

Once a second it asks for a light `status` (counters only, no iptables-save: packets, verdicts,
flows, the kernel queue, memory, the last alerts) and works out rates from the difference; it asks
for the `blocks` list only when the block counts changed or every BLOCKS_EVERY seconds, and counts
each block's time down itself. The arrow keys (or j/k) select a block, `u` unblocks it after a y/n
confirmation, `q` or Ctrl-C leaves. When the daemon goes away the view says so and keeps asking; a
tiny terminal gets what fits.

`Poller` (a thread) is the only part that talks to the daemon, `run` the only part that draws; the
screen itself is slipsq.topview (pure). This module never acts on anything but the one unblock an
admin confirmed, and never holds the daemon up: one short request at a time, with a timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from queue import Empty, SimpleQueue
from typing import Any

import click

from slipsq.cli_inline import STATE_DIR, _guard, _state_dir
from slipsq.topview import BOLD, NORMAL, POLL, REVERSE, View, columns, render

BLOCKS_EVERY = 10.0  # seconds between block-list requests when the counts did not change
TIMEOUT = 3.0  # seconds to wait for the daemon's answer to a status or blocks request
UNBLOCK_TIMEOUT = 30.0  # an unblock waits for the kernel and the store


# --- talking to the daemon (a thread) ----------------------------------------------------------------

Post = Callable[[tuple[Any, ...]], None]


class Poller:
    """Asks the daemon for status every `interval` s and for blocks when they may have changed,
    posting ('status', dict | None, why_not, t), ('blocks', list, t) and ('message', text) to `post`."""

    def __init__(self, state_dir: Path, post: Post, interval: float = POLL) -> None:
        self.state_dir, self.post, self.interval = state_dir, post, interval
        self.stop = threading.Event()
        self.wake = threading.Event()  # ask again now (after an unblock)
        self._blocks_key: tuple[Any, ...] | None = None
        self._blocks_due = 0.0

    def ask(self, req: dict[str, Any], timeout: float) -> tuple[dict[str, Any] | None, str]:
        """(reply, '') or (None, why not)."""
        from slipsq.control import request
        from slipsq.errors import SlipsqError

        try:
            reply = request(self.state_dir, req, timeout)
        except SlipsqError as e:
            return None, e.message
        except (OSError, ValueError) as e:  # a reset connection, a cut reply
            return None, f"{type(e).__name__}: {e}"
        if reply is None:
            return None, f"no daemon answers on {self.state_dir}/control.sock"
        if not reply.get("ok"):
            return None, str(reply.get("error", "the daemon refused"))
        return reply, ""

    def once(self) -> None:
        reply, why = self.ask({"cmd": "status", "light": True}, TIMEOUT)  # no iptables-save every second
        st = None if reply is None else reply.get("status")
        self.post(("status", st, why, time.monotonic()))
        if st is None:
            self._blocks_key = None
            return
        key = (st.get("pid"), st.get("blocks_active"), st.get("blocks_decided"))
        now = time.monotonic()
        if key != self._blocks_key or now >= self._blocks_due:
            reply, why = self.ask({"cmd": "blocks"}, TIMEOUT)
            if reply is None:
                self.post(("message", f"cannot list the blocks: {why}"))
                return
            self._blocks_key, self._blocks_due = key, now + BLOCKS_EVERY
            self.post(("blocks", reply.get("blocks") or [], time.monotonic()))

    def run(self) -> None:
        while not self.stop.is_set():
            self.once()
            self.wake.wait(self.interval)
            if self.wake.is_set():
                self.wake.clear()
                self._blocks_key = None  # the blocks changed: read them now

    def unblock(self, ip: str) -> None:
        """(in its own thread) the confirmed unblock; the answer goes to the message line."""
        reply, why = self.ask({"cmd": "unblock", "ip": ip, "reason": "unblocked by admin in slipsq top"},
                              UNBLOCK_TIMEOUT)
        if reply is not None:
            from slipsq.control import pardon_text

            self.post(("message", f"unblocked {ip}; pardon: {pardon_text(reply.get('pardon'), False)}"))
        else:
            self.post(("message", f"{ip}: {why}"))
        self.wake.set()


# --- the terminal -----------------------------------------------------------------------------------

def run(state_dir: Path, interval: float = POLL) -> int:
    """`slipsq top` until q, Ctrl-C or SIGTERM; 0. The terminal is restored in every case."""
    import curses
    import locale
    import signal

    locale.setlocale(locale.LC_ALL, "")  # curses writes UTF-8 (reasons, descriptions) only with it

    def term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, term)
    try:
        curses.wrapper(_ui, state_dir, interval)
    except KeyboardInterrupt:
        pass  # leaving a viewer with Ctrl-C is the ordinary way out, not a failure
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


def _ui(scr: Any, state_dir: Path, interval: float) -> None:
    import curses

    try:
        curses.curs_set(0)
    except curses.error:  # a terminal without an invisible cursor
        pass
    attrs = {NORMAL: curses.A_NORMAL, BOLD: curses.A_BOLD, REVERSE: curses.A_REVERSE}
    scr.timeout(250)  # keys answer within a quarter second; nothing is redrawn unless it changed
    results: SimpleQueue[tuple[Any, ...]] = SimpleQueue()
    view = View(str(state_dir), interval)
    poller = Poller(state_dir, results.put, interval)
    threading.Thread(target=poller.run, name="slipsq-top-poll", daemon=True).start()
    last = 0.0
    try:
        while True:
            dirty = False
            while True:
                try:
                    view.take(results.get_nowait())
                except Empty:
                    break
                dirty = True
            ch = scr.getch()
            if ch == curses.KEY_RESIZE:  # what the terminal shows now is its own guess (it may have
                scr.clear()              # reflowed the old lines): the next refresh repaints it all
            if ch != -1:
                dirty = True
                act = view.key(curses.keyname(ch).decode(errors="replace"))
                if act == "quit":
                    return
                if act:
                    threading.Thread(target=poller.unblock, args=(act,), name="slipsq-top-unblock",
                                     daemon=True).start()
            now = time.monotonic()
            if dirty or now - last >= 1.0:  # once a second for the clock and the time left
                last = now
                height, width = scr.getmaxyx()
                scr.erase()
                for y, (text, attr) in enumerate(render(view, width, height, now)):
                    try:
                        bar = attr == REVERSE  # a bar fills the line: padded by columns, not characters
                        scr.addstr(y, 0, text + " " * (width - columns(text)) if bar else text, attrs[attr])
                    except curses.error:  # the bottom-right cell: the text is drawn, the cursor cannot follow
                        pass
                scr.refresh()
    finally:
        poller.stop.set()
        poller.wake.set()


@click.command("top")
@click.option("--interval", type=click.FloatRange(min=0.2), default=POLL, show_default=True, metavar="SECONDS",
              help="Seconds between refreshes.")
@STATE_DIR
@click.pass_context
def command(ctx: click.Context, interval: float, state_dir: str | None) -> None:
    """Live view of the running daemon: packets/s, flows, queue, alerts, blocks (u unblocks one, q quits)."""

    def work() -> int:
        import os
        import sys

        from slipsq.control import socket_path
        from slipsq.errors import SystemSetupError, UsageError
        from slipsq.verdict.store import resolve_state_dir

        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise UsageError("slipsq top needs a terminal; for scripts: slipsq status --json")
        sd = resolve_state_dir(_state_dir(ctx, state_dir))
        sock = socket_path(sd)
        try:  # a view that could only ever say "permission denied" is not worth opening
            os.stat(sock)
            allowed = os.access(sock, os.R_OK | os.W_OK)
        except FileNotFoundError:
            allowed = True  # no daemon yet: the view waits for one
        except PermissionError:
            allowed = False
        if not allowed:
            raise SystemSetupError(f"no permission to talk to the slipsq daemon ({sock}); run as root")
        return run(sd, interval)

    _guard(ctx, work)
