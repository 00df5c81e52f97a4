"""Per-flow cost of the detectors in CPU instructions (callgrind), not seconds: the same number on a
quiet machine and on one where five other jobs run, so two commits can be compared on a shared,
noisy machine without rounds and medians.

    python bench/flowcost.py                          # a 60,000-packet slice of the bench capture
    python bench/flowcost.py FILE --only portscan,beacon
    python bench/flowcost.py FILE --tree /path/to/other/checkout   # the same rows for another tree

Each row is one child process under `valgrind --tool=callgrind` replaying FILE through the engine
(replay_capture + finish, as bench/stages.py) with no detectors, each detector alone, or all of them;
`instr/flow` is the row's instructions above "no detectors" divided by the closed flows. Python's
start-up and imports are in every row alike and cancel out; PYTHONHASHSEED is fixed, so a row gives
the same count run after run. Instructions are not time (a cache miss costs more than an add), so
confirm a win in seconds with bench/stages.py once the machine is quiet; callgrind runs about 50x
slower than the program, so keep the capture small. Needs valgrind (`make bench` installs it).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"

CHILD = """
import sys
from slipsq.detect import DETECTORS
from slipsq.engine import Engine, tune_gc
from slipsq.runmode import load_config, load_engine_models
from slipsq.sources.pcap import replay_capture
cfg = load_config(None)
models = load_engine_models(None, cfg)
tune_gc()
row = sys.argv[2]
dets = [] if row == "none" else list(DETECTORS) if row == "all" else [d for d in DETECTORS if d.name == row]
e = Engine(cfg, models=models, detectors=dets)
replay_capture(e, sys.argv[1])
e.finish()
print("FLOWS", e.counters.flows, file=sys.stderr)
"""


def slice_of(capture: Path, packets: int) -> Path:
    """The first `packets` packets of `capture`, cached beside it."""
    out = capture.with_name(f"{capture.stem}-first{packets}.pcap")
    if not out.exists():
        import dpkt

        with open(capture, "rb") as src, open(out, "wb") as dst:
            r = dpkt.pcap.Reader(src)
            w = dpkt.pcap.Writer(dst, linktype=r.datalink())
            for i, (ts, buf) in enumerate(r):
                if i >= packets:
                    break
                w.writepkt(buf, ts)
    return out


def count(tree: Path, capture: Path, row: str) -> tuple[int, int]:
    """(instructions, flows) of one row, run from `tree` (its slipsq is imported)."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tree))
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, "-c",
                        CHILD, str(capture), row], capture_output=True, text=True, env=env, cwd=tree, check=False)
    instr = re.search(r"Collected : (\d+)", r.stderr)
    flows = re.search(r"FLOWS (\d+)", r.stderr)
    if r.returncode != 0 or instr is None or flows is None:
        raise SystemExit(f"bench/flowcost.py: row {row} failed:\n{r.stderr[-2000:]}")
    return int(instr.group(1)), int(flows.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", type=Path, help="default: a slice of bench/replay.py's capture")
    ap.add_argument("--packets", type=int, default=60_000, help="packets of the default capture to replay")
    ap.add_argument("--only", default="", help="comma-separated detectors (default: each one, then all)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose slipsq runs (built in place)")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("bench/flowcost.py: skipped: needs valgrind (apt-get install valgrind)", file=sys.stderr)
        return 0
    capture = args.capture.resolve() if args.capture is not None else None  # the rows run in --tree
    if capture is None:
        full = sorted(OUT.glob("realistic-3000000p-100000f-s1-*.pcap"))
        full = [p for p in full if "-first" not in p.name]
        if not full:
            print("bench/flowcost.py: no capture given and none cached: run bench/replay.py once", file=sys.stderr)
            return 2
        capture = slice_of(full[0], args.packets)
    from slipsq.detect import DETECTORS

    names = [n for n in args.only.split(",") if n] or [d.name for d in DETECTORS]
    # bytecode compiled once here, not in each row (PYTHONDONTWRITEBYTECODE would make every row compile)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(args.tree / "slipsq")], check=False,
                   stdout=subprocess.DEVNULL, env=env)
    base, flows = count(args.tree, capture, "none")
    print(f"{capture.name}: {flows:,} flows; slipsq from {args.tree}")
    print(f"{'no detectors':14} {base:>15,} instructions")
    for name in [*names, "all"]:
        n, _ = count(args.tree, capture, name)
        print(f"{name:14} {n - base:>+15,} instructions  {(n - base) / max(flows, 1):>9,.0f} instr/flow", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
