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

    python bench/flowcost.py FILE --processes         # the replay pipeline's two processes instead

`--processes` runs the CLI, `slipsq replay FILE --json`, under `callgrind --trace-children=yes`,
once with `--processes 2` (as a user on two CPUs gets it: a table process forked beside the engine
process, slipsq/pipeline.py) and once with `--processes 1`, and prints each process's own work: its
instructions less the start-up they share (the count at the table process's fork, which its first
snapshot, forked at once and asleep for the whole replay, keeps). The engine process is the
pipeline's bound; its share of the one-process work says how much a second core can give (1 / share
at best).
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


def pipeline_work(counts: dict[int, int], parent: int) -> tuple[int, int, int]:
    """(start-up, engine process's own work, table process's own work) from the instruction counts
    of one `slipsq replay` under `callgrind --trace-children=yes`, by pid (`parent`: the command's
    own, the engine process). A forked child's count includes what its parent ran before the fork,
    so the least of the children's counts is the start-up up to the table process's fork (its first
    snapshot, forked before the first packet, sleeps through the replay), and the largest is the
    table process (on a replay without blocks, no snapshot runs)."""
    children = [n for pid, n in counts.items() if pid != parent]
    if parent not in counts or len(children) < 2:
        raise ValueError(f"need the engine process and at least two children (table, snapshot): {counts}")
    start = min(children)
    return start, counts[parent] - start, max(children) - start


def _callgrind_cli(tree: Path, capture: Path, extra: list[str], out_dir: Path) -> tuple[dict[int, int], int]:
    """Instructions by pid of `python -m slipsq replay capture --json *extra` and its children, and
    the command's own pid."""
    for old in out_dir.glob("cg.*"):
        old.unlink()
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(tree))
    with subprocess.Popen(["valgrind", "--tool=callgrind", "--trace-children=yes",
                           f"--callgrind-out-file={out_dir}/cg.%p", sys.executable, "-m", "slipsq", "replay",
                           str(capture), "--json", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env=env, cwd=tree) as p:
        _, err = p.communicate()  # (valgrind runs the program in its own process: p.pid is the command's)
    counts = {int(pid): int(n) for pid, n in re.findall(r"==(\d+)== Collected : (\d+)", err)}
    if p.returncode != 0 or p.pid not in counts:
        raise SystemExit(f"bench/flowcost.py: slipsq replay failed under callgrind:\n{err[-2000:]}")
    return counts, p.pid


def processes(tree: Path, capture: Path) -> None:
    """The --processes rows."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="slipsq-flowcost-") as tmp:
        counts, parent = _callgrind_cli(tree, capture, ["--processes", "2"], Path(tmp))
        start, engine, table = pipeline_work(counts, parent)
        one, _ = _callgrind_cli(tree, capture, ["--processes", "1"], Path(tmp))
    alone = max(one.values()) - start
    print(f"{capture.name}; slipsq from {tree}; start-up (to the fork) {start:,} instructions")
    print(f"{'one process':16} {alone:>15,} instructions")
    print(f"{'engine process':16} {engine:>15,} instructions  {engine / max(alone, 1):6.1%} of one process"
          f" (a second core gives at most {alone / max(engine, 1):.2f}x)")
    print(f"{'table process':16} {table:>15,} instructions  {table / max(alone, 1):6.1%}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("capture", nargs="?", type=Path, help="default: a slice of bench/replay.py's capture")
    ap.add_argument("--packets", type=int, default=60_000, help="packets of the default capture to replay")
    ap.add_argument("--only", default="", help="comma-separated detectors (default: each one, then all)")
    ap.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose slipsq runs (built in place)")
    ap.add_argument("--processes", action="store_true",
                    help="the replay pipeline's engine and table processes against one process (the CLI)")
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
    # bytecode compiled once here, not in each row (PYTHONDONTWRITEBYTECODE would make every row compile)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(args.tree / "slipsq")], check=False,
                   stdout=subprocess.DEVNULL, env=env)
    if args.processes:
        processes(args.tree, capture)
        return 0
    from slipsq.detect import DETECTORS

    names = [n for n in args.only.split(",") if n] or [d.name for d in DETECTORS]
    base, flows = count(args.tree, capture, "none")
    print(f"{capture.name}: {flows:,} flows; slipsq from {args.tree}")
    print(f"{'no detectors':14} {base:>15,} instructions")
    for name in [*names, "all"]:
        n, _ = count(args.tree, capture, name)
        print(f"{name:14} {n - base:>+15,} instructions  {(n - base) / max(flows, 1):>9,.0f} instr/flow", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
