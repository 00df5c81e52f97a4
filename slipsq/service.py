"""systemd service notifications (sd_notify) without a dependency: one datagram of `KEY=VALUE` lines
to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or `@name` in the abstract namespace).

    READY=1      once the queue is bound and the rules are in (Type=notify: `systemctl start` waits)
    STATUS=...   one line `systemctl status slipsq` shows (packets, flows, blocks)
    RELOADING=1  on SIGHUP, then READY=1 again
    STOPPING=1   on the way down
    WATCHDOG=1   fed from the packet loop itself, so a hung loop stops feeding and systemd restarts it

Outside systemd (no $NOTIFY_SOCKET) every call does nothing. A notification that cannot be sent is
dropped: the service must never stop inspecting because its supervisor went away. This module does
no other I/O and decides nothing.
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Mapping, MutableMapping
from typing import Any


def socket_address(name: str) -> str:
    """$NOTIFY_SOCKET as Python's socket module wants it: `@x` is the abstract socket "\\0x"."""
    return "\0" + name[1:] if name.startswith("@") else name


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between the pings systemd expects (WatchdogSec=), or None when no watchdog is asked
    of this process: WATCHDOG_USEC unset or not a positive number, or WATCHDOG_PID naming another."""
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = env.get("WATCHDOG_PID")
    if owner and owner != str(pid):
        return None
    return usec / 1e6


def status_line(status: Mapping[str, Any]) -> str:
    """The STATUS= text from the daemon's status() dict: a few numbers an admin reads first."""
    table = status.get("table") or {}
    return (f"{status.get('packets', 0)} packets ({status.get('dropped', 0)} dropped), "
            f"{table.get('flows_open', 0)} open flows, {status.get('alerts', 0)} alerts, "
            f"{status.get('blocks_active', 0)} blocks")


class Notifier:
    """The service's line to systemd. `watchdog(now)` is cheap (one comparison) and meant to be
    called on every turn of the packet loop: it pings at half the interval systemd asked for."""

    def __init__(self, address: str | None, watchdog_every: float | None = None) -> None:
        self.address = socket_address(address) if address else None
        self.watchdog_every = watchdog_every
        self._sock: socket.socket | None = None
        self._next_ping = -math.inf
        self.sent = 0
        self.failed = 0

    @classmethod
    def from_env(cls, env: MutableMapping[str, str] | None = None, unset: bool = True) -> Notifier:
        """The notifier systemd set up for this process. `unset` removes the variables (as sd_notify's
        unset_environment), so the iptables and ipset children never talk to systemd as us."""
        env = os.environ if env is None else env
        notifier = cls(env.get("NOTIFY_SOCKET") or None, watchdog_interval(env, os.getpid()))
        if unset:
            for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
                env.pop(key, None)
        return notifier

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, **fields: str | int) -> bool:
        """One notification (`READY=1` is send(READY=1)); False when none is expected or it failed."""
        if self.address is None:
            return False
        data = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)  # never wait on systemd from the packet loop
            self._sock.sendto(data, self.address)
        except OSError:
            self.failed += 1
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.send(READY=1, **({"STATUS": status} if status else {}), MAINPID=os.getpid())

    def status(self, text: str) -> bool:
        return self.send(STATUS=text.replace("\n", " "))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match this reload to its request
        return self.send(RELOADING=1, MONOTONIC_USEC=time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000)

    def stopping(self, status: str = "stopping") -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def watchdog(self, now: float) -> bool:
        """Ping when due; `now` is time.monotonic() (wall-clock steps must not starve the watchdog)."""
        if self.watchdog_every is None or now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_every / 2
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
