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
from collections import deque
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from slipsq.sink import Sink

if TYPE_CHECKING:
    from slipsq.records import Alert


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
    blocks = (f"{status['blocks_active']} blocks" if "blocks_active" in status
              else f"{status.get('blocks_decided', 0)} blocks decided")
    return (f"{status.get('packets', 0)} packets ({status.get('dropped', 0)} dropped), "
            f"{table.get('flows_open', 0)} open flows, {status.get('alerts', 0)} alerts, {blocks}")


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


class Service:
    """What the daemon does as a system service, in the few calls it makes:

        svc = Service.from_env(cfg, state_dir)   # at start: notifier, journal, the extra sinks
        svc.ready(status)                         # the queue is bound and the rules are in
        svc.tick(time.monotonic(), status_fn)     # every turn of the packet loop: watchdog, STATUS
        svc.reloading() ... svc.ready(status)     # around a SIGHUP reload
        svc.stopping()                            # on the way down

    `status_fn` returns the dict `status_line` reads; it is called at most every STATUS_EVERY
    seconds and must be cheap (counters only: no subprocess, no SQLite) as it runs in the packet loop.
    """

    STATUS_EVERY = 10.0

    def __init__(self, notifier: Notifier, journal: Any = None, sinks: list[Any] | None = None) -> None:
        self.notifier = notifier
        self.journal = journal  # slipsq.output.journal.Journal, or None: log lines to stderr
        self.sinks = sinks or []
        self._next_status = -math.inf
        self.rates = Rates()

    @classmethod
    def from_env(cls, cfg: Any, state_dir: Any, env: MutableMapping[str, str] | None = None) -> Service:
        """The notifier from $NOTIFY_SOCKET, the journal per output.journal, and the alert sinks: the
        journal's (when used) and alerts.jsonl per output.alerts_log."""
        from pathlib import Path

        from slipsq.output.alertlog import RotatingAlertLog
        from slipsq.output.journal import Journal, JournalSink, started_by_systemd

        env = os.environ if env is None else env
        by_systemd = started_by_systemd(env)
        journal = None
        if cfg["output.journal"] == "yes" or (cfg["output.journal"] == "auto" and by_systemd):
            journal = Journal()
        sinks: list[Any] = [RecentAlerts()]
        if journal is not None:
            sinks.append(JournalSink(journal))
        where = cfg["output.alerts_log"]
        if where == "auto":
            # systemd's LogsDirectory= sets $LOGS_DIRECTORY; by hand, none (replay has -o DIR)
            where = env.get("LOGS_DIRECTORY", "").split(":")[0] if by_systemd else ""
            where = where or (str(Path(state_dir)) if by_systemd else "")
        if where:
            sinks.append(RotatingAlertLog(where, cfg["output.alerts_log_max_bytes"], cfg["output.alerts_log_files"]))
        return cls(Notifier.from_env(env), journal, sinks)

    @property
    def recent(self) -> list[dict[str, Any]]:
        """The last alerts (newest last), for `slipsq status`."""
        return list(self.sinks[0].last) if self.sinks and isinstance(self.sinks[0], RecentAlerts) else []

    @property
    def alerts_to_stdout(self) -> bool:
        """False when the journal takes the alerts (stdout under systemd is the journal too: twice)."""
        return self.journal is None

    def log(self, message: str, priority: int = 6) -> None:
        """A daemon message: to the journal with its priority, else `slipsq: ...` on stderr."""
        if self.journal is not None:
            self.journal.send(message, priority)
        else:
            import sys

            print(f"slipsq: {message}", file=sys.stderr, flush=True)

    def ready(self, status: Mapping[str, Any]) -> None:
        self.notifier.ready(status_line(status))

    def reloading(self) -> None:
        self.notifier.reloading()

    def tick(self, now: float, status_fn: Any, healthy: bool = True) -> None:
        """From the packet loop: ping the watchdog (unless `healthy` is False: a stuck worker then
        gets the process restarted too), and every STATUS_EVERY seconds a STATUS= line."""
        if healthy:
            self.notifier.watchdog(now)
        if now >= self._next_status:  # the rates for `slipsq status` are kept with or without systemd
            self._next_status = now + self.STATUS_EVERY
            st = status_fn()
            self.rates.update(now, int(st.get("packets", 0)),
                              int(st.get("accepted", 0)) + int(st.get("dropped", 0)))
            self.notifier.status(status_line(st))

    def stopping(self) -> None:
        self.notifier.stopping()

    def close(self) -> None:
        for s in self.sinks:
            close = getattr(s, "close", None)
            if close is not None:
                close()
        if self.journal is not None:
            self.journal.close()
        self.notifier.close()


def rss_kb(path: str = "/proc/self/status") -> int:
    """This process's resident memory (VmRSS) in kB; 0 where /proc does not say."""
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Rates:
    """Packets and verdicts per second over the last interval (fed the cumulative counters)."""

    def __init__(self) -> None:
        self._last: tuple[float, int, int] | None = None
        self.packets_per_s = 0.0
        self.verdicts_per_s = 0.0

    def update(self, now: float, packets: int, verdicts: int) -> None:
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            self.packets_per_s = round((packets - self._last[1]) / dt, 1)
            self.verdicts_per_s = round((verdicts - self._last[2]) / dt, 1)
        self._last = (now, packets, verdicts)

    def to_dict(self) -> dict[str, float]:
        return {"packets": self.packets_per_s, "verdicts": self.verdicts_per_s}


class RecentAlerts(Sink):
    """A sink that keeps the last few alerts for `slipsq status`."""

    def __init__(self, keep: int = 5) -> None:
        self.last: deque[dict[str, Any]] = deque(maxlen=keep)

    def alert(self, alert: Alert) -> None:
        d = alert.to_dict()
        self.last.append({k: d[k] for k in ("time", "detector", "action", "offender", "description", "score")})
