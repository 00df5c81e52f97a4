"""Multi-queue benchmark: small-UDP packets/s inspected by one slipsq process (`--queue 3`) against
two queue workers (`--queue 3:4`), through a namespace gateway, in rounds. Needs root.

    python bench/multiqueue.py [--rounds 5] [--seconds 3] [--senders 2] [--nice -10] [--json]
    python bench/multiqueue.py --wire            # the worker wire's cost per closed flow, no root

Traffic: SENDERS flood processes (clients A and B in turn), each sending 18-byte UDP datagrams
round-robin to 64 server addresses, so the kernel's --queue-balance hash (over the address pair)
spreads them over both queues. The server namespace drops them in its INPUT chain (no receiver
process competing for the CPU); its rule counter is the forwarded count. "inspected" is the
daemon's own packet count (status) over the phase: with fail-open, what the queue cannot take is
forwarded uninspected, so inspected pps is the capacity. CPU columns are CPU seconds per wall
second of the slipsq processes (daemon + workers) and of the whole machine (from /proc/stat): the
machine has 2 cores shared with other work, and the senders and the kernel's forwarding need CPU
too, so the ratio is what this machine allows, not what 2 free cores would give. `--nice -10` runs
the bench's own processes (senders, slipsq and its workers, alike in both modes) ahead of other work
on a shared machine, for a few seconds per phase: nearer to a machine of one's own.

    python bench/multiqueue.py --prefill 60000 [--rounds 5]    # capacity on 2 cores, no sender running

`--prefill N` measures capacity with no sender competing for the cores: slipsq (the daemon and its
workers) is stopped (SIGSTOP), the senders queue N packets a queue in the kernel (a queue deep
enough to hold them; this kernel holds at most 65,536 in one queue, whatever its maxlen), and then
slipsq is resumed (SIGCONT) and timed until its queues are empty (the
"waiting" column of /proc/net/netfilter/nfnetlink_queue, read every millisecond by a small poller
in the gateway). Inspected pps = packets waiting at the resume / seconds to drain them. While it
drains, the machine runs slipsq, the kernel's forwarding of what it accepts, and the poller.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slipsq.multiqueue import parse_queue  # noqa: E402
from tests.kernel.lab import CNC, Daemon, Lab, why_no_lab  # noqa: E402

NET = "10.71.4"
DESTS = 64
# --prefill: more address pairs, so the --queue-balance hash splits the packets more evenly (the
# drain lasts as long as the fuller queue: an uneven split is a worker idle at the end)
PREFILL_DESTS = 250
# for SECS seconds, or (SECS 0) until COUNT packets are sent (in bursts of one then, to stop at it)
FLOOD = r"""
import socket, sys, time
net, n, secs, count = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
socks = []
for i in range(1, n + 1):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((f"{net}.{i}", 9999))
    socks.append(s)
payload = b"x" * 18
sent = 0
burst = 32 if secs else 1
end = time.monotonic() + secs
while time.monotonic() < end if secs else sent < count:
    for s in socks:
        for _ in range(burst):
            try:
                s.send(payload)
                sent += 1
            except OSError:
                pass
print(sent, flush=True)
"""
# in the gateway: the packets waiting in `queues` by queue (on a "count" line), then (on "go")
# every millisecond until none is left: the time they were all verdicted
DRAIN = r"""
import sys, time
from slipsq.verdict.firewall import queue_counters
queues = {int(q) for q in sys.argv[1].split(",")}
def per_queue():
    return [c.waiting for num, c in sorted(queue_counters().items()) if num in queues]
for line in sys.stdin:
    if line.startswith("count"):
        print(*per_queue(), flush=True)
    elif line.startswith("go"):
        end = time.time() + 60
        while sum(per_queue()) and time.time() < end:
            time.sleep(0.001)
        print(time.time(), sum(per_queue()), flush=True)
        break
"""


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) of one process so far."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as fh:
        f = [int(x) for x in fh.readline().split()[1:]]
    idle = f[3] + f[4]
    return float(sum(f) - idle), float(sum(f))


NICE: list[str] = []  # ["nice", "-n", "-10"] with --nice
MAXLEN = [16384]  # --queue-maxlen of both modes (--maxlen)


def start(lab: Lab, queue: str, state: Path) -> Daemon:
    """slipsq on `queue` (one process, or a worker per queue of a range) with neither a config file
    nor a backend of the bench's choosing: what a bare `slipsq --queue` does."""
    run = Daemon(lab, state, queue=queue, prefix=NICE)
    run.start("--queue-maxlen", str(MAXLEN[0]), timeout=30)  # a shared machine can be slow to start it
    return run


def pids(run: Daemon) -> list[int]:
    """The daemon's pid and its workers'."""
    st = run.try_status() or {}
    return [int(st["pid"])] + [int(w["pid"]) for w in st.get("workers", []) if w.get("pid")]


def forwarded(lab: Lab) -> int:
    out = lab.sh(lab.ns["srv"], "iptables", "-nvxL", "INPUT").stdout
    for line in out.splitlines():
        if "dpt:9999" in line:
            return int(line.split()[0])
    return 0


def phase(lab: Lab, run: Daemon, seconds: float, senders: int) -> dict[str, Any]:
    procs = pids(run)
    s0, c0, m0, f0 = run.try_status() or {}, [cpu_of(p) for p in procs], machine_busy(), forwarded(lab)
    t0 = time.monotonic()
    floods = [lab.popen(lab.ns["ab"[i % 2]], *NICE, sys.executable, "-c", FLOOD, NET, str(DESTS), str(seconds),
                        "0") for i in range(senders)]
    sent = sum(int(p.communicate(timeout=seconds + 30)[0].split()[-1]) for p in floods)
    wall = time.monotonic() - t0
    s1, c1, m1, f1 = run.try_status() or {}, [cpu_of(p) for p in procs], machine_busy(), forwarded(lab)
    per = [w1["packets"] - w0["packets"] for w0, w1 in zip(s0.get("workers", []), s1.get("workers", []))]
    return {"queue": run.queue, "sent": sent, "seconds": wall,
            "inspected_pps": (s1["packets"] - s0["packets"]) / wall, "forwarded_pps": (f1 - f0) / wall,
            "per_worker": per, "slipsq_cpu": (sum(c1) - sum(c0)) / wall,
            "daemon_cpu": (c1[0] - c0[0]) / wall,
            "machine_cpu": (m1[0] - m0[0]) / max(1.0, m1[1] - m0[1]) * (os.cpu_count() or 1)}


def queue_numbers(queue: int | str) -> list[int]:
    """The queues of a --queue argument, as the daemon reads it (multiqueue.parse_queue)."""
    q = parse_queue(str(queue))
    return [q] if isinstance(q, int) else list(range(q[0], q[1] + 1))


def prefill_phase(lab: Lab, run: Daemon, count: int, senders: int) -> dict[str, Any]:
    """Stop slipsq, queue `count` packets a queue, resume it, time the drain (the module's docstring)."""
    procs = pids(run)
    poller = lab.popen(lab.gw, sys.executable, "-c", DRAIN, ",".join(map(str, queue_numbers(run.queue))),
                       stdin=True)
    assert poller.stdin is not None and poller.stdout is not None
    f0, c0 = forwarded(lab), [cpu_of(p) for p in procs]
    stopped = time.monotonic()
    for p in procs:
        os.kill(p, signal.SIGSTOP)
    try:
        total = count * len(queue_numbers(run.queue))  # `count` a queue: each drains about as long
        floods = [lab.popen(lab.ns["ab"[i % 2]], sys.executable, "-c", FLOOD, NET, str(PREFILL_DESTS), "0",
                            str(total // senders)) for i in range(senders)]
        sent = sum(int(p.communicate(timeout=60)[0].split()[-1]) for p in floods)
        time.sleep(0.2)  # the last packets' way through the gateway into the queue
        poller.stdin.write("count\n")
        poller.stdin.flush()
        split = [int(x) for x in poller.stdout.readline().split()]
        queued = sum(split)
        poller.stdin.write("go\n")
        poller.stdin.flush()
        t0 = time.time()
    finally:
        for p in procs:
            os.kill(p, signal.SIGCONT)
    stop_s = time.monotonic() - stopped
    t_end, left = poller.stdout.readline().split()
    poller.wait(timeout=10)
    wall = float(t_end) - t0
    c1 = [cpu_of(p) for p in procs]
    return {"queue": run.queue, "sent": sent, "queued": queued, "split": split, "left": int(left), "seconds": wall,
            "stopped_s": stop_s, "inspected_pps": (queued - int(left)) / wall,
            "forwarded_during": forwarded(lab) - f0, "slipsq_cpu": (sum(c1) - sum(c0)) / wall}


def bench(rounds: int, seconds: float, senders: int, prefill: int = 0) -> list[dict[str, Any]]:
    lab = Lab()
    out = []
    try:
        lab.up()
        lab.sh(lab.ns["srv"], "ip", "route", "add", "local", f"{NET}.0/24", "dev", "lo")
        lab.sh(lab.gw, "ip", "route", "add", f"{NET}.0/24", "via", CNC)
        lab.sh(lab.ns["srv"], "iptables", "-A", "INPUT", "-p", "udp", "--dport", "9999", "-j", "DROP")
        for r in range(rounds):
            pair = {}
            # alternate which goes first, so a drift in the machine's load favours neither
            for queue in (("3", "3:4") if r % 2 == 0 else ("3:4", "3")):
                with tempfile.TemporaryDirectory() as state:
                    run = start(lab, queue, Path(state))
                    try:
                        time.sleep(0.5)
                        pair[queue] = (prefill_phase(lab, run, prefill, senders) if prefill
                                       else phase(lab, run, seconds, senders))
                    finally:
                        run.stop(timeout=30)
            out.append({"one": pair["3"], "two": pair["3:4"],
                        "ratio": pair["3:4"]["inspected_pps"] / max(1.0, pair["3"]["inspected_pps"])})
    finally:
        lab.down()
    return out


def wire(n: int = 20_000) -> dict[str, float]:
    """Microseconds per closed flow: Flow tuples through the wire (encode, decode, check, Flow objects)
    against JSON of the same tuples and against making the Flow objects alone."""
    from slipsq import mqwire
    from slipsq.flow import Flow

    addrs = [f"10.0.{i // 250}.{i % 250}" for i in range(1000)]  # the table shares address strings
    flows = [Flow(1.7e9 + i, 1.7e9 + i + 0.5, "tcp", addrs[i % 1000], 40000 + i % 20000, "192.0.2.1", 443,
                  6, 5, 900, 4200, "SRPA_SPA", "<->", 0, 0, "", "fin") for i in range(n)]
    res: dict[str, float] = {}
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        msgs = mqwire.encode_batches(flows, [], None)
        got = [f for m in msgs for f in mqwire.flows_of(mqwire.loads(m))]
        best = min(best, time.perf_counter() - t)
    assert got == flows
    res["wire_us_per_flow"] = best / n * 1e6
    res["wire_bytes_per_flow"] = sum(map(len, msgs)) / n
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        data = json.dumps([mqwire.flow_tuple(f) for f in flows])
        _ = [Flow(*x) for x in json.loads(data)]
        best = min(best, time.perf_counter() - t)
    res["json_us_per_flow"] = best / n * 1e6
    tuples = [mqwire.flow_tuple(f) for f in flows]
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        _ = [Flow(*x) for x in tuples]
        best = min(best, time.perf_counter() - t)
    res["flow_objects_us_per_flow"] = best / n * 1e6
    return res


Column = tuple[str, int, Callable[[int, dict[str, Any], dict[str, Any]], str]]  # header, width, text of
# (round, one process's phase, two workers' phase)
COMMON: list[Column] = [
    ("round", 5, lambda i, a, b: str(i)), ("1 proc pps", 11, lambda i, a, b: f"{a['inspected_pps']:.0f}"),
    ("2 workers pps", 14, lambda i, a, b: f"{b['inspected_pps']:.0f}"),
    ("ratio", 6, lambda i, a, b: f"{b['inspected_pps'] / max(1.0, a['inspected_pps']):.2f}")]
FLOOD_COLUMNS: list[Column] = [
    *COMMON,
    ("per worker", 17, lambda i, a, b: "/".join(str(round(x / b["seconds"])) for x in b["per_worker"])),
    ("CPU 1", 6, lambda i, a, b: f"{a['slipsq_cpu']:.2f}"), ("CPU 2", 6, lambda i, a, b: f"{b['slipsq_cpu']:.2f}"),
    ("daemon", 7, lambda i, a, b: f"{b['daemon_cpu']:.2f}"),
    ("machine 1/2", 12, lambda i, a, b: f"{a['machine_cpu']:.2f}/{b['machine_cpu']:.2f}"),
    ("fwd 1", 9, lambda i, a, b: f"{a['forwarded_pps']:.0f}"),
    ("fwd 2", 9, lambda i, a, b: f"{b['forwarded_pps']:.0f}")]
PREFILL_COLUMNS: list[Column] = [
    *COMMON,
    ("queued 1/2", 15, lambda i, a, b: f"{a['queued']}/{b['queued']}"),
    ("split 2", 13, lambda i, a, b: "/".join(map(str, b["split"]))),
    ("drain s 1/2", 12, lambda i, a, b: f"{a['seconds']:.2f}/{b['seconds']:.2f}"),
    ("stopped s", 10, lambda i, a, b: f"{max(a['stopped_s'], b['stopped_s']):.1f}"),
    ("CPU 1", 6, lambda i, a, b: f"{a['slipsq_cpu']:.2f}"), ("CPU 2", 6, lambda i, a, b: f"{b['slipsq_cpu']:.2f}")]


def print_rounds(rows: list[dict[str, Any]], columns: list[Column], what: str) -> None:
    """The table of rounds, then the ratio's min, median and max."""
    print(" ".join(f"{h:>{w}}" for h, w, _ in columns))
    for i, r in enumerate(rows):
        print(" ".join(f"{text(i, r['one'], r['two']):>{w}}" for _, w, text in columns))
    ratios = sorted(r["ratio"] for r in rows)
    print(f"2 workers / 1 process, {what}: min {ratios[0]:.2f}  median {statistics.median(ratios):.2f}  "
          f"max {ratios[-1]:.2f} (target >= 1.6 on 2 cores)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--senders", type=int, default=2)
    ap.add_argument("--maxlen", type=int, default=16384,
                    help="--queue-maxlen of both modes: deep enough that a worker descheduled for a few ms by "
                         "other work does not overflow into fail-open (what is measured is capacity)")
    ap.add_argument("--nice", type=int, default=0, help="niceness of the bench's processes (e.g. -10)")
    ap.add_argument("--prefill", type=int, default=0, metavar="N",
                    help="capacity with no sender running: queue N packets a queue while slipsq is stopped, "
                         "then time how fast it drains them (at most 65536 here; sets --maxlen to N + 10%%)")
    ap.add_argument("--wire", action="store_true", help="only the wire's cost per flow (no root)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    w = wire()
    if args.wire:
        print(json.dumps(w) if args.json else
              f"wire (pickle, checked): {w['wire_us_per_flow']:.2f} us/flow, {w['wire_bytes_per_flow']:.0f} B/flow; "
              f"JSON: {w['json_us_per_flow']:.2f} us/flow; Flow objects alone: {w['flow_objects_us_per_flow']:.2f} us")
        return 0
    why = why_no_lab()
    if why:
        print(f"bench/multiqueue.py: skipped: {why}", file=sys.stderr)
        return 0
    MAXLEN[0] = max(args.maxlen, args.prefill + args.prefill // 10)
    if args.nice:
        NICE[:] = ["nice", "-n", str(args.nice)]
    rows = bench(args.rounds, args.seconds, args.senders, args.prefill)
    if args.json:
        print(json.dumps({"rounds": rows, "wire": w}))
        return 0
    if args.prefill:
        print_rounds(rows, PREFILL_COLUMNS, "drained pps")
        print(f"load average: {os.getloadavg()}")
        return 0
    print_rounds(rows, FLOOD_COLUMNS, "inspected pps (the senders share the cores)")
    eff = [(r["two"]["inspected_pps"] / max(0.01, r["two"]["slipsq_cpu"])) /
           (r["one"]["inspected_pps"] / max(0.01, r["one"]["slipsq_cpu"])) for r in rows]
    print(f"packets per slipsq CPU-second, 2 workers / 1 process: median {statistics.median(eff):.2f}")
    print(f"wire: {w['wire_us_per_flow']:.2f} us and {w['wire_bytes_per_flow']:.0f} B per closed flow "
          f"(JSON {w['json_us_per_flow']:.2f} us; Flow objects alone {w['flow_objects_us_per_flow']:.2f} us)")
    print(f"load average: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
