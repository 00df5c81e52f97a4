"""What watching slipsq costs: `slipsq top`'s CPU (its own, and what its once-a-second requests add to
the daemon), and a Prometheus scrape's (in-process, over HTTP, against a `slipsq status` request).

    python bench/observe.py top --seconds 60 --rounds 3
    python bench/observe.py scrape --scrapes 300
    python bench/observe.py lab --seconds 60       # root: a real daemon in a namespace gateway

The daemon is tests/fakedaemon.py's kernel-free one (the real control server, handler, engine, worker
and store; counters moved by a thread as if 20,000 packets/s went through), in its own process, with
20 blocks and an alert every 2 s. CPU times are the processes' own (utime + stime from /proc).
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, and of its children it has waited for (the daemon's iptables-save)."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def serve(state_dir: str, metrics_listen: str) -> None:
    """(child) a kernel-free daemon whose counters move, until SIGTERM."""
    from tests.fakedaemon import running_daemon

    stop = False

    def term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, term)
    cfg = {"metrics.listen": metrics_listen} if metrics_listen else None
    with running_daemon(Path(state_dir), cfg) as d:
        for i in range(20):
            d.judged_block(f"203.0.113.{i + 1}", "beacon")
        exporter = None
        if metrics_listen:
            from slipsq.output.metrics import Exporter, daemon_snapshot

            exporter = Exporter.from_config(d.cfg, lambda: daemon_snapshot(d), lambda m: print(m, file=sys.stderr))
            exporter.start()
        print("ready", flush=True)
        n = 0
        while not stop:
            time.sleep(0.1)
            n += 1
            c = d.source.counters
            c["packets"] += 2000
            c["accepted"] += 1990
            c["dropped"] += 10
            if n % 20 == 0:
                d.alert(f"192.168.1.{n % 200}", "longconn", "a long connection")
        if exporter is not None:
            exporter.stop()


def start_daemon(state_dir: str, metrics_listen: str = "") -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, __file__, "serve", state_dir, metrics_listen], stdout=subprocess.PIPE,
                         text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.stdout is not None
    if p.stdout.readline().strip() != "ready":
        p.kill()
        p.wait(10)
        raise SystemExit("the kernel-free daemon did not start")
    return p


def measure_top(seconds: float, rounds: int) -> None:
    from tests.screen import Term

    rows = []
    with tempfile.TemporaryDirectory() as sd:
        daemon = start_daemon(sd)
        try:
            for r in range(rounds):
                d0 = cpu_seconds(daemon.pid)
                time.sleep(seconds)
                idle = cpu_seconds(daemon.pid) - d0
                t = Term(Path(sd), 30, 120)
                t.wait("BLOCKS (20)")
                t0, d0 = cpu_seconds(t.child.pid), cpu_seconds(daemon.pid)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t.pump()  # keep the pty drained, as a terminal would
                    time.sleep(0.2)
                top = cpu_seconds(t.child.pid) - t0
                watched = cpu_seconds(daemon.pid) - d0
                t.child.send("q")
                t.child.expect("\x1b\\[\\?1049l", timeout=20)
                t.close()
                rows.append((top, idle, watched))
                print(f"round {r + 1}: top {top:.2f} s CPU in {seconds:g} s ({100 * top / seconds:.2f} %); daemon "
                      f"{idle:.2f} s unwatched, {watched:.2f} s watched (+{100 * (watched - idle) / seconds:.2f} %)")
        finally:
            daemon.terminate()
            daemon.wait(10)
    for name, i in (("top's CPU %", 0), ("daemon's extra CPU % while watched", None)):
        vals = [100 * (r[0] if i == 0 else r[2] - r[1]) / seconds for r in rows]
        print(f"{name:<36} min {min(vals):.2f}  median {statistics.median(vals):.2f}  max {max(vals):.2f}")


def measure_scrape(scrapes: int) -> None:
    import socket
    import urllib.request

    from slipsq.control import request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/metrics"
    with tempfile.TemporaryDirectory() as sd:
        daemon = start_daemon(sd, f"127.0.0.1:{port}")
        try:
            size = len(urllib.request.urlopen(url, timeout=10).read())
            results = {}
            for name, call in (("scrape /metrics (HTTP)", lambda: urllib.request.urlopen(url, timeout=10).read()),
                               ("slipsq status request", lambda: request(Path(sd), {"cmd": "status"}))):
                times = []
                d0 = cpu_seconds(daemon.pid)
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                cpu = (cpu_seconds(daemon.pid) - d0) / scrapes
                results[name] = (statistics.median(times), min(times), max(times), cpu)
        finally:
            daemon.terminate()
            daemon.wait(10)
    base = results["slipsq status request"][3]
    print(f"/metrics: {size} bytes; {scrapes} requests each")
    print(f"{'':<24} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'daemon CPU ms/req':>18} {'ratio':>6}")
    for name, (med, lo, hi, cpu) in results.items():
        print(f"{name:<24} {1e3 * med:>10.2f} {1e3 * lo:>8.2f} {1e3 * hi:>8.2f} {1e3 * cpu:>18.2f} "
              f"{cpu / base if base else float('nan'):>6.2f}")


def measure_lab(seconds: float, requests: int) -> None:
    """A real daemon in a namespace gateway (tests/kernel/lab.py, root): what a full and a light
    status request cost it (the full one runs iptables-save for the block rules' counters), and
    slipsq top's CPU and the daemon's, watched and not, over `seconds`."""
    import shutil

    from slipsq.control import request
    from tests.kernel.lab import Daemon, Lab
    from tests.screen import Term

    lab = Lab()
    try:
        lab.up()
        with tempfile.TemporaryDirectory() as tmp:
            s = Daemon(lab, Path(tmp) / "state", backend="nft" if shutil.which("iptables-nft") else "legacy",
                       config={})  # an empty config file, as the kernel tests run it
            s.start()
            assert s.proc is not None
            pid = s.proc.pid
            for i in range(10):
                s.cli("block", f"203.0.113.{i + 1}", "--for", "1h")
            print(f"status requests to a real daemon ({s.backend} backend, 10 blocks), {requests} each")
            print(f"{'':<14} {'median ms':>10} {'daemon CPU ms/request':>22}")
            for light in (False, True):
                times = []
                c0 = cpu_seconds(pid)
                for _ in range(requests):
                    t0 = time.perf_counter()
                    request(s.state_dir, {"cmd": "status", "light": light})
                    times.append(time.perf_counter() - t0)
                cpu = (cpu_seconds(pid) - c0) / requests
                print(f"{'light' if light else 'full':<14} {1e3 * statistics.median(times):>10.2f} {1e3 * cpu:>22.2f}")
            c0 = cpu_seconds(pid)
            time.sleep(seconds)
            idle = cpu_seconds(pid) - c0
            t = Term(s.state_dir, 30, 120)
            try:
                t.wait("BLOCKS (10)")
                t0, c0 = cpu_seconds(t.child.pid), cpu_seconds(pid)
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    t.pump()
                    time.sleep(0.2)
                top, watched = cpu_seconds(t.child.pid) - t0, cpu_seconds(pid) - c0
                t.child.send("q")
                t.finish()
            finally:
                t.close()
            print(f"over {seconds:g} s: slipsq top {top:.2f} s CPU ({100 * top / seconds:.2f} %); the daemon "
                  f"{idle:.2f} s unwatched, {watched:.2f} s watched (+{100 * (watched - idle) / seconds:.2f} %)")
            s.stop()
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("top")
    t.add_argument("--seconds", type=float, default=60.0)
    t.add_argument("--rounds", type=int, default=1)
    s = sub.add_parser("scrape")
    s.add_argument("--scrapes", type=int, default=300)
    lab = sub.add_parser("lab")
    lab.add_argument("--seconds", type=float, default=60.0)
    lab.add_argument("--requests", type=int, default=100)
    v = sub.add_parser("serve")
    v.add_argument("state_dir")
    v.add_argument("metrics_listen", nargs="?", default="")
    a = ap.parse_args()
    if a.what == "top":
        measure_top(a.seconds, a.rounds)
    elif a.what == "lab":
        measure_lab(a.seconds, a.requests)
    elif a.what == "scrape":
        measure_scrape(a.scrapes)
    else:
        serve(a.state_dir, a.metrics_listen)


if __name__ == "__main__":
    main()
