"""Admin actions and the control socket without a kernel: a fake firewall, a real store, a real
Unix socket in a temporary state dir, and the CLI talking to it."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from slipsq.allow import AllowList
from slipsq.control import Admin, ControlServer, parse_duration, request, socket_path
from slipsq.errors import InputError, SystemSetupError
from slipsq.verdict.store import BlockStore


class FakeFirewall:
    def __init__(self, allow: AllowList) -> None:
        self.allow = allow
        self.set: dict[str, float | None] = {}

    def block(self, entries: Any) -> list[tuple[str, str]]:
        refused = []
        for ip, seconds in entries:
            why = self.allow.why_protected(ip)
            if why:
                refused.append((ip, why))
            else:
                self.set[ip] = seconds
        return refused

    def unblock(self, ips: Any) -> None:
        for ip in ips:
            self.set.pop(ip, None)

    def members(self) -> dict[str, int]:
        return {ip: int(s or 0) for ip, s in self.set.items()}


class FakeEngine:
    """Records what the admin asks of the engine (the real one is tested in test_engine.py)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.restored: list[tuple[str, float, int]] = []
        self.forgotten: list[str] = []

    def restore_block(self, ip: str, until: float, times: int = 1) -> None:
        self.restored.append((ip, until, times))

    def unblock(self, ip: str, reason: str = "", who: str = "admin") -> None:
        self.forgotten.append(ip)
        self.sink.unblock(ip, 0.0, reason, who)


@pytest.fixture
def admin(tmp_path: Path) -> Admin:
    allow = AllowList(["10.9.0.0/16"], own=["192.168.1.1"])
    return Admin(BlockStore(tmp_path), FakeFirewall(allow), allow, 3600.0)  # type: ignore[arg-type]


@pytest.mark.parametrize("text,want", [("90", 90.0), ("30s", 30.0), ("15m", 900.0), ("4h", 14400.0),
                                       ("2d", 172800.0), ("1w", 604800.0), ("1h30m", 5400.0), ("forever", None)])
def test_parse_duration(text: str, want: float | None) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize("bad", ["", "h", "4x", "-5m", "nan", "soon", "inf", "1e400h", "0", "0s"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(InputError):
        parse_duration(bad)


def test_block_and_unblock_offline(admin: Admin) -> None:
    fw = admin.fw
    assert isinstance(fw, FakeFirewall)
    b = admin.block("203.0.113.7", "default", "manual", "admin:alice", now=1000.0)
    assert b.expires == 1000.0 + 3600 and b.by == "admin:alice"
    assert fw.set == {"203.0.113.7": 3600.0}
    admin.block("2001:DB8::1", None, "forever", "admin:alice", now=1001.0)
    assert "2001:db8::1" in fw.set and admin.store.get("2001:db8::1") is not None  # canonical form
    assert [x["ip"] for x in admin.blocks(now=2000.0)] == ["203.0.113.7", "2001:db8::1"]
    admin.unblock("203.0.113.7", "admin:bob", "false positive")
    assert "203.0.113.7" not in fw.set and admin.store.get("203.0.113.7") is None
    assert admin.store.audit("203.0.113.7")[-1].who == "admin:bob"


@pytest.mark.parametrize("ip,msg", [
    ("192.168.1.1", "refusing to block 192.168.1.1: one of this gateway's own addresses"),
    ("10.9.8.7", "refusing to block 10.9.8.7: on the allow list (10.9.0.0/16)"),
    ("127.0.0.1", "refusing to block 127.0.0.1: a loopback address"),
    ("nonsense", "'nonsense' is not an IP address"),
])
def test_block_refusals(admin: Admin, ip: str, msg: str) -> None:
    with pytest.raises(InputError) as e:
        admin.block(ip, 60.0)
    assert str(e.value) == msg
    assert admin.store.active(0.0) == []


def test_unblock_unknown_ip(admin: Admin) -> None:
    with pytest.raises(InputError, match=r"^198\.51\.100\.1 is not blocked$"):
        admin.unblock("198.51.100.1")


def test_unblock_of_a_block_only_in_the_firewall_still_works(admin: Admin) -> None:
    # e.g. the store was lost but the set still holds the address
    assert isinstance(admin.fw, FakeFirewall)
    admin.fw.set["198.51.100.2"] = 60.0
    admin.unblock("198.51.100.2")
    assert admin.fw.set == {}


def test_with_an_engine_unblock_makes_it_forget(tmp_path: Path) -> None:
    from slipsq.daemon import InlineSink

    allow = AllowList()
    fw = FakeFirewall(allow)
    store = BlockStore(tmp_path)
    sink = InlineSink(fw, store)  # type: ignore[arg-type]
    engine = FakeEngine(sink)
    a = Admin(store, fw, allow, None, engine, sink)  # type: ignore[arg-type]
    a.block("203.0.113.9", None, "r", "admin:x", now=5.0)
    assert engine.restored == [("203.0.113.9", math.inf, 1)]
    a.unblock("203.0.113.9", "admin:y")
    assert engine.forgotten == ["203.0.113.9"]
    assert store.audit("203.0.113.9")[-1].who == "admin:y"
    assert fw.set == {}


def test_the_real_engine_tells_the_store_who_ended_each_block(tmp_path: Path) -> None:
    # an admin's unblock is recorded with the admin's name, an expiry as "expiry": the name travels
    # with the call (Sink.unblock's who), so it cannot stick to a later decision
    from slipsq.config import CORE_OPTIONS, Config
    from slipsq.daemon import InlineSink
    from slipsq.engine import Engine

    allow = AllowList()
    fw, store = FakeFirewall(allow), BlockStore(tmp_path)
    sink = InlineSink(fw, store)  # type: ignore[arg-type]
    engine = Engine(Config(CORE_OPTIONS), allow=allow, sinks=[sink], detectors=[])
    a = Admin(store, fw, allow, None, engine, sink)  # type: ignore[arg-type]
    a.block("203.0.113.9", 100.0, "r", "admin:x", now=1000.0)
    a.block("203.0.113.10", 100.0, "r", "admin:x", now=1000.0)
    a.unblock("203.0.113.9", "admin:y")
    engine.advance(1200.0)  # 203.0.113.10 has expired
    assert store.audit("203.0.113.9")[-1].who == "admin:y"
    assert store.audit("203.0.113.10")[-1].who == "expiry"
    assert fw.set == {}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[ControlServer, list[tuple[dict[str, Any], str]]]]:
    seen: list[tuple[dict[str, Any], str]] = []

    def handler(req: dict[str, Any], who: str) -> dict[str, Any]:
        seen.append((req, who))
        if req["cmd"] == "block" and req.get("ip") == "10.0.0.1":
            raise InputError("refusing to block 10.0.0.1: one of this gateway's own addresses")
        if req["cmd"] == "reload":
            raise RuntimeError("database is locked")  # not a slipsq error: a failure nobody planned for
        if req["cmd"] == "blocks":
            return {"ok": True, "blocks": [{"ip": "203.0.113.7", "remaining": 60.0, "since": 1.0,
                                            "detector": "beacon", "by": "judge", "reason": "r"}]}
        return {"ok": True}

    srv = ControlServer(tmp_path, handler)
    stop = threading.Event()

    def loop() -> None:
        import select

        while not stop.is_set():
            r, _, _ = select.select([srv.fileno()], [], [], 0.05)
            if r:
                srv.poll()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield srv, seen
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()


def test_socket_is_private_and_answers(server: tuple[ControlServer, list[Any]], tmp_path: Path) -> None:
    _, seen = server
    mode = os.stat(socket_path(tmp_path)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert request(tmp_path, {"cmd": "status"}) == {"ok": True}
    assert seen[-1][1].startswith("admin:")
    bad = request(tmp_path, {"cmd": "format-disk"})
    assert bad is not None and not bad["ok"] and "unknown request" in bad["error"]


def test_an_unexpected_failure_answers_that_request_and_the_server_goes_on(
        server: tuple[ControlServer, list[Any]], tmp_path: Path) -> None:
    failed = request(tmp_path, {"cmd": "reload"})
    assert failed == {"ok": False, "error": "internal error: RuntimeError: database is locked"}
    assert request(tmp_path, {"cmd": "status"}) == {"ok": True}  # still serving
    refused = request(tmp_path, {"cmd": "block", "ip": "10.0.0.1"})
    assert refused == {"ok": False,
                       "error": "refusing to block 10.0.0.1: one of this gateway's own addresses"}


def test_no_daemon_means_none(tmp_path: Path) -> None:
    assert request(tmp_path, {"cmd": "status"}) is None
    # a stale socket file left by a killed daemon is not a daemon
    import socket as so

    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.bind(str(socket_path(tmp_path)))
    s.close()
    assert request(tmp_path, {"cmd": "status"}) is None
    ControlServer(tmp_path, lambda r, w: {"ok": True}).close()  # and a new daemon takes its place


def test_a_second_daemon_on_the_same_state_dir_is_refused(server: Any, tmp_path: Path) -> None:
    with pytest.raises(SystemSetupError, match="another slipsq is running"):
        ControlServer(tmp_path, lambda r, w: {"ok": True})


def test_cli_uses_the_daemon(server: tuple[ControlServer, list[Any]], tmp_path: Path) -> None:
    from slipsq.cli import main

    _, seen = server
    r = CliRunner().invoke(main, ["blocks", "--json", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)[0]["ip"] == "203.0.113.7"
    r = CliRunner().invoke(main, ["blocks", "--state-dir", str(tmp_path)])
    assert "203.0.113.7" in r.output and "beacon" in r.output
    r = CliRunner().invoke(main, ["block", "10.0.0.1", "--state-dir", str(tmp_path)])
    assert r.exit_code != 0
    assert r.output.strip().endswith("refusing to block 10.0.0.1: one of this gateway's own addresses")
    r = CliRunner().invoke(main, ["unblock", "203.0.113.7", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0 and seen[-1][0]["cmd"] == "unblock" and seen[-1][0]["ip"] == "203.0.113.7"


def test_cli_without_a_daemon(tmp_path: Path) -> None:
    from slipsq.cli import main

    r = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path)])
    assert r.exit_code == SystemSetupError.code
    assert "daemon is not running" in r.output
    r = CliRunner().invoke(main, ["unblock", "1.2.3", "--state-dir", str(tmp_path)])
    assert r.exit_code == InputError.code and "'1.2.3' is not an IP address" in r.output
    r = CliRunner().invoke(main, ["blocks", "--state-dir", str(tmp_path / "never-ran")])
    assert r.exit_code == 0 and r.output.strip() == "no blocks"
    BlockStore(tmp_path).add("198.51.100.3", since=1.0, expires=None, reason="r", by="judge")
    r = CliRunner().invoke(main, ["blocks", "--json", "--state-dir", str(tmp_path)])
    assert r.exit_code == 0 and [b["ip"] for b in json.loads(r.output)] == ["198.51.100.3"]


def test_not_root_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from slipsq.sources.nfqueue import check_system

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SystemSetupError, match="inline mode needs root"):
        check_system()


class RestoreEngine:
    def __init__(self) -> None:
        self.restored: dict[str, tuple[float, int]] = {}

    def restore_block(self, ip: str, until: float, times: int = 1) -> None:
        self.restored[ip] = (until, times)


def test_daemon_start_restores_unexpired_blocks_and_drops_the_rest(tmp_path: Path) -> None:
    from slipsq.daemon import Daemon

    store = BlockStore(tmp_path)
    store.add("198.51.100.1", since=0.0, expires=100.0, reason="old")         # expired at 500
    store.add("198.51.100.2", since=0.0, expires=1000.0, reason="current")
    store.add("198.51.100.2", since=10.0, expires=1000.0, reason="again")     # a repeat offender
    store.add("198.51.100.3", since=0.0, expires=None, reason="forever")
    store.add("10.9.0.5", since=0.0, expires=None, reason="now allow-listed")
    d = Daemon(0, False, None, str(tmp_path))
    d.allow = AllowList(["10.9.0.0/16"])
    fw = FakeFirewall(d.allow)
    fw.set["198.51.100.1"] = 5.0  # still in the kernel set
    fw.set["10.9.0.5"] = None  # blocked before the allow list covered it: it must leave the kernel too
    d.store, d.fw, d.engine = store, fw, RestoreEngine()  # type: ignore[assignment]
    d.restore_blocks(500.0)
    assert d.engine.restored == {"198.51.100.2": (1000.0, 2), "198.51.100.3": (math.inf, 1)}
    assert fw.set == {"198.51.100.2": 500.0, "198.51.100.3": None}  # one batch, with what is left
    assert {b.ip for b in store.active(500.0)} == {"198.51.100.2", "198.51.100.3"}
    assert store.audit("198.51.100.1")[-1].who == "expiry"
    assert store.audit("10.9.0.5")[-1].who == "allow-list"


def test_a_judged_block_goes_to_firewall_and_store_in_one_step(tmp_path: Path) -> None:
    from slipsq.daemon import InlineSink
    from slipsq.records import CRITICAL, Alert, Decision, Evidence

    allow = AllowList(own=["192.168.1.1"])
    fw, store = FakeFirewall(allow), BlockStore(tmp_path)
    sink = InlineSink(fw, store)  # type: ignore[arg-type]
    ev = Evidence(ts=100.0, detector="beacon", offender="203.0.113.5", src_ip="10.0.0.2",
                  dst_ip="203.0.113.5", dst_port=443, proto="tcp", description="beacon every 60 s",
                  threat_level=CRITICAL, confidence=1.0)
    sink.block("203.0.113.5", 3600.0, Alert(ev, Decision("block", "203.0.113.5", 3600.0, 1.0, "score 1.00")))
    b = store.get("203.0.113.5")
    assert b is not None and b.expires == 3700.0 and b.by == "judge" and b.detector == "beacon"
    assert json.loads(b.evidence)["description"] == "beacon every 60 s"
    assert fw.set == {"203.0.113.5": 3600.0}
    # defence in depth: even if a decision names a protected address, nothing is blocked or stored
    sink.block("192.168.1.1", 3600.0, Alert(ev, Decision("block", "192.168.1.1", 3600.0, 1.0, "x")))
    assert "192.168.1.1" not in fw.set and store.get("192.168.1.1") is None
    sink.unblock("203.0.113.5", 3700.0, "block expired", "expiry")
    assert store.audit("203.0.113.5")[-1].who == "expiry" and fw.set == {}


class RefusingFirewall(FakeFirewall):
    """A kernel that refuses set updates until `working` (ipset failing, ip_set module unloaded)."""

    def __init__(self, allow: AllowList) -> None:
        super().__init__(allow)
        self.working = False
        self.attempts = 0

    def block(self, entries: Any) -> list[tuple[str, str]]:
        self.attempts += 1
        if not self.working:
            raise SystemSetupError("ipset restore: Kernel error received: set type not supported")
        return super().block(entries)


def test_a_block_the_kernel_refuses_is_stored_and_retried_until_it_lands(tmp_path: Path) -> None:
    from slipsq.daemon import InlineSink
    from slipsq.records import CRITICAL, Alert, Decision, Evidence

    fw, store = RefusingFirewall(AllowList()), BlockStore(tmp_path)
    sink = InlineSink(fw, store)  # type: ignore[arg-type]

    def judged(ip: str, at: float, seconds: float) -> None:
        ev = Evidence(ts=at, detector="portscan", offender=ip, src_ip=ip, dst_ip="10.0.0.2", dst_port=0,
                      proto="tcp", description="scan", threat_level=CRITICAL, confidence=1.0)
        sink.block(ip, seconds, Alert(ev, Decision("block", ip, seconds, 1.0, "score 1.00")))

    judged("203.0.113.5", 100.0, 3600.0)
    judged("203.0.113.6", 100.0, 10.0)  # expires before the kernel works again
    # nothing lost: both are in the store (they come back after a restart) and awaiting the kernel
    assert store.get("203.0.113.5") is not None and store.get("203.0.113.6") is not None
    assert fw.set == {} and set(sink.pending) == {"203.0.113.5", "203.0.113.6"}
    sink.retry(101.0)
    assert fw.attempts == 3 and fw.set == {}  # still refused; kept
    sink.retry(102.0)
    assert fw.attempts == 3  # not before RETRY_EVERY seconds
    fw.working = True
    sink.retry(101.0 + sink.RETRY_EVERY + 10)  # 203.0.113.6 expired meanwhile: not added
    assert fw.set == {"203.0.113.5": pytest.approx(3600.0 - 16.0)} and sink.pending == {}
    sink.retry(1000.0)
    assert fw.attempts == 4  # nothing pending: no more kernel calls
    fw.working = False
    judged("203.0.113.7", 2000.0, 10.0)
    assert fw.attempts == 5 and set(sink.pending) == {"203.0.113.7"}
    sink.retry(2020.0)  # it expired before any retry: dropped without another kernel call
    assert fw.attempts == 5 and sink.pending == {}
