"""Where replay time goes: CPU seconds of the engine with no detectors, then what each detector adds.

    python -m tools.gencapture realistic --out /tmp/r1m.pcap --packets 1000000 --flows 33000
    python bench/stages.py /tmp/r1m.pcap

CPU time (process_time), best of `--runs` runs each, so a busy machine skews it less than wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from slipsq.detect import DETECTORS
from slipsq.engine import Engine, tune_gc
from slipsq.runmode import load_config as load
from slipsq.runmode import load_engine_models
from slipsq.sources.pcap import replay_capture


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture")
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    cfg = load(None)
    models = load_engine_models(None, cfg)
    tune_gc()  # as the CLI does

    def cpu(dets: list) -> tuple[float, int]:
        best, packets = 1e9, 0
        for _ in range(args.runs):
            e = Engine(cfg, models=models, detectors=dets)
            t = time.process_time()
            replay_capture(e, args.capture)
            e.finish()
            best = min(best, time.process_time() - t)
            packets = e.table.stats()["packets"]
        return best, packets

    base, packets = cpu([])
    print(f"{'no detectors':14} {base:6.2f} s  {packets / base:10,.0f} packets/s")
    for d in DETECTORS:
        print(f"{d.name:14} +{cpu([d])[0] - base:5.2f} s")
    total, _ = cpu(list(DETECTORS))
    print(f"{'all':14} {total:6.2f} s  {packets / total:10,.0f} packets/s")


if __name__ == "__main__":
    main()
