"""Admin control: the daemon's Unix socket (`control.sock` in the state directory, mode 0600, root
only, one JSON request line → one JSON reply line per connection) and the admin actions behind it.

`Admin` does block/unblock/blocks on the store and the kernel, for when no daemon runs; the daemon
takes the same requests through its engine (so an unblocked IP's old evidence is forgotten). The
CLI talks to the daemon through `request` when it runs and uses `Admin` directly when it does not,
so `slipsq unblock` always works.
This module decides nothing about traffic and never blocks a protected address.
"""

from __future__ import annotations

import json
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipsq import durations, records
from slipsq.addr import parse_ip
from slipsq.allow import AllowList
from slipsq.config import MAX_TIMED_BLOCK
from slipsq.errors import InputError, RefusedError, SlipsqError, SystemSetupError
from slipsq.verdict.apply import Outcome, carry_out
from slipsq.verdict.firewall import Firewall
from slipsq.verdict.store import Block as Stored
from slipsq.verdict.store import BlockStore

SOCKET_NAME = "control.sock"
MAX_LINE = 65536  # a request
# an answer: the block list carries each block's evidence, so it grows with the blocks (1-2 kB each);
# the daemon (root) is trusted, the bound only stops a runaway
MAX_REPLY = 256 << 20
COMMANDS = ("block", "unblock", "blocks", "status", "reload")


def parse_duration(text: str) -> float | None:
    """A block's length: the duration syntax of slipsq.durations ('90', '15m', '4h', '1h30m') in
    seconds, or None (no expiry) for 'forever'. 0 is refused: a block of no time is a typo, and a
    block without expiry must be asked for by name."""
    t = text.strip().lower()
    if t in ("forever", "never", "permanent"):
        return None
    try:
        value = durations.parse_duration(t)
    except ValueError:
        raise InputError(f"'{text}' is not a duration (e.g. 90s, 15m, 4h, 1h30m, 2d, or 'forever')") from None
    if value == 0:
        raise InputError(f"'{text}' is a block of no time: give a duration (e.g. 4h), or 'forever' for a "
                         "block that lasts until unblocked")
    if value > MAX_TIMED_BLOCK:
        raise InputError(f"'{text}' is longer than the longest timed block (3650d): give a shorter one, or "
                         "'forever' for a block that lasts until unblocked")
    return value


class DaemonTimeout(SystemSetupError):
    """The daemon's socket took the request but no answer came in time (a stopped or stuck daemon)."""


def parse_pardon(text: str) -> float:
    """How long an unblocked address stays pardoned (`slipsq unblock --pardon`): a duration in
    seconds, 0 ('0', 'none': evidence may block it again at once), or inf ('forever')."""
    t = text.strip().lower()
    if t in ("forever", "never", "permanent"):
        return float("inf")
    if t in ("none", "no", "off"):
        return 0.0
    try:
        value = durations.parse_duration(t)
    except ValueError:
        raise InputError(f"'{text}' is not a pardon: a duration (e.g. 1d, 12h), 0, or 'forever'") from None
    if value > MAX_TIMED_BLOCK:
        raise InputError(f"'{text}' is longer than the longest timed pardon (3650d): give a shorter one, or "
                         "'forever'")
    return value


def pardon_text(used: Any, default: bool) -> str:
    """What an admin is told of the pardon an unblock got (`slipsq unblock`, `slipsq top`): `used`
    is the daemon's reply (seconds, "forever", or None from a daemon older than pardons)."""
    if used is None:
        return "none (the daemon predates pardons: restart it to have them)"
    if used in ("forever", float("inf")):
        return "forever"
    if not isinstance(used, int | float) or used <= 0:
        return "none: new evidence may block it again"
    hint = " (for good: --pardon forever, or put it in allow.ips)" if default else ""
    return durations.format_duration(max(1, round(float(used)))) + hint


def canonical_ip(text: str) -> str:
    """The address as slipsq prints it everywhere (an IPv4-mapped IPv6 address as IPv4)."""
    try:
        return str(parse_ip(text))
    except ValueError as e:
        raise InputError(str(e)) from None


def check_block(allow: AllowList, text: str) -> str:
    """The canonical text of an IP an admin asks to block; InputError when it is not an IP, RefusedError
    when it is protected (the daemon and the offline Admin check the same way)."""
    ip = canonical_ip(text)
    why = allow.why_protected(ip)
    if why is not None:
        raise RefusedError(f"refusing to block {ip}: {why}")
    return ip


class Admin:
    """Block, unblock and list on the store and the kernel directly, for when no daemon runs (the
    daemon takes the same requests through its engine). Each change is the engine's own command,
    carried out by verdict.apply.carry_out: the way a judged block takes too."""

    def __init__(self, store: BlockStore, firewall: Firewall | None, allow: AllowList,
                 default_duration: float | None, default_pardon: float = 86400.0) -> None:
        self.store = store
        self.fw = firewall
        self.allow = allow
        self.default_duration = default_duration
        self.default_pardon = default_pardon  # judge.pardon

    def block(self, ip: str, duration: float | str | None = "default", reason: str = "manual",
              who: str = "admin", now: float | None = None) -> Stored:
        ip = check_block(self.allow, ip)
        now = time.time() if now is None else now
        seconds = self.default_duration if duration == "default" else duration
        assert not isinstance(seconds, str)
        out = self._carry_out(records.Block(ip, now, seconds or 0.0, reason, who), now)
        if ip in out.refused:
            raise RefusedError(f"refusing to block {ip}: {out.refused[ip]}")
        return out.stored[ip]

    def unblock(self, ip: str, who: str = "admin", reason: str = "unblocked by admin",
                pardon: float | None = None) -> Stored | None:
        """Remove the block at once (kernel, store), and store its pardon (`pardon` seconds, None:
        the config's judge.pardon; the daemon takes it up when it starts). RefusedError when `ip` is
        not blocked."""
        ip = canonical_ip(ip)
        known = self.store.get(ip)
        in_kernel = self.fw is not None and ip in self.fw.members()
        if known is None and not in_kernel and not self.store.has_row(ip):  # (a damaged row: removed too)
            raise RefusedError(f"{ip} is not blocked")
        now = time.time()
        seconds = self.default_pardon if pardon is None else pardon
        covers = known.decided_by() if known is not None else ()
        self._carry_out(records.Unblock(ip, now, reason, who, now + seconds if seconds > 0 else None, covers), now)
        return known

    def _carry_out(self, change: records.Block | records.Unblock, now: float) -> Outcome:
        out = carry_out(self.fw, self.store, [change], now)
        if out.kernel_error:
            raise SystemSetupError(f"the kernel refused: {out.kernel_error}")
        if out.store_error:
            raise SystemSetupError(f"the block store failed: {out.store_error}")
        return out

    def pardons(self, now: float | None = None) -> list[dict[str, Any]]:
        """The running pardons (an admin's unblocks): ip, seconds left (None: forever), detectors."""
        now = time.time() if now is None else now
        return [{"ip": ip, "remaining": None if until == float("inf") else until - now, "detectors": sorted(covers)}
                for ip, (until, covers) in sorted(self.store.pardons(now).items())]

    def blocks(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        out = []
        for b in self.store.active(now):
            d = b.to_dict()
            d["remaining"] = b.remaining(now)
            out.append(d)
        return out


# --- the socket -----------------------------------------------------------------------------------

MAX_SOCKET_PATH = 107  # bytes of a Unix socket's path (sun_path holds 108, with its NUL)


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def _too_long(path: Path) -> bool:
    return len(os.fsencode(path)) > MAX_SOCKET_PATH


class ControlServer:
    """Non-blocking listener: `serve` answers requests in the thread that calls it (the daemon's
    control thread) until told to stop; `poll` answers what is waiting now."""

    def __init__(self, state_dir: Path, handler: Callable[[dict[str, Any], str], dict[str, Any]]) -> None:
        self.path = socket_path(state_dir)
        self.handler = handler
        if _too_long(self.path):
            raise SystemSetupError(f"the state directory {state_dir} is too long a path for the control socket "
                                   f"in it ({self.path}: a Unix socket's path is at most {MAX_SOCKET_PATH} "
                                   "bytes): choose a shorter --state-dir")
        if self.path.exists() or self.path.is_symlink():
            if _alive(self.path):
                raise SystemSetupError(f"another slipsq is running with state dir {state_dir} "
                                       f"(its control socket {self.path} answers)")
            self.path.unlink()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            self.sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        self.sock.listen(16)
        self.sock.setblocking(False)
        # close() may come from another thread while `serve` waits in select: it wakes the server
        # through this pipe and lets it return before the socket goes, so the serving thread never
        # meets a closed descriptor (EBADF, or worse a reused one).
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._lock = threading.Lock()
        self._closing = False
        self._idle = threading.Event()  # set while no thread is inside `serve`
        self._idle.set()

    def fileno(self) -> int:
        return self.sock.fileno()

    def serve(self, stop: threading.Event, every: float = 0.5) -> None:
        """Answer requests until `stop` is set (checked every `every` seconds) or `close` is called
        (at once)."""
        with self._lock:
            if self._closing:
                return
            self._idle.clear()
        try:
            while not stop.is_set():
                try:
                    ready, _, _ = select.select([self.sock.fileno(), self._wake_r], [], [], every)
                except (OSError, ValueError):
                    if self._closing:  # close() gave up waiting for a stuck handler
                        return
                    raise
                if self._closing or self._wake_r in ready:
                    return
                if ready and not stop.is_set():
                    self.poll()
        finally:
            self._idle.set()

    def poll(self) -> int:
        """Answer every connection waiting now. Returns how many."""
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:
                if self._closing:  # closed under us after close() stopped waiting
                    return n
                raise
            n += 1
            with conn:
                self._serve(conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)  # a stuck client must not stall the packet loop for long
        try:
            uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
            if uid not in (0, os.geteuid()):
                reply: dict[str, Any] = {"ok": False, "error": "permission denied (root only)"}
            else:
                req = json.loads(_read_line(conn))
                if not isinstance(req, dict) or req.get("cmd") not in COMMANDS:
                    reply = {"ok": False, "error": f"unknown request; commands: {', '.join(COMMANDS)}"}
                else:
                    user = str(req.get("user") or ("root" if uid == 0 else str(uid)))
                    reply = self.handler(req, f"admin:{user}")
        except SlipsqError as e:
            reply = {"ok": False, "error": e.message}
        except (OSError, ValueError) as e:
            reply = {"ok": False, "error": f"bad request: {e}"}
        except Exception as e:  # any other failure of one request (a locked store, a bug) is that
            # request's error for the admin, never the end of the daemon that verdicts the traffic
            reply = {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}
        try:
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass

    def close(self, wait: float = 5.0) -> None:
        """Stop `serve` (waiting up to `wait` seconds for a request being answered), then close the
        socket and remove its path. Safe to call twice."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        try:
            os.write(self._wake_w, b"\0")
        except OSError:  # the pipe is full: the server is being woken already
            pass
        self._idle.wait(wait)  # a handler stuck past `wait` meets a closed socket, which poll expects
        self.sock.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _read_line(conn: socket.socket, limit: int = MAX_LINE) -> bytes:
    buf = bytearray()
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise ValueError("request too long" if limit == MAX_LINE else "answer too long")
        if b"\n" in chunk:
            break
    return bytes(buf.split(b"\n", 1)[0])


def _alive(path: Path) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1.0)
    try:
        s.connect(str(path))
        return True
    except OSError:
        return False
    finally:
        s.close()


def request(state_dir: Path, req: dict[str, Any], timeout: float = 10.0) -> dict[str, Any] | None:
    """Send one request to the running daemon. None when no daemon listens (act offline instead);
    SystemSetupError when one runs but we may not talk to it."""
    path = socket_path(state_dir)
    if _too_long(path):
        if path.exists():  # a daemon that started with this folder under a shorter name (relative)
            raise SystemSetupError(f"the control socket {path} is too long a path to reach (at most "
                                   f"{MAX_SOCKET_PATH} bytes): name the state directory as the daemon does "
                                   "(e.g. relative to where it started)")
        return None  # no daemon can listen there (ControlServer refuses to start): act offline
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        try:
            s.connect(str(path))
        except PermissionError:
            raise SystemSetupError(f"no permission to talk to the slipsq daemon ({path}); "
                                   "run as root") from None
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        except BlockingIOError:  # its backlog is full: a busy daemon, as one that does not answer in time
            raise DaemonTimeout(f"the slipsq daemon is too busy to take the request ({path})") from None
        s.sendall(json.dumps({**req, "user": _user()}).encode() + b"\n")
        line = _read_line(s, MAX_REPLY)
    except TimeoutError:
        raise DaemonTimeout(f"the slipsq daemon did not answer within {timeout:g}s ({path})") from None
    except (OSError, ValueError) as e:  # reset mid-answer (it died), or an answer past MAX_REPLY
        raise SystemSetupError(f"the slipsq daemon's answer was cut off ({getattr(e, 'strerror', None) or e})"
                               ) from None
    finally:
        s.close()
    if not line:
        raise SystemSetupError("the slipsq daemon closed the connection without an answer")
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or "ok" not in reply:
        head = records.printable(line[:60].decode("utf-8", "replace"))
        raise SystemSetupError("the slipsq daemon's answer is not one this slipsq reads (cut short, or "
                               f"another version of slipsq?): {head}")
    return reply


def _user() -> str:
    """The person behind this command: the sudo caller, else the login of our uid."""
    sudo = os.environ.get("SUDO_USER")
    if sudo:
        return sudo
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def who_am_i() -> str:
    return f"admin:{_user()}"
