"""Inline cost per hand-up: the daemon's CPU per DNS answer through a namespace gateway. Needs root.

    python bench/answers.py [--answers 15000] [--rounds 2]
    python bench/answers.py --perf /tmp/answers.data     # and where the daemon's CPU goes (perf report -i)

A client namespace asks a server namespace's UDP port 53 one query at a time, through a gateway
namespace where slipsq runs inline (`--queue`, its own rules). Every answer is an app packet the
flow table hands up, so each costs a turn of the daemon's packet loop and the engine's DNS path on
top of the two packets' verdicts: the per-hand-up cost a flow-heavy home network pays, which the
bulk and small-UDP rows of bench/inline.py (few flows) never show. Reported per round: answers,
wall seconds, and the daemon's CPU (utime + stime of its process, /proc) per answer. For an A/B,
run it from each tree (a `git worktree` of the other commit): the daemon runs from this file's tree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kernel.lab import Daemon, Lab, why_no_lab  # noqa: E402

QUEUE = 4
SERVER = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.71.3.2", 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    if len(data) >= 12:  # the query back, as a response (QR set): a DNS answer with no records
        s.sendto(data[:2] + bytes([data[2] | 0x80, data[3]]) + data[4:], peer)
"""
CLIENT = r"""
import socket, struct, sys
n = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
q = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x07example\x03com\x00\x00\x01\x00\x01"
got = 0
for _ in range(n):
    s.sendto(q, ("10.71.3.2", 53))
    try:
        s.recv(2048)
        got += 1
    except OSError:
        pass
print(got)
"""


def cpu_seconds(pid: int) -> float:
    """utime + stime of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemon_pid(lab: Lab) -> int:
    """The daemon's own process (the Python under `ip netns exec`) in the lab's gateway."""
    out = subprocess.run(["ip", "netns", "pids", lab.gw], capture_output=True, text=True, check=True).stdout
    for pid in map(int, out.split()):
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"slipsq" in cmd and b"--queue" in cmd:
            return pid
    raise RuntimeError("the daemon's process is not in the gateway namespace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--answers", type=int, default=15000, help="queries (and answers) per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bypass", action="store_true", help="with flow bypass on (bypass.enabled): its "
                    "conntrack merger is polled at every turn of the packet loop")
    ap.add_argument("--perf", type=Path, metavar="FILE",
                    help="record the daemon's CPU samples of the last round (perf record -g) into FILE")
    args = ap.parse_args()
    if args.perf is not None and shutil.which("perf") is None:
        print("bench/answers.py: --perf needs perf (apt-get install linux-perf)", file=sys.stderr)
        return 2
    why = why_no_lab()
    if why:
        print(f"bench/answers.py: {why}", file=sys.stderr)
        return 2
    lab = Lab().up()
    scratch = tempfile.TemporaryDirectory(prefix="slipsq-answers-")  # the daemon's state, removed after
    try:
        server = lab.popen(lab.ns["srv"], sys.executable, "-c", SERVER)
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError("the DNS server did not start")
        daemon = Daemon(lab, Path(scratch.name) / "state", queue=QUEUE,
                        config={"bypass.enabled": True} if args.bypass else None)
        daemon.start(timeout=30)
        pid = daemon_pid(lab)
        print(f"tree {ROOT}, {args.answers:,} answers a round, bypass {'on' if args.bypass else 'off'}")
        for r in range(args.rounds):
            perf = None
            if args.perf is not None and r == args.rounds - 1:
                perf = subprocess.Popen(["perf", "record", "-q", "-g", "-F", "2000", "-p", str(pid), "-o",
                                         str(args.perf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)  # attached before the first query
            before, t0 = cpu_seconds(pid), time.monotonic()
            got = lab.sh(lab.ns["a"], sys.executable, "-c", CLIENT, str(args.answers), timeout=600).stdout.strip()
            wall, used = time.monotonic() - t0, cpu_seconds(pid) - before
            if perf is not None:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
            print(f"round {r + 1}: {got} answers in {wall:.2f} s, daemon CPU {used:.2f} s, "
                  f"{used / args.answers * 1e6:.1f} µs an answer", flush=True)
        daemon.stop()
    finally:
        lab.down()
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
