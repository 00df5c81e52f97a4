"""Where replay time goes: CPU seconds of the engine with no detectors, then what each detector adds.

    python bench/stages.py CAPTURE       (e.g. one made by: python -m tools.gencapture realistic --out F --packets 1000000 --flows 33000)

CPU time (process_time), best of two runs each, so a busy machine skews it less than wall time.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import time
from slipsq.config import load
from slipsq.engine import Engine
from slipsq.detect import DETECTORS
from slipsq.sources.pcap import replay_capture
from slipsq.replay import load_engine_models
path = sys.argv[1]
cfg = load(None)
models = load_engine_models(None, cfg)
def run(dets):
    best = 1e9
    for _ in range(2):
        e = Engine(cfg, models=models, detectors=dets)
        t = time.process_time()
        replay_capture(e, path); e.finish()
        best = min(best, time.process_time() - t)
    return best
base = run([])
print(f"{'no detectors':14} {base:6.2f}s")
for d in DETECTORS:
    print(f"{d.name:14} +{run([d]) - base:5.2f}s")
print(f"{'all':14} {run(DETECTORS):6.2f}s")
