"""Packet-loop stall under a burst of blocks and expiries: the daemon's loop before (commands carried
out on the loop, one ipset call and one fsync'd store transaction per block, as slipsq did until the
engine returned commands) and after (the loop hands each batch to the worker thread). Needs root; runs
in a network namespace of its own, so the real ipset sets and the real SQLite store it uses touch
nothing on the host.

    python bench/stall.py [--blocks 1000] [--json]

The loop is the daemon's: it feeds packets to the compiled flow table and calls `engine.advance` on
its own clock, and measures the longest gap between two of its turns. In the middle of the run the
engine decides `--blocks` blocks at once (as admin/judge Block commands: the same path), and later
time jumps so that all of them expire at once. Target (issue 10): no stall over 5 ms after.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def packet(i: int) -> bytes:
    import dpkt

    udp = dpkt.udp.UDP(sport=40000 + i % 20000, dport=53, data=b"x" * 20)
    ip = dpkt.ip.IP(src=bytes([10, 0, (i >> 8) & 255, i & 255]), dst=bytes([198, 51, 100, 1]), p=17, data=udp)
    return bytes(ip)


def run(mode: str, blocks: int, state: Path) -> dict[str, Any]:
    from slipsq.allow import AllowList
    from slipsq.config import CORE_OPTIONS, Config
    from slipsq.daemon import Worker
    from slipsq.engine import Engine
    from slipsq.sink import Fanout
    from slipsq.verdict.apply import carry_out, changes
    from slipsq.verdict.firewall import Firewall
    from slipsq.verdict.store import BlockStore

    sys.setswitchinterval(0.001)  # as the daemon does
    allow = AllowList()
    fw = Firewall(allow, "auto", ipv6=False)
    fw.ensure_sets()
    store = BlockStore(state)
    engine = Engine(Config(CORE_OPTIONS), allow=allow, detectors=[])
    worker = Worker(fw, store, Fanout([]))
    if mode == "worker":
        worker.start()
    pkts = [packet(i) for i in range(512)]
    t0 = 1_700_000_000.0
    clock = t0
    gaps: list[float] = []
    engine_s = 0.0  # the longest engine call: the loop's own work, not a wait
    burst_at, expire_at, turns = 300, 900, 1400
    last = time.perf_counter()
    pending = 0
    for turn in range(turns):
        for j in range(64):  # a turn's packets
            engine.table.feed(pkts[(turn * 64 + j) % 512], clock, 101)
        clock += 0.01
        e0 = time.perf_counter()
        if turn == burst_at:
            cmds = []
            for i in range(blocks):
                cmds += engine.block(f"203.0.{i >> 8}.{i & 255}", clock, 60.0, "bench", "admin:bench")
        elif turn == expire_at:
            clock += 61.0  # every block has run out
            cmds = engine.advance(clock)
        else:
            cmds = engine.advance(clock)
        engine_s = max(engine_s, time.perf_counter() - e0)
        if cmds:
            pending += len(cmds)
            if mode == "worker":
                worker.submit(cmds)
            else:  # before: one kernel call and one transaction per command, on the loop
                for c in changes(cmds):
                    carry_out(fw, store, [c], clock)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    if mode == "worker":
        assert worker.stop(120)
    left = len(fw.members())
    store.close()
    gaps.sort()
    return {"mode": mode, "commands": pending, "max_gap_ms": round(gaps[-1] * 1000, 2),
            "p99_gap_ms": round(gaps[int(len(gaps) * 0.99)] * 1000, 2),
            "median_gap_ms": round(gaps[len(gaps) // 2] * 1000, 3), "left_in_kernel": left,
            "engine_ms": round(engine_s * 1000, 2)}


def inner(args: argparse.Namespace) -> None:
    out = []
    for mode in ("before", "worker", "before", "worker"):
        with tempfile.TemporaryDirectory() as d:
            out.append(run(mode, args.blocks, Path(d)))
            subprocess.run(["ipset", "flush"], capture_output=True)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1000)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return
    if os.geteuid() != 0:
        raise SystemExit("bench/stall.py needs root (it uses ipset in a network namespace of its own)")
    ns = f"slipsq-stall-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, __file__, "--inner",
                            "--blocks", str(args.blocks)], capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SystemExit(r.stderr)
        rows = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"packet-loop stall, {args.blocks} blocks at once then {args.blocks} expiries at once "
          "(64 packets per loop turn, 1,400 turns)")
    print(f"{'mode':8} {'commands':>8} {'max gap ms':>11} {'p99 ms':>8} {'median ms':>10} {'left in kernel':>15} "
          f"{'engine call ms':>15}")
    for r2 in rows:
        print(f"{r2['mode']:8} {r2['commands']:>8} {r2['max_gap_ms']:>11} {r2['p99_gap_ms']:>8} "
              f"{r2['median_gap_ms']:>10} {r2['left_in_kernel']:>15} {r2['engine_ms']:>15}")


if __name__ == "__main__":
    main()
