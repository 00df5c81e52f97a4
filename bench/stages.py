"""Where replay time goes: CPU seconds of the engine with no detectors, then what each detector adds,
and the detectors' cost per closed flow (µs).

    python bench/stages.py bench/out/realistic-3000000p-100000f-s1-*.pcap --runs 3
    python bench/stages.py FILE --only portscan,beacon     # just these rows (and "all")
    python bench/stages.py FILE --total                    # only "no detectors" and "all"

CPU time (process_time) of replay_capture + finish in this process, best of `--runs` runs each, so a
busy machine skews it less than wall time. The rows run in rounds (every row once, then again), so a
burst of load lands on all of them alike. `µs/flow` is the row's CPU time above "no detectors"
divided by the flows the engine analysed: the Python work per closed flow (the table's own work and
the flows' hand-over are in "no detectors"). With every row, the last line compares the sum of the
rows with "all": on the 200k-flow bench capture the detectors together cost 25-45 % more than apart.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from slipsq import twins
from slipsq.detect import DETECTORS
from slipsq.detect.base import Detector
from slipsq.engine import Engine, tune_gc
from slipsq.runmode import load_config as load
from slipsq.runmode import load_engine_models
from slipsq.sources.pcap import replay_capture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated detector names (default: every one)")
    ap.add_argument("--total", action="store_true", help="only 'no detectors' and 'all'")
    args = ap.parse_args()
    cfg = load(None)
    models = load_engine_models(None, cfg)
    tune_gc()  # as the CLI does
    only = {n for n in args.only.split(",") if n}
    rows: list[tuple[str, list[type[Detector]]]] = [("no detectors", [])]
    if not args.total:
        rows += [(d.name, [d]) for d in DETECTORS if not only or d.name in only]
    rows.append(("all", list(DETECTORS)))
    best = {name: 1e9 for name, _ in rows}
    packets = flows = 0
    for _ in range(args.runs):
        for name, dets in rows:
            e = Engine(cfg, models=models, detectors=dets)
            t = time.process_time()
            replay_capture(e, args.capture)
            e.finish()
            best[name] = min(best[name], time.process_time() - t)
            packets, flows = e.table.stats()["packets"], e.counters.flows
    base = best["no detectors"]
    print(f"{twins.implementation()}; {packets:,} packets, {flows:,} flows; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'no detectors':14} {base:6.2f} s  {packets / base:10,.0f} packets/s")
    for name, _ in rows[1:-1]:
        extra = best[name] - base
        print(f"{name:14} +{extra:5.2f} s  {extra / max(flows, 1) * 1e6:6.2f} µs/flow")
    total = best["all"]
    print(f"{'all':14} {total:6.2f} s  {packets / total:10,.0f} packets/s  "
          f"{(total - base) / max(flows, 1) * 1e6:6.2f} µs/flow over no detectors")
    if len(rows) == len(DETECTORS) + 2:  # every detector has its row: compare the parts with the whole
        parts = sum(best[name] - base for name, _ in rows[1:-1])
        if parts <= 0.05 * (total - base):  # the rows are within the noise of "no detectors"
            print(f"the rows summed: {parts:+.2f} s against {total - base:+.2f} s all together: the machine was "
                  "too noisy for the rows (run again with more --runs)")
        else:
            print(f"the rows summed: +{parts:.2f} s; all together: +{total - base:.2f} s, "
                  f"{(total - base - parts) / parts:+.0%} (above 0: the detectors slow each other down when "
                  "they run together: more live state, fewer cache hits, longer collections)")


if __name__ == "__main__":
    main()
