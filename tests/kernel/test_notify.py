"""slipsq as a systemd service, on a real queue in the namespace lab, under a fake NOTIFY_SOCKET
(a datagram socket this test binds and reads, as systemd would): READY=1 only once the queue is bound
and the diversion is in, WATCHDOG=1 pings from the packet loop (they stop while the process is
stopped, and resume), STATUS= lines that count real traffic, RELOADING=1 then READY=1 on SIGHUP,
STOPPING=1 on SIGTERM, and a clean stop leaves a forwarding router without the diversion.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq
from tests.kernel.lab import CNC, LEGIT, Lab, to_toml

pytestmark = pytest.mark.kernel


class Supervisor:
    """The systemd end of sd_notify: collects every datagram with the time it arrived."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.got: list[tuple[float, dict[str, str]]] = []

    def read(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                return
            self.got.append((time.monotonic(), dict(line.split("=", 1) for line in data.split("\n"))))

    def wait_for(self, key: str, seconds: float) -> dict[str, str] | None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for _, msg in self.got:
                if key in msg:
                    return msg
            self.read(0.2)
        return None

    def count(self, key: str) -> int:
        return sum(1 for _, m in self.got if key in m)

    def close(self) -> None:
        self.sock.close()


def test_notify_watchdog_reload_stop_on_a_real_queue(lab: Lab, tmp_path: Path) -> None:
    lab.serve()
    sup = Supervisor(tmp_path / "notify.sock")
    cfg = {"allow.ips": [f"{LEGIT}/32"], "output.alerts_log": str(tmp_path / "logs"), "output.journal": "no",
           "memory.budget_mb": 100}
    s = Slipsq(lab, tmp_path / "state", "nft", config=cfg)
    base_env = s.env()
    s.env = lambda: {**base_env, "NOTIFY_SOCKET": str(sup.path), "WATCHDOG_USEC": "4000000"}  # type: ignore[method-assign]
    try:
        proc = s.start(wait=False)
        ready = sup.wait_for("READY", 20)
        assert ready is not None, proc.stderr.read() if proc.stderr and proc.poll() is not None else "no READY"
        assert ready["MAINPID"] == str(proc.pid)  # ip netns exec execs slipsq: the same pid
        # READY came after the queue was bound and the rules were in
        assert "NFQUEUE" in s.iptables() and "--queue-bypass" in s.iptables()
        assert "packets" in ready["STATUS"]

        # traffic through the queue; the watchdog pings at half of WatchdogSec (2 s), late by at most
        # one turn of the loop (an idle loop wakes once a second): never a gap systemd (4 s) would
        # call a hang, whatever the scheduler adds to the 3 s
        t0 = len(sup.got)
        for _ in range(5):
            assert lab.connect("a", CNC)
        sup.read(7)
        pings = [t for t, m in sup.got[t0:] if "WATCHDOG" in m]
        assert len(pings) >= 3, sup.got[t0:]
        assert max(b - a for a, b in itertools.pairwise(pings)) < 4.0

        # a stopped (hung) process stops pinging; it resumes when it runs again
        os.kill(proc.pid, signal.SIGSTOP)
        n = sup.count("WATCHDOG")
        sup.read(4.5)
        assert sup.count("WATCHDOG") == n
        os.kill(proc.pid, signal.SIGCONT)
        sup.read(3.5)
        assert sup.count("WATCHDOG") > n

        # STATUS counts the real packets (every 10 s); `slipsq status` shows the service fields
        sup.read(10.5)
        statuses = [m["STATUS"] for _, m in sup.got if "STATUS" in m and "READY" not in m]
        assert statuses and int(statuses[-1].split()[0]) > 0, statuses
        st = s.status()
        assert st["running"] and st["systemd"] and st["watchdog"] == 4.0
        assert st["memory"]["rss_kb"] > 0 and st["per_second"]["packets"] >= 0
        assert "memory budget" in s.stderr_so_far()

        # SIGHUP: RELOADING=1, then READY=1 again
        n_ready = sup.count("READY")
        os.kill(proc.pid, signal.SIGHUP)
        assert sup.wait_for("RELOADING", 10) is not None
        end = time.monotonic() + 10
        while sup.count("READY") == n_ready and time.monotonic() < end:
            sup.read(0.2)
        assert sup.count("READY") == n_ready + 1

        # a reload that fails (a threat-intelligence list it cannot read: a field past csv's limit)
        # keeps the running configuration, says why, and READY comes again (the reload thread died
        # on it once, and systemd waited for a READY that never came)
        ti = tmp_path / "ti"
        ti.mkdir()
        (ti / "feed.csv").write_text("ip,note\n1.2.3.4," + "x" * 200_000 + "\n")
        assert s.config_path is not None
        s.config_path.write_text(to_toml({**cfg, "threatintel.folder": str(ti)}))
        os.kill(proc.pid, signal.SIGHUP)
        end = time.monotonic() + 10
        while sup.count("READY") == n_ready + 1 and time.monotonic() < end:
            sup.read(0.2)
        assert sup.count("READY") == n_ready + 2
        said = s.stderr_so_far()
        assert "reload failed, keeping the running configuration" in said
        assert "feed.csv is not a CSV file" in said and "Traceback" not in said
        assert lab.connect("a", CNC) and s.status()["running"]

        code, err = s.stop(signal.SIGTERM)
        assert code == 0, err
        sup.read(0.5)
        assert sup.count("STOPPING") == 1
        assert "NFQUEUE" not in s.iptables()  # clean stop: the diversion is gone
        assert lab.connect("a", CNC)  # and the router still forwards
    finally:
        if s.proc is not None and s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait(10)
        sup.close()
