"""Admin control: the daemon's Unix socket (`control.sock` in the state directory, mode 0600, root
only, one JSON request line → one JSON reply line per connection) and the admin actions behind it.

`Admin` does block/unblock/blocks on the store and the kernel, and, inside the daemon, on the engine
too (so an unblocked IP's old evidence is forgotten). The CLI talks to the daemon through `request`
when it runs and uses `Admin` directly when it does not, so `slipsq unblock` always works.
This module decides nothing about traffic and never blocks a protected address.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipsq import durations
from slipsq.allow import AllowList, parse_ip
from slipsq.errors import InputError, SlipsqError, SystemSetupError
from slipsq.verdict.firewall import Firewall
from slipsq.verdict.store import Block, BlockStore

SOCKET_NAME = "control.sock"
MAX_LINE = 65536
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
    return value


def canonical_ip(text: str) -> str:
    try:
        return str(parse_ip(text))
    except ValueError as e:
        raise InputError(str(e)) from None


class Admin:
    """Block, unblock and list, on the store and the kernel (and the engine, when given one)."""

    def __init__(self, store: BlockStore, firewall: Firewall | None, allow: AllowList,
                 default_duration: float | None, engine: Any = None, sink: Any = None) -> None:
        self.store = store
        self.fw = firewall
        self.allow = allow
        self.default_duration = default_duration
        self.engine = engine
        self.sink = sink

    def block(self, ip: str, duration: float | str | None = "default", reason: str = "manual",
              who: str = "admin", now: float | None = None) -> Block:
        ip = canonical_ip(ip)
        why = self.allow.why_protected(ip)
        if why is not None:
            raise InputError(f"refusing to block {ip}: {why}")
        now = time.time() if now is None else now
        seconds = self.default_duration if duration == "default" else duration
        assert not isinstance(seconds, str)
        if self.fw is not None:
            refused = self.fw.block([(ip, seconds)])
            if refused:
                raise InputError(f"refusing to block {ip}: {refused[0][1]}")
        expires = None if seconds is None else now + seconds
        b = self.store.add(ip, since=now, expires=expires, reason=reason, detector="manual",
                           evidence={"manual": True, "reason": reason}, by=who)
        if self.engine is not None:
            self.engine.restore_block(ip, float("inf") if expires is None else expires, b.times)
        return b

    def unblock(self, ip: str, who: str = "admin", reason: str = "unblocked by admin") -> Block | None:
        """Remove the block at once (kernel, store, engine). InputError when `ip` is not blocked."""
        ip = canonical_ip(ip)
        known = self.store.get(ip)
        in_kernel = self.fw is not None and ip in self.fw.members()
        if known is None and not in_kernel:
            raise InputError(f"{ip} is not blocked")
        if self.engine is not None and self.sink is not None:
            # the engine forgets the judgement and tells the sinks, which remove rule and record
            self.engine.unblock(ip, reason, who)
        else:
            if self.fw is not None:
                self.fw.unblock([ip])
            self.store.remove(ip, who=who, reason=reason)
        return known

    def blocks(self, now: float | None = None) -> list[dict[str, Any]]:
        now = time.time() if now is None else now
        out = []
        for b in self.store.active(now):
            d = b.to_dict()
            d["remaining"] = b.remaining(now)
            out.append(d)
        return out


# --- the socket -----------------------------------------------------------------------------------

def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


class ControlServer:
    """Non-blocking listener polled by the daemon's loop; each request is answered at once."""

    def __init__(self, state_dir: Path, handler: Callable[[dict[str, Any], str], dict[str, Any]]) -> None:
        self.path = socket_path(state_dir)
        self.handler = handler
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

    def fileno(self) -> int:
        return self.sock.fileno()

    def poll(self) -> int:
        """Answer every connection waiting now. Returns how many."""
        n = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return n
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

    def close(self) -> None:
        self.sock.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


def _read_line(conn: socket.socket) -> bytes:
    buf = b""
    while b"\n" not in buf:
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        if len(buf) > MAX_LINE:
            raise ValueError("request too long")
    return buf.split(b"\n", 1)[0]


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
        s.sendall(json.dumps({**req, "user": _user()}).encode() + b"\n")
        line = _read_line(s)
    except TimeoutError:
        raise SystemSetupError(f"the slipsq daemon did not answer within {timeout:g}s ({path})") from None
    finally:
        s.close()
    if not line:
        raise SystemSetupError("the slipsq daemon closed the connection without an answer")
    reply: dict[str, Any] = json.loads(line)
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
