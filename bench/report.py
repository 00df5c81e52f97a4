"""Report benchmark: what the activity log, the timelines and the HTML report cost on a 100k-flow
replay, against the same replay without them, in one run.

    python bench/report.py [--packets N] [--flows N] [--seed S] [--rounds R]

The input is tools/gencapture.py's realistic mix (cached under bench/out/ by bench/replay.py's
ensure_capture: 100k flows of benign traffic, which alone gives no evidence and so an empty report),
followed an hour later by a second capture of gen_corpus attacks (a beacon, scans, brute force,
DGA, exfiltration), so the report has hosts to show; both are replayed as one timeline. Each row
runs as its own child process, R rounds, reporting min/median/max wall time and the ratio of
medians to the plain replay:
  replay                   `slipsq replay FILE --json > /dev/null`
  replay -o                the same with `-o DIR`: alerts, flows, activity.jsonl, timeline/<ip>.txt
  replay -o --report       and DIR/report.html
  report --from DIR        the report alone, from the folder the row above left
and the sizes of activity.jsonl and report.html, and the number of timelines. Run by hand or by
`make bench`, never by `make test`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.replay import OUT, ensure_capture, generator_version  # noqa: E402

ATTACKS = ("beacon-10s-1%", "horizontal-scan", "vertical-scan", "ssh-bruteforce", "dga-nxdomain", "exfiltration")


def ensure_attacks(shift: float = 3600.0) -> Path:
    """gen_corpus's attack scenarios, merged, an hour after the realistic capture starts (it lasts
    45 minutes), cached like the realistic capture."""
    import heapq
    import random

    from tools import gen_corpus
    from tools.gencapture import write_capture

    path = OUT / f"attacks-{generator_version()}.pcap"
    if not path.exists():
        parts = [gen_corpus.BY_NAME[name].build(random.Random(n)) for n, name in enumerate(ATTACKS)]
        shifted = ((ts + shift, frame) for ts, frame in heapq.merge(*parts, key=lambda p: p[0]))
        write_capture(shifted, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").rename(path)
    return path


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--packets", type=int, default=3_000_000)  # bench/replay.py's capture: made once for both
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    cap = ensure_capture(args.packets, args.flows, args.seed)
    attacks = ensure_attacks()
    work = OUT / "report-bench"
    slipsq = [sys.executable, "-m", "slipsq"]
    rows: dict[str, list[float]] = {}
    plans = [
        ("replay", [*slipsq, "replay", str(cap), str(attacks), "--json"]),
        ("replay -o", [*slipsq, "replay", str(cap), str(attacks), "--json", "-o", str(work), "--force"]),
        ("replay -o --report", [*slipsq, "replay", str(cap), str(attacks), "--json", "-o", str(work), "--force",
                                "--report"]),
        ("report --from DIR", [*slipsq, "report", "--from", str(work), "-o", str(work / "again.html")]),
    ]
    for n in range(args.rounds):  # rounds interleaved: a busy spell of the shared machine hits every row
        for name, cmd in plans:
            rows.setdefault(name, []).append(timed(cmd))
        print(f"round {n + 1}/{args.rounds} done", flush=True)
    base = statistics.median(rows["replay"])
    print(f"\n{cap.name} + {attacks.name}\n{'row':<22} {'min s':>7} {'median s':>9} {'max s':>7} {'x replay':>9}")
    for name, times in rows.items():
        med = statistics.median(times)
        print(f"{name:<22} {min(times):>7.2f} {med:>9.2f} {max(times):>7.2f} {med / base:>9.2f}")
    summary = (work / "summary.json").read_text()
    flows = summary.split('"flows": ')[1].split(",")[0]
    print(f"\nflows {flows}; activity.jsonl {(work / 'activity.jsonl').stat().st_size / 1e6:.1f} MB; "
          f"report.html {(work / 'report.html').stat().st_size / 1e3:.0f} kB; "
          f"timelines {len(list((work / 'timeline').glob('*.txt')))}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
