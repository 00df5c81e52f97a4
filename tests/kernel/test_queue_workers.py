"""`slipsq --queue A:B` on a real gateway: two worker processes, two NFQUEUEs fed by the kernel's
--queue-balance hash, one daemon judging both.

The scan targets 100 addresses (a /24 routed to the server namespace, which answers every port with
a RST), so the kernel's hash over the address pair spreads it over both queues; the block that
follows needs the whole count (100 hosts: critical), more than either worker saw. Bounds enforced:
the scanner is blocked within 40 s of the scan's start; a killed worker's queue passes traffic at
once (fail open) and the worker is back within 10 s.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CLIENT_A, CNC, LEGIT, Lab, alive

pytestmark = pytest.mark.kernel

QUEUES = "5:6"
CONFIG = {"allow.ips": [f"{LEGIT}/32"], "judge.block_duration": 600.0, "output.json": True,
          "flowtable.tcp_closed_linger": 0.5}
SCAN_NET = "10.71.4"
SCAN = r"""
import socket, sys
for i in range(1, int(sys.argv[2]) + 1):
    s = socket.socket()
    s.settimeout(1.0)
    try:
        s.connect((f"{sys.argv[1]}.{i}", 23))
    except OSError:
        pass
    s.close()
print("done")
"""


def scan_targets(lab: Lab) -> None:
    """Every address of SCAN_NET is the server's (a local route): SYN to port 23 -> RST."""
    lab.sh(lab.ns["srv"], "ip", "route", "add", "local", f"{SCAN_NET}.0/24", "dev", "lo")
    lab.sh(lab.gw, "ip", "route", "add", f"{SCAN_NET}.0/24", "via", CNC)


def test_a_scan_spread_over_two_workers_is_judged_whole_and_blocked(lab: Lab, tmp_path: Path) -> None:
    lab.serve()
    scan_targets(lab)
    s = Slipsq(lab, tmp_path / "state", "nft", queue=QUEUES, config=CONFIG)
    s.start()
    fwd = [line for line in s.iptables().splitlines() if line.startswith("-A FORWARD")]
    assert "-j SLIPSQ" in fwd[0]
    assert '"slipsq queue 5:6"' in fwd[1] and "--queue-balance 5:6" in fwd[1] and "--queue-bypass" in fwd[1]
    st = s.status()
    assert st["queue"] == QUEUES and [w["queue"] for w in st["workers"]] == [5, 6]
    assert all(w["alive"] and w["pid"] != st["pid"] for w in st["workers"])
    assert lab.connect("a", CNC) and lab.connect("b", LEGIT)

    r = lab.sh(lab.ns["a"], sys.executable, "-c", SCAN, SCAN_NET, "100", timeout=120)
    assert r.stdout.strip() == "done"
    took = wait_for(lambda: any(b["ip"] == CLIENT_A for b in s.blocks()), timeout=40, step=0.5)
    assert took is not None, f"scanner not blocked; status {json.dumps(s.status())}"
    [b] = [b for b in s.blocks() if b["ip"] == CLIENT_A]
    assert b["detector"] == "portscan" and b["by"] == "judge"
    assert CLIENT_A in s.set_members()
    assert not lab.connect("a", CNC, timeout=0.5)  # dropped in the kernel from now on
    assert lab.connect("b", LEGIT)

    def settled() -> bool:  # the last connection's packets counted everywhere (workers report each second)
        nonlocal st
        st = s.status()
        return sum(w["packets"] for w in st["workers"]) == st["packets"] == st["table"]["packets"]

    assert wait_for(settled, timeout=10, step=0.5) is not None, st
    per = [w["packets"] for w in st["workers"]]
    assert all(n > 0 for n in per), per  # both queues carried the scan
    # the deciding evidence counted every host, more than either worker had flows for
    assert any(a["detector"] == "portscan" and "100 unanswered hosts" in a["description"]
               for a in st["last_alerts"]), st["last_alerts"]

    # one control socket for the lot: manual block and unblock reach every worker and the kernel
    s.cli("block", CNC, "--for", "10m")
    assert not lab.connect("b", CNC, timeout=0.5)
    s.cli("unblock", CNC)
    assert lab.connect("b", CNC)
    s.cli("unblock", CLIENT_A)
    assert lab.connect("a", CNC)

    # a worker killed: its queue fails open at once, the daemon restarts it
    victim = st["workers"][0]
    os.kill(victim["pid"], signal.SIGKILL)
    assert wait_for(lambda: not alive(victim["pid"]), timeout=5) is not None
    for _ in range(5):  # whichever queue each pair hashes to, traffic flows
        assert lab.connect("a", CNC) and lab.connect("b", LEGIT)

    def restarted() -> bool:
        w = s.status()["workers"][0]
        return bool(w["alive"] and w["restarts"] == 1 and w["pid"] != victim["pid"])

    assert wait_for(restarted, timeout=10, step=0.3) is not None
    before = s.status()["packets"]
    assert lab.connect("a", CNC) and lab.connect("b", LEGIT)
    assert wait_for(lambda: s.status()["packets"] > before, timeout=3) is not None  # counts go on from the sum
    assert s.proc is not None and s.proc.poll() is None

    # clean stop: diversion out, every worker gone, exit 0
    pids = [w["pid"] for w in s.status()["workers"]]
    code, err = s.stop()
    assert code == 0, err
    assert "NFQUEUE" not in s.iptables() and "-j SLIPSQ" in s.iptables()
    assert not any(alive(p) for p in pids)
    assert "Traceback" not in err
    assert lab.connect("a", CNC)


def test_balance_rule_on_both_backends_fails_open_and_is_removed(lab: Lab, tmp_path: Path, backend: str) -> None:
    lab.serve()
    s = Slipsq(lab, tmp_path / "state", backend, queue=QUEUES, config=CONFIG)
    s.start()
    rules = s.iptables()
    assert "--queue-balance 5:6" in rules and "--queue-bypass" in rules and "slipsq queue 5:6" in rules
    assert lab.connect("a", CNC)
    pids = [w["pid"] for w in s.status()["workers"]]
    s.kill9()  # the daemon dies: its workers follow (EOF on their socket), the queues fail open
    assert wait_for(lambda: not any(alive(p) for p in pids), timeout=10) is not None
    assert "--queue-balance" in s.iptables()
    assert lab.connect("a", CNC) and lab.connect("b", LEGIT)
    r = s.cli("rules", "remove")
    assert "removed" in r.stdout
    assert "NFQUEUE" not in s.iptables() and "SLIPSQ" not in s.iptables()


def test_a_busy_queue_in_the_range_fails_the_start_with_one_line(lab: Lab, tmp_path: Path) -> None:
    first = Slipsq(lab, tmp_path / "one", "nft", queue=6, config=CONFIG)
    first.start()
    s = Slipsq(lab, tmp_path / "two", "nft", queue=QUEUES, config=CONFIG)
    p = s.start(wait=False)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 5, err
    assert "queue worker 6: another process (slipsq?) is bound to queue 6" in err
    assert "Traceback" not in err
    assert "slipsq queue 5:6" not in s.iptables()  # nothing diverted to a range it could not serve
    code, _ = first.stop()
    assert code == 0


CONSUMER = r"""
import json, signal, sys
from netfilterqueue import NetfilterQueue
seen = {}
def cb(p):
    b = p.get_payload()
    key = ".".join(map(str, b[12:16])) + ">" + ".".join(map(str, b[16:20]))
    seen[key] = seen.get(key, 0) + 1
    p.accept()
def stop(*a):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
q = NetfilterQueue()
q.bind(int(sys.argv[1]), cb)
print("ready", flush=True)
try:
    q.run()
except KeyboardInterrupt:
    pass
print(json.dumps(seen), flush=True)
"""
ECHO = r"""
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 7777))
s.settimeout(0.5)
print("ready", flush=True)
end = time.monotonic() + 20
while time.monotonic() < end:
    try:
        d, a = s.recvfrom(100)
        s.sendto(d, a)
    except OSError:
        pass
"""
ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.5)
s.connect((sys.argv[1], 7777))
ok = 0
for i in range(50):
    s.send(b"x")
    try:
        s.recv(10)
        ok += 1
    except OSError:
        pass
print(ok)
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two CPUs")
@pytest.mark.parametrize("fanout", [False, True], ids=["hash", "cpu-fanout"])
def test_why_the_rule_balances_by_hash_not_by_cpu(lab: Lab, fanout: bool) -> None:
    """The kernel's behaviour slipsq's design rests on: --queue-balance alone sends both directions
    of a conversation to one queue (one worker's table sees the whole flow); with --queue-cpu-fanout
    the queue follows the CPU, so a client on CPU 0 and a server on CPU 1 put the requests in one
    queue and the answers in the other: two one-way half flows, which the port-scan detector would
    count as unanswered. Bare consumers record what each queue got."""
    extra = ["--queue-cpu-fanout"] if fanout else []
    lab.sh(lab.gw, "iptables", "-I", "FORWARD", "-p", "udp", "--dport", "7777", "-j", "NFQUEUE",
           "--queue-balance", "5:6", "--queue-bypass", *extra)
    lab.sh(lab.gw, "iptables", "-I", "FORWARD", "-p", "udp", "--sport", "7777", "-j", "NFQUEUE",
           "--queue-balance", "5:6", "--queue-bypass", *extra)
    consumers = [lab.popen(lab.gw, sys.executable, "-c", CONSUMER, str(q)) for q in (5, 6)]
    for c in consumers:
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    echo = lab.popen(lab.ns["srv"], "taskset", "-c", "1", sys.executable, "-c", ECHO)
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    r = lab.sh(lab.ns["a"], "taskset", "-c", "0", sys.executable, "-c", ASK, CNC)
    assert int(r.stdout) >= 45
    seen = []
    for c in consumers:
        c.terminate()
        seen.append(json.loads(c.communicate(timeout=10)[0].splitlines()[-1]))
    there, back = f"{CLIENT_A}>{CNC}", f"{CNC}>{CLIENT_A}"
    split = [q for q in seen if there in q] != [q for q in seen if back in q]
    assert split == fanout, seen


def test_a_stalled_worker_is_killed_and_restarted(lab: Lab, tmp_path: Path) -> None:
    lab.serve()
    s = Slipsq(lab, tmp_path / "state", "nft", queue=QUEUES, config=dict(CONFIG, **{"daemon.stall_timeout": 3.0}))
    s.start()
    victim = s.status()["workers"][1]
    os.kill(victim["pid"], signal.SIGSTOP)  # hung: bound to its queue, answering nothing
    try:
        def replaced() -> bool:
            w = s.status()["workers"][1]
            return bool(w["alive"] and w["restarts"] == 1 and w["pid"] != victim["pid"])

        assert wait_for(replaced, timeout=15, step=0.3) is not None
        assert not alive(victim["pid"]) or open(f"/proc/{victim['pid']}/stat").read().split()[2] == "Z"
    finally:
        if alive(victim["pid"]):
            os.kill(victim["pid"], signal.SIGKILL)
    for _ in range(4):
        assert lab.connect("a", CNC) and lab.connect("b", LEGIT)
    assert s.proc is not None and s.proc.poll() is None  # the daemon itself went on
    code, err = s.stop()
    assert code == 0, err
    assert "sent nothing for" in err and "restarted" in err
