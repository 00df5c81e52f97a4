"""Measure the Stratosphere detector's cost per flow (letters + matching against every shipped model).

    python tools/bench_stratosphere.py [--flows 100000] [--tuples 3000]

1. one 4-tuple with 10,000 flows: the cost per flow early and late in the tuple, and the naive
   matcher (rebuild each model's chain from the cut training string and walk S, per flow) on a sample;
2. a workload of N flows over T tuples of mixed behaviours (beacons, bursts, browsing), in close order;
3. the memory the detector keeps for that workload (tracemalloc).
Test and benchmark tooling; never imported by slipsq.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import tracemalloc
from collections import Counter
from itertools import pairwise
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.detect.base import Context
from slipsq.detect.stratosphere.detector import StratosphereDetector
from slipsq.detect.stratosphere.markov import load_models, reference_distance, shipped_models_dir
from slipsq.flow import Flow
from slipsq.runmode import all_options


def detector() -> StratosphereDetector:
    models = load_models(shipped_models_dir())
    return StratosphereDetector(Context(Config(all_options()), AllowList(), models))


def flow(t: float, size: int, dur: float, client: str, server: str, port: int, proto: str = "tcp") -> Flow:
    return Flow(start=t, end=t + dur, proto=proto, saddr=client, sport=40000, daddr=server, dport=port,
                sbytes=size // 2, dbytes=size - size // 2, closed_by="fin")


def one_long_tuple(n: int = 10_000) -> None:
    rnd = random.Random(1)
    flows, t = [], 1e9
    for _ in range(n):
        t += rnd.choice([2.0, 2.0, 2.1, 30.0, 7.0])
        size, dur = rnd.choice([600, 6000, 6000]), rnd.choice([0.2, 1.5])
        flows.append(flow(t, size, dur, "10.0.0.5", "203.0.113.9", 443))
    det = detector()
    marks = [0, 1000, 5000, 9000, n]
    costs = []
    for a, b in pairwise(marks):
        t0 = time.perf_counter()
        for f in flows[a:b]:
            det.on_flow(f)
        costs.append((a, b, (time.perf_counter() - t0) / (b - a) * 1e6))
    print(f"one tuple, {n} flows, {sum(len(c) for c in det.chains.values())} models:")
    for a, b, us in costs:
        print(f"  flows {a:>5}-{b:<5}  {us:8.1f} us/flow")
    # the naive matcher on the same tuple at its end (S = the last 4096 characters)
    t_ = det.table.get(("10.0.0.5", "203.0.113.9", 443, "tcp"))
    assert t_ is not None
    s = t_.text
    models = [c.model for c in det.chains["tcp"]]
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        for m in models:
            reference_distance(m.letters, s)
    naive = (time.perf_counter() - t0) / reps * 1e6
    print(f"  naive matcher at len(S) = {len(s)}: {naive:8.0f} us/flow "
          f"({naive / costs[-1][2]:.0f}x the incremental one)")


KINDS = ("beacon", "bursts", "browsing", "long polls")
KIND: dict[tuple[str, str], int] = {}


def workload(n: int, tuples: int) -> None:
    rnd = random.Random(2)
    servers = [(f"10.0.{i // 250}.{i % 250 + 1}", f"198.51.{i // 200}.{i % 200 + 1}",
                rnd.choice([80, 443, 53, 8080])) for i in range(tuples)]
    events = []
    per = n // tuples
    for i, (c, s, port) in enumerate(servers):
        kind = KIND[c, s] = i % 4
        t = 1e9 + rnd.uniform(0, 600)
        proto = "udp" if port == 53 else "tcp"
        for _ in range(per):
            if kind == 0:  # beacon
                t += 30.0 + rnd.uniform(-0.5, 0.5)
                size, dur = 6000, 0.3
            elif kind == 1:  # bursts
                t += rnd.choice([0.5, 0.6, 120.0])
                size, dur = 150, 0.02
            elif kind == 2:  # browsing
                t += rnd.expovariate(1 / 20)
                size, dur = rnd.choice([400, 3000, 90000]), rnd.choice([0.05, 2.0, 40.0])
            else:  # long polls
                t += rnd.uniform(200, 900)
                size, dur = 900, 30.0
            events.append(flow(t, size, dur, c, s, port, proto))
    events.sort(key=lambda f: f.end)
    det = detector()
    tracemalloc.start()
    t0 = time.perf_counter()
    evs = 0
    labels: Counter[tuple[int, str]] = Counter()
    next_tick = 0.0
    for f in events:
        found = det.on_flow(f)
        evs += len(found)
        labels.update((KIND[f.saddr, f.daddr], e.label) for e in found)
        if f.end >= next_tick:
            det.on_tick(f.end)
            next_tick = f.end + 1.0
    el = time.perf_counter() - t0
    cur, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"workload: {len(events)} flows over {tuples} tuples: evidence {evs}, malicious matches "
          f"{det.matches}, benign {det.benign_matches}; detector memory {cur / 1e6:.1f} MB "
          f"(peak {peak / 1e6:.1f} MB, measured under tracemalloc: {el:.1f} s)")
    for (kind, label), count in sorted(labels.items()):
        print(f"  {KINDS[kind]:<10} -> {label}: {count} pieces of evidence")
    det2 = detector()
    t0 = time.perf_counter()
    for f in events:
        det2.on_flow(f)
    el = time.perf_counter() - t0
    print(f"  without tracemalloc: {el:.2f} s = {el / len(events) * 1e6:.1f} us/flow")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--tuples", type=int, default=3000)
    args = ap.parse_args()
    one_long_tuple()
    workload(args.flows, args.tuples)


if __name__ == "__main__":
    main()
