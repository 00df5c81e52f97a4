"""slipsq.service: sd_notify datagrams as systemd receives them, read from a socket the test binds."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from slipsq.service import Notifier, socket_address, status_line, watchdog_interval


def _recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))




def test_ready_status_stopping_reach_the_socket(dgram: tuple[str, socket.socket]) -> None:
    path, sock = dgram
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("bound")
    assert _recv(sock) == {"READY": "1", "STATUS": "bound", "MAINPID": str(os.getpid())}
    assert n.status("12 packets\nsecond line")
    assert _recv(sock) == {"STATUS": "12 packets second line"}
    assert n.reloading()
    got = _recv(sock)
    assert got["RELOADING"] == "1" and int(got["MONOTONIC_USEC"]) > 0
    assert n.stopping()
    assert _recv(sock) == {"STOPPING": "1", "STATUS": "stopping"}
    assert n.sent == 4 and n.failed == 0
    n.close()


def test_abstract_namespace_socket() -> None:
    name = f"@slipsq-test-{uuid.uuid4().hex}"
    assert socket_address(name) == "\0" + name[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(socket_address(name))
    s.settimeout(2)
    try:
        n = Notifier(name)
        assert n.send(READY=1)
        assert s.recv(100) == b"READY=1"
        n.close()
    finally:
        s.close()


def test_from_env_unsets_the_variables_so_children_do_not_notify(tmp_path: Path) -> None:
    env = {"NOTIFY_SOCKET": str(tmp_path / "x"), "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid()),
           "PATH": "/bin"}
    n = Notifier.from_env(env)
    assert env == {"PATH": "/bin"}
    assert n.watchdog_every == 4.0
    kept = {"NOTIFY_SOCKET": "/x"}
    Notifier.from_env(kept, unset=False)
    assert kept == {"NOTIFY_SOCKET": "/x"}


def test_outside_systemd_every_call_is_a_no_op() -> None:
    n = Notifier.from_env({})
    assert not n.enabled
    assert not n.ready() and not n.status("x") and not n.stopping() and not n.watchdog(1e9)
    assert n.sent == 0 and n.failed == 0


def test_a_gone_supervisor_is_counted_never_raised(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert not n.ready()
    assert n.failed == 1
    n.close()


@pytest.mark.parametrize(("env", "want"), [
    ({}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "-5"}, None),
    ({"WATCHDOG_USEC": "abc"}, None),
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1234"}, 30.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "999"}, None),  # asked of another process
])
def test_watchdog_interval(env: dict[str, str], want: float | None) -> None:
    assert watchdog_interval(env, 1234) == want


def test_watchdog_pings_at_half_the_interval(dgram: tuple[str, socket.socket]) -> None:
    path, sock = dgram
    n = Notifier(path, watchdog_every=10.0)
    pings = [t for t in (0.0, 1.0, 4.9, 5.0, 5.1, 9.9, 10.0, 14.0, 15.0) if n.watchdog(100.0 + t)]
    assert pings == [0.0, 5.0, 10.0, 15.0]
    for _ in pings:
        assert sock.recv(100) == b"WATCHDOG=1"
    n.close()
    assert not Notifier(path).watchdog(0.0)  # no WatchdogSec: never


def test_status_line_from_the_daemons_status() -> None:
    st = {"packets": 1200, "dropped": 7, "alerts": 3, "blocks_active": 2, "table": {"flows_open": 41}}
    assert status_line(st) == "1200 packets (7 dropped), 41 open flows, 3 alerts, 2 blocks"
    assert status_line({"blocks_decided": 4}) == "0 packets (0 dropped), 0 open flows, 0 alerts, 4 blocks decided"


def _cfg(**values: object) -> object:
    from slipsq.runmode import load_config

    return load_config(None, values)


def test_service_by_hand_prints_alerts_and_writes_no_file(tmp_path: Path) -> None:
    from slipsq.service import RecentAlerts, Service

    svc = Service.from_env(_cfg(), tmp_path, env={"TERM": "xterm"})
    assert svc.alerts_to_stdout and [type(s) for s in svc.sinks] == [RecentAlerts]
    assert not svc.notifier.enabled
    svc.close()


def test_service_under_systemd_journal_and_alerts_jsonl_in_the_logs_directory(tmp_path: Path) -> None:
    from slipsq.output.alertlog import RotatingAlertLog
    from slipsq.output.journal import JournalSink
    from slipsq.service import Service

    env = {"INVOCATION_ID": "x", "LOGS_DIRECTORY": str(tmp_path / "logs"), "NOTIFY_SOCKET": str(tmp_path / "n")}
    svc = Service.from_env(_cfg(**{"output.alerts_log_files": 2}), tmp_path / "state", env=env)
    assert not svc.alerts_to_stdout and svc.notifier.enabled and "NOTIFY_SOCKET" not in env
    log = next(s for s in svc.sinks if isinstance(s, RotatingAlertLog))
    assert log.path == tmp_path / "logs" / "alerts.jsonl" and log.keep == 2
    assert any(isinstance(s, JournalSink) for s in svc.sinks)
    svc.close()
    # no LOGS_DIRECTORY (an old systemd): the state directory; output.journal = no: stdout again
    svc = Service.from_env(_cfg(**{"output.journal": "no"}), tmp_path / "state", env={"INVOCATION_ID": "x"})
    log = next(s for s in svc.sinks if isinstance(s, RotatingAlertLog))
    assert log.path == tmp_path / "state" / "alerts.jsonl" and svc.alerts_to_stdout
    svc.close()


def test_tick_keeps_rates_and_sends_status(dgram: tuple[str, socket.socket]) -> None:
    from slipsq.service import Service

    path, sock = dgram
    svc = Service(Notifier(path, watchdog_every=100.0))
    counts = iter([{"packets": 100, "accepted": 90, "dropped": 10}, {"packets": 1100, "accepted": 1080, "dropped": 20}])
    svc.tick(0.0, lambda: next(counts))
    assert sock.recv(100) == b"WATCHDOG=1" and sock.recv(200).startswith(b"STATUS=100 packets")
    svc.tick(5.0, lambda: 1 / 0)  # neither due: status_fn is not called
    svc.tick(10.0, lambda: next(counts))
    assert sock.recv(200).startswith(b"STATUS=1100 packets")
    assert svc.rates.to_dict() == {"packets": 100.0, "verdicts": 100.0}
    svc.tick(60.0, lambda: {"packets": 1100}, healthy=False)  # a stuck worker: no ping, status still
    assert sock.recv(200).startswith(b"STATUS=")
    svc.close()
