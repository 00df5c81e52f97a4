"""What a hook costs the daemon's worker thread (the caller of Hooks.alert), measured against the
same calls into a sink that does nothing, in one run:

    python bench/hooks.py [--rounds 5] [--alerts 5000]

Per round, every call's duration is taken; the table shows, over the rounds, min/median/max of the
per-round median and of the per-round longest call, and the ratio of the hooked median to the
baseline median. Three cases: the baseline (a no-op sink), a hook under a flood (the bucket refuses
almost all: the common case under attack) and a hook that admits every call into a small queue of a
slow command (every call builds the JSON and offers it; most are dropped when the queue is full).
Under systemd the worker thread also shares the GIL with the packet loop (switch interval 1 ms,
daemon.py), which bounds how long any of these can wait for it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slipsq.hooks import Hooks  # noqa: E402
from slipsq.records import Alert  # noqa: E402
from tests.flowgen import bundled_alerts  # noqa: E402


def timed(call: Callable[[Alert], object], alert: Alert, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        call(alert)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--alerts", type=int, default=5000)
    args = ap.parse_args()
    sys.setswitchinterval(0.001)  # as the daemon runs
    alert = bundled_alerts()[0]
    with tempfile.TemporaryDirectory() as tmp:
        slow = Path(tmp) / "slow"
        slow.write_text("#!/bin/sh\ncat >/dev/null; sleep 0.05\n")
        slow.chmod(0o755)
        results: dict[str, list[tuple[float, float]]] = {"baseline (no-op sink)": [],
                                                          "hook, flood refused by the bucket": [],
                                                          "hook, every call admitted": []}
        for _ in range(args.rounds):
            base = timed(lambda a: None, alert, args.alerts)
            flood = Hooks({"alert": [str(slow)]}, 5.0, 20, 32, lambda m: None)
            hooked = timed(flood.alert, alert, args.alerts)
            flood.close()
            open_ = Hooks({"alert": [str(slow)]}, 5.0, 10_000, 8, lambda m: None)
            admitted = timed(open_.alert, alert, args.alerts)
            open_.close()
            for name, xs in zip(results, (base, hooked, admitted)):
                results[name].append((statistics.median(xs), max(xs)))
    base_med = statistics.median(m for m, _ in results["baseline (no-op sink)"])
    print(f"{'case':38} {'median µs (min/med/max)':>26} {'longest ms (min/med/max)':>27} {'ratio':>7}")
    for name, rows in results.items():
        meds = sorted(m * 1e6 for m, _ in rows)
        longs = sorted(x * 1e3 for _, x in rows)
        ratio = statistics.median(m for m, _ in rows) / base_med if base_med else float("nan")
        print(f"{name:38} {meds[0]:8.2f} {statistics.median(meds):8.2f} {meds[-1]:8.2f} "
              f"{longs[0]:8.2f} {statistics.median(longs):8.2f} {longs[-1]:8.2f} {ratio:7.1f}")


if __name__ == "__main__":
    main()
