"""TCP bulk throughput (iperf3) through a namespace gateway: no queue, the bare C consumer
(bench/nfq_accept.c, compiled here), slipsq with bypass off and with bypass on, and the kernel floor
of bypass (conntrack with accounting and the bypass rule, no queue at all); with the veths' offloads
on (GRO/GSO super-packets) and off (every packet MTU-sized). Needs root and iperf3.

    python bench/throughput.py [--seconds 3] [--rounds 3] [--json]

Each round runs every mode once, so the ratios against "none" compare runs minutes apart at most on
a shared, noisy machine; the table gives min/median/max of each ratio over the rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kernel.lab import CNC, Daemon, Lab, why_no_lab  # noqa: E402

QUEUE = 5
MODES = ("none", "bare-c", "slipsq", "slipsq-bypass", "conntrack")
# the conntrack row: what every bypassed packet still costs in the kernel, with no queue at all
FLOOR = ["FORWARD", "-p", "tcp", "-m", "tcp", "--tcp-flags", "FIN,SYN,RST", "NONE", "-m", "connmark", "--mark",
         "0x400000/0x400000", "-j", "ACCEPT"]


def build_bare(out: Path) -> Path:
    exe = out / "nfq_accept"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(ROOT / "bench" / "nfq_accept.c"), "-lnetfilter_queue",
                    "-lnfnetlink"], check=True, capture_output=True, text=True)
    return exe


def offloads(lab: Lab, on: bool) -> None:
    """GRO/GSO/TSO on or off on every veth end (both sides of each link)."""
    v = "on" if on else "off"
    for side in ("a", "b", "srv"):
        for ns, dev in ((lab.ns[side], f"sq{lab.sfx}{side}0"), (lab.gw, f"sq{lab.sfx}{side}1")):
            lab.sh(ns, "ethtool", "-K", dev, "gro", v, "gso", v, "tso", v, check=False)


class Consumer:
    """One mode's queue consumer in the gateway namespace (none: no queue at all)."""

    def __init__(self, lab: Lab, mode: str, tmp: Path, bare: Path) -> None:
        self.lab, self.mode, self.tmp, self.bare = lab, mode, tmp, bare
        self.proc: Any = None  # the bare C consumer
        self.daemon: Daemon | None = None  # slipsq, in the slipsq modes
        self.state = tmp / f"state-{mode}"

    def start(self) -> None:
        lab = self.lab
        if self.mode == "conntrack":
            lab.sh(lab.gw, "iptables", "-I", *FLOOR)
            lab.sh(lab.gw, "sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1")
        elif self.mode == "bare-c":
            lab.sh(lab.gw, "iptables", "-I", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE),
                   "--queue-bypass")
            self.proc = lab.popen(lab.gw, str(self.bare), str(QUEUE))
            if self.proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"nfq_accept: {self.proc.stderr.read()}")
        elif self.mode.startswith("slipsq"):
            self.state.mkdir(exist_ok=True)
            # an empty config file for plain slipsq, bypass on for slipsq-bypass
            config = {"bypass.enabled": True} if self.mode == "slipsq-bypass" else {}
            self.daemon = Daemon(lab, self.state, queue=QUEUE, config=config)
            self.daemon.start(timeout=30)  # a shared machine can be slow to import and build it

    def stop(self) -> int:
        """Packets the consumer verdicted (-1 for none)."""
        if self.mode == "none":
            return -1
        if self.mode == "conntrack":
            self.lab.sh(self.lab.gw, "iptables", "-D", *FLOOR)
            return -1
        if self.mode == "bare-c":
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=20)
            self.lab.sh(self.lab.gw, "iptables", "-D", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE),
                        "--queue-bypass")
            return int(out.split()[-1])
        assert self.daemon is not None
        st = self.daemon.try_status() or {}
        self.daemon.stop(timeout=30)
        return int(st.get("packets", -1))


def iperf(lab: Lab, seconds: float) -> float:
    """Gbit/s of one TCP stream from client A to the server, as the receiver counted it."""
    srv = lab.popen(lab.ns["srv"], "iperf3", "-s", "-1", "-B", CNC, "-p", "5301")
    time.sleep(0.3)
    r = lab.sh(lab.ns["a"], "iperf3", "-c", CNC, "-p", "5301", "-t", str(seconds), "-J",
               timeout=seconds + 30)
    srv.communicate(timeout=10)
    return float(json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"]) / 1e9


def run(seconds: float, rounds: int) -> dict[str, Any]:
    lab = Lab()
    out: dict[str, Any] = {}
    try:
        lab.up()
        with tempfile.TemporaryDirectory() as t:
            tmp = Path(t)
            bare = build_bare(tmp)
            for on in (True, False):
                offloads(lab, on)
                key = "offloads on" if on else "offloads off"
                runs: dict[str, list[tuple[float, int]]] = {m: [] for m in MODES}
                for _ in range(rounds):
                    for mode in MODES:
                        c = Consumer(lab, mode, tmp, bare)
                        c.start()
                        try:
                            gbps = iperf(lab, seconds)
                        finally:
                            queued = c.stop()
                        runs[mode].append((gbps, queued))
                out[key] = runs
    finally:
        lab.down()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = why_no_lab() or (None if shutil.which("iperf3") else "needs iperf3 (apt-get install iperf3)")
    if why:
        print(f"bench/throughput.py: skipped: {why}", file=sys.stderr)
        return 0
    r = run(args.seconds, args.rounds)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"iperf3 TCP, {args.seconds:g} s per run, {args.rounds} rounds; ratio = mode / none (or / conntrack, "
          "the kernel floor of bypass: a router that forwards with conntrack on) in the same round")
    print(f"{'offloads':<13} {'mode':<14} {'Gbit/s med':>10} {'x none min':>10} {'med':>6} {'max':>6} "
          f"{'x conntrack med':>15} {'queued pkts med':>16}")
    for key, runs in r.items():
        base = [g for g, _ in runs["none"]]
        floor = [g for g, _ in runs["conntrack"]]
        for mode, xs in runs.items():
            ratios = sorted(g / b for (g, _), b in zip(xs, base, strict=True))
            to_floor = statistics.median(g / b for (g, _), b in zip(xs, floor, strict=True))
            queued = statistics.median(q for _, q in xs)
            print(f"{key:<13} {mode:<14} {statistics.median(g for g, _ in xs):>10.2f} {ratios[0]:>10.2f} "
                  f"{statistics.median(ratios):>6.2f} {ratios[-1]:>6.2f} {to_floor:>15.2f} "
                  f"{'-' if queued < 0 else int(queued):>16}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
