"""Prometheus metrics: scraped for real over HTTP on loopback and read back with prometheus_client's
own parser, from a real daemon (kernel-free: tests/fakedaemon.py) and from plain snapshots; the
node-exporter textfile; the [metrics] config keys."""

from __future__ import annotations

import os
import random
import re
import socket
import stat
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from slipsq import runmode
from slipsq.detect import DETECTORS
from slipsq.errors import ConfigError
from slipsq.output.metrics import METRICS, Exporter, daemon_snapshot, parse_listen
from tests.fakedaemon import running_daemon, wait_for


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now, below the kernel's ephemeral range (32768-60999 by default): a port
    bind(0) gave and this closed could be handed at once to another test's outgoing connection
    before the exporter binds it (the exporter then logs "cannot serve" and the scrape fails)."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20_000, 32_000)
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port on {host} in 20000-31999")


def scrape(listen: str) -> dict[str, Any]:
    """GET /metrics and parse it: {name: family}, families' samples as {labels tuple: value}."""
    host, port = parse_listen(listen)
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    return families(text)


def families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(fam: Any) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted(s.labels.items())): s.value for s in fam.samples if not s.name.endswith("_created")}


def value(fams: dict[str, Any], name: str, **labels: str) -> float:
    return samples(fams[name])[tuple(sorted(labels.items()))]


@pytest.fixture
def exporter_for() -> Any:
    made: list[Exporter] = []

    def make(snapshot: Any, **kw: Any) -> Exporter:
        logged: list[str] = []
        e = Exporter(kw.get("listen", ""), kw.get("textfile", ""), kw.get("every", 60.0), snapshot, logged.append)
        e.logged = logged  # type: ignore[attr-defined]
        e.start()
        made.append(e)
        return e

    yield make
    for e in made:
        e.stop()


def test_a_real_daemon_scraped_over_http(tmp_path: Path) -> None:
    listen = f"127.0.0.1:{free_port()}"
    with running_daemon(tmp_path, {"metrics.listen": listen}) as d:
        d.source.counters.update(packets=1500, accepted=1480, dropped=20, errors=1)
        d.judged_block("203.0.113.7", "beacon")
        d.judged_block("203.0.113.8", "portscan")
        d.alert("192.168.1.20", "longconn", "a long connection")
        r = d.handle({"cmd": "block", "ip": "198.51.100.9", "duration": "1h", "reason": "manual"}, "admin:alice")
        assert r["ok"]
        d.handle({"cmd": "unblock", "ip": "203.0.113.8"}, "admin:bob")
        e = Exporter.from_config(d.cfg, lambda: daemon_snapshot(d), print)
        e.start()
        try:
            fams = scrape(listen)
        finally:
            e.stop()
    assert fams["slipsq_packets"].type == "counter" and value(fams, "slipsq_packets") == 1500
    assert value(fams, "slipsq_verdicts", verdict="drop") == 20
    assert value(fams, "slipsq_verdicts", verdict="accept") == 1480
    assert value(fams, "slipsq_packet_errors") == 1
    # judged blocks come with their alert; the admin's block has no detector: "manual"
    # every detector has its series from the start, at 0 until its first alert
    alerts = {k[0][1]: v for k, v in samples(fams["slipsq_alerts"]).items()}
    assert alerts == {**dict.fromkeys([d.name for d in DETECTORS], 0.0), "beacon": 1, "portscan": 1, "longconn": 1}
    blocks = {k[0][1]: v for k, v in samples(fams["slipsq_blocks"]).items() if v}
    assert blocks == {"beacon": 1, "portscan": 1, "manual": 1}
    assert samples(fams["slipsq_unblocks"]) == {(("kind", "admin"),): 1, (("kind", "expiry"),): 0}
    assert fams["slipsq_blocks_active"].type == "gauge" and value(fams, "slipsq_blocks_active") == 2
    assert value(fams, "slipsq_queue_maxlen") == 1024 and value(fams, "slipsq_queue_dropped") == 0
    assert value(fams, "slipsq_flows_open") == 0 and value(fams, "slipsq_engine_errors") == 0
    assert value(fams, "slipsq_worker_pending", target="kernel") == 0
    assert value(fams, "slipsq_process_resident_memory_bytes") > 10 * 2**20  # a Python process
    assert value(fams, "slipsq_process_cpu_seconds") > 0
    # the flow table counts bypassed flows (bypass.enabled is off here: none)
    assert fams["slipsq_bypassed_flows"].type == "counter" and value(fams, "slipsq_bypassed_flows") == 0
    assert value(fams, "slipsq_bypass_forced") == 0  # and those that switched before the queue drained
    assert value(fams, "slipsq_bypass_late_packets") == 0


def test_a_counter_the_daemon_has_appears_and_one_it_lacks_does_not(exporter_for: Any) -> None:
    snap: dict[str, Any] = {"queue": {"packets": 7}}
    listen = f"127.0.0.1:{free_port()}"
    exporter_for(lambda: snap, listen=listen)
    fams = scrape(listen)
    assert value(fams, "slipsq_packets") == 7
    assert "slipsq_bypassed_flows" not in fams and "slipsq_flows_open" not in fams
    snap["bypassed"] = 3  # read at scrape time: the next scrape sees it
    snap["queue"]["packets"] = 9
    fams = scrape(listen)
    assert value(fams, "slipsq_bypassed_flows") == 3 and value(fams, "slipsq_packets") == 9


def test_stop_closes_the_port(exporter_for: Any) -> None:
    listen = f"127.0.0.1:{free_port()}"
    e = exporter_for(lambda: {"queue": {"packets": 1}}, listen=listen)
    assert value(scrape(listen), "slipsq_packets") == 1
    e.stop()

    def refused() -> bool:
        try:
            scrape(listen)
        except OSError:
            return True
        return False

    assert wait_for(refused)


def test_names_follow_the_prometheus_conventions() -> None:
    # one prefix, snake case, counters end in _total, units spelled out in base units
    for m in METRICS:
        assert re.fullmatch(r"slipsq_[a-z][a-z0-9_]*[a-z]", m.name), m.name
        assert m.kind in ("counter", "gauge")
        assert m.name.endswith("_total") == (m.kind == "counter"), m.name
        assert not re.search(r"_(kb|mb|ms|kilobytes|milliseconds|percent)(_|$)", m.name), m.name
        assert m.help and not m.help.endswith(".")
        assert not m.label or re.fullmatch(r"[a-z][a-z_]*", m.label)
    assert len({m.name for m in METRICS}) == len(METRICS)


def test_ipv6_loopback(exporter_for: Any) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        listen = f"[::1]:{free_port('::1')}"
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except (OSError, RuntimeError):
        pytest.skip("no IPv6 loopback here")
    exporter_for(lambda: {"queue": {"packets": 1}}, listen=listen)
    assert value(scrape(listen), "slipsq_packets") == 1


def test_a_taken_port_is_logged_and_the_daemon_goes_on(exporter_for: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        e = exporter_for(lambda: {}, listen=f"127.0.0.1:{port}")
        assert e.server is None
        assert any("cannot serve metrics on 127.0.0.1:" in m for m in e.logged)


def test_a_silent_client_is_dropped_and_scrapes_go_on(exporter_for: Any) -> None:
    # one request at a time: a client that connects and says nothing is cut off by the socket timeout
    listen = f"127.0.0.1:{free_port()}"
    exporter_for(lambda: {"queue": {"packets": 5}}, listen=listen)
    host, port = parse_listen(listen)
    silent = socket.create_connection((host, port))
    silent.settimeout(60)
    got = silent.recv(1)  # the server closes it: b""
    silent.close()
    assert got == b""
    assert value(scrape(listen), "slipsq_packets") == 5


def test_scrapes_in_parallel_are_all_answered(exporter_for: Any) -> None:
    listen = f"127.0.0.1:{free_port()}"
    exporter_for(lambda: {"queue": {"packets": 5}}, listen=listen)
    results: list[float] = []

    def one() -> None:
        results.append(value(scrape(listen), "slipsq_packets"))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [5.0] * 8


def test_the_textfile_is_written_atomically_and_removed_at_stop(tmp_path: Path, exporter_for: Any) -> None:
    path = tmp_path / "slipsq.prom"
    snap = {"queue": {"packets": 1}, "tally": {"alerts": {"beacon": 2}}}
    old = os.umask(0o077)  # slipsq.service's: node_exporter, another user, must still read the file
    try:
        e = exporter_for(lambda: snap, textfile=str(path), every=0.05)
        assert wait_for(path.exists)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    fams = families(path.read_text())
    assert value(fams, "slipsq_packets") == 1 and value(fams, "slipsq_alerts", detector="beacon") == 2
    snap["queue"] = {"packets": 2}
    assert wait_for(lambda: value(families(path.read_text()), "slipsq_packets") == 2)
    e.stop()
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


def test_an_unwritable_textfile_is_logged_once(tmp_path: Path, exporter_for: Any) -> None:
    e = exporter_for(lambda: {}, textfile=str(tmp_path / "missing" / "slipsq.prom"), every=0.02)
    assert wait_for(lambda: any(m.startswith("cannot write metrics") for m in e.logged))
    time.sleep(0.3)  # then a dozen more failed rewrites
    failures = [m for m in e.logged if m.startswith("cannot write metrics")]
    assert len(failures) == 1 and "retrying every 0.02 s" in failures[0]
    (tmp_path / "missing").mkdir()
    assert wait_for(lambda: (tmp_path / "missing" / "slipsq.prom").exists())
    assert wait_for(lambda: any("written to" in m for m in e.logged))


def test_off_by_default() -> None:
    cfg = runmode.load_config(None)
    assert cfg["metrics.listen"] == "" and cfg["metrics.textfile"] == ""
    assert not Exporter.from_config(cfg, dict, print).enabled


@pytest.mark.parametrize("bad", ["9467", "localhost:9467", "127.0.0.1:0", "127.0.0.1:65536", "::1:9467",
                                 "127.0.0.1:", ":9467", "127.0.0.1:http", "[::1]9467"])
def test_a_bad_listen_address_names_the_key(tmp_path: Path, bad: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'[metrics]\nlisten = "{bad}"\n')
    with pytest.raises(ConfigError, match=r"metrics\.listen"):
        runmode.load_config(conf)


@given(st.ip_addresses(), st.integers(1, 65535))
def test_parse_listen_round_trips(addr: Any, port: int) -> None:
    text = f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"
    assert parse_listen(text) == (str(addr), port)


@given(st.text(max_size=60))
def test_parse_listen_refuses_with_a_value_error_only(text: str) -> None:
    try:
        host, port = parse_listen(text)
    except ValueError as e:
        assert str(e)
    else:
        assert 0 < port < 65536 and host


@pytest.mark.parametrize("bad", ["slipsq.prom", "/var/lib/node_exporter/slipsq.txt", "relative/x.prom"])
def test_a_textfile_node_exporter_would_not_read_is_refused(tmp_path: Path, bad: str) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(f'[metrics]\ntextfile = "{bad}"\n')
    with pytest.raises(ConfigError, match=r"metrics\.textfile.*\.prom"):
        runmode.load_config(conf)


def test_a_client_that_trickles_its_request_is_cut_off_and_scrapes_go_on(exporter_for: Any,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The socket timeout bounds each read, not a request: a client sending a byte now and then
    (under the timeout each time) held the one server thread for as long as it liked, and every
    scrape behind it failed. It gets HTTP_TIMEOUT for the whole request."""
    from slipsq.output import metrics

    monkeypatch.setattr(metrics, "HTTP_TIMEOUT", 1.0)
    listen = f"127.0.0.1:{free_port()}"
    exporter_for(lambda: {"queue": {"packets": 5}}, listen=listen)
    slow = socket.create_connection(parse_listen(listen))
    cut = threading.Event()

    def trickle() -> None:
        data = b"GET /metrics HTTP/1.1\r\nX-Slow: " + b"a" * 200
        try:
            for i in range(len(data)):  # a byte every 0.3 s: never idle for the 1 s timeout
                slow.send(data[i:i + 1])
                time.sleep(0.3)
        except OSError:
            cut.set()  # reset by the server
            return
        slow.settimeout(5)
        try:
            if slow.recv(1024) == b"":
                cut.set()
        except OSError:
            cut.set()

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    time.sleep(0.5)  # it is the request the server is reading
    assert value(scrape(listen), "slipsq_packets") == 5  # answered while the trickle would go on for a minute
    assert wait_for(cut.is_set, 30)
    slow.close()
