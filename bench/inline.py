"""Inline benchmark: forwarded packets/s (small UDP), TCP throughput and ping RTT through a namespace
gateway with no queue, a bare NetfilterQueue consumer that only accepts, and slipsq. Needs root.

    python bench/inline.py [--seconds 3] [--json]

"inspected pps" is what the queue consumer verdicted per second (the consumer's own count);
"forwarded pps" is what reached the receiver. With slipsq's fail-open, packets beyond the queue's
capacity are forwarded uninspected, so forwarded can exceed inspected; the bare consumer (NetfilterQueue
1.1, no fail-open) drops them instead. A paced run below capacity then checks that slipsq loses nothing.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.kernel.lab import CNC, Daemon, Lab, why_no_lab  # noqa: E402

QUEUE = 3
BARE = r"""
import signal, sys
from netfilterqueue import NetfilterQueue
n = 0
def cb(p):
    global n
    n += 1
    p.accept()
def stop(*a):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, stop)
q = NetfilterQueue()
q.bind(int(sys.argv[1]), cb, max_len=4096)
print("ready", flush=True)
try:
    q.run()
except KeyboardInterrupt:
    pass
print(n, flush=True)
"""


class Mode:
    def __init__(self, lab: Lab, name: str, state: Path) -> None:
        self.lab, self.name, self.state = lab, name, state
        self.proc: Any = None  # the bare consumer
        self.daemon: Daemon | None = None  # slipsq, in the slipsq mode

    def start(self) -> None:
        lab = self.lab
        if self.name == "bare":
            lab.sh(lab.gw, "iptables", "-I", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE),
                   "--queue-bypass")
            self.proc = lab.popen(lab.gw, sys.executable, "-c", BARE, str(QUEUE))
            assert self.proc.stdout.readline().strip() == "ready"
        elif self.name == "slipsq":
            # no config file, no backend: what a bare `slipsq --queue` does
            self.daemon = Daemon(lab, self.state, queue=QUEUE)
            self.daemon.start(timeout=30)  # a shared machine can be slow to start it

    def status(self) -> dict[str, Any] | None:
        """slipsq's status, or None when it does not answer (or this mode is not slipsq)."""
        return self.daemon.try_status() if self.daemon else None

    def inspected(self) -> int:
        if self.name == "slipsq":
            st = self.status()
            return int(st["packets"]) if st else 0
        return -1  # the bare consumer reports once, at stop

    def stop(self) -> int:
        """Stop the consumer; returns the bare consumer's packet count (else -1)."""
        n = -1
        if self.name == "bare":
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=20)
            n = int(out.split()[-1])
            self.lab.sh(self.lab.gw, "iptables", "-D", "FORWARD", "-j", "NFQUEUE", "--queue-num", str(QUEUE),
                        "--queue-bypass")
        elif self.daemon is not None:
            self.daemon.stop(timeout=20)
        return n


def udp(lab: Lab, seconds: float, rate: float = 0.0) -> tuple[int, int]:
    """(sent, received) small UDP datagrams from client A to the server through the gateway."""
    sink = lab.probe(lab.ns["srv"], "udpsink", f"{CNC}:9999", str(seconds + 1.5))
    assert sink.stdout is not None
    if sink.stdout.readline().strip() != "ready":
        raise RuntimeError(f"udp sink: {sink.stderr.read() if sink.stderr else ''}")
    flood = lab.probe(lab.ns["a"], "udpflood", f"{CNC}:9999", str(seconds), "18", str(rate))
    sent = int(flood.communicate(timeout=seconds + 30)[0].split()[-1])
    received = int(sink.communicate(timeout=seconds + 30)[0].split()[-1])
    return sent, received


def tcp(lab: Lab, seconds: float) -> float:
    """Mbit/s of one TCP stream from client A to the server."""
    sink = lab.probe(lab.ns["srv"], "tcpsink", f"{CNC}:9998", str(seconds))
    assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
    send = lab.probe(lab.ns["a"], "tcpsend", f"{CNC}:9998", str(seconds))
    send.communicate(timeout=seconds + 30)
    r = json.loads(sink.communicate(timeout=seconds + 30)[0].splitlines()[-1])
    return float(r["bytes"] * 8 / seconds / 1e6)


def ping(lab: Lab, count: int = 200) -> tuple[float, float, int]:
    p = lab.probe(lab.ns["a"], "ping", CNC, str(count), "0.005")
    rtts = json.loads(p.communicate(timeout=count + 30)[0].splitlines()[-1])
    ok = sorted(r for r in rtts if r is not None)
    if not ok:
        return float("nan"), float("nan"), count
    return statistics.median(ok), ok[min(len(ok) - 1, int(0.99 * len(ok)))], count - len(ok)


def run(seconds: float) -> dict[str, Any]:
    lab = Lab()
    results: dict[str, Any] = {}
    try:
        lab.up()
        for name in ("none", "bare", "slipsq"):
            with tempfile.TemporaryDirectory() as state:
                m = Mode(lab, name, Path(state))
                m.start()
                before = m.inspected()
                sent, received = udp(lab, seconds)
                after = m.inspected()
                mbps = tcp(lab, seconds)
                med, p99, lost = ping(lab)
                paced = None
                if name == "slipsq":
                    # below capacity: a third of what slipsq inspected flat out, nothing may be lost
                    rate = max(1000.0, (after - before) / seconds / 3)
                    k0 = m.status() or {}
                    ps, pr = udp(lab, seconds, rate)
                    k1 = m.status() or {}
                    paced = {"rate": round(rate), "sent": ps, "received": pr,
                             "kernel_before": k0.get("kernel"), "kernel_after": k1.get("kernel"),
                             "inspected": int(k1.get("packets", 0)) - int(k0.get("packets", 0))}
                n = m.stop()
                inspected = n if name == "bare" else (after - before if name == "slipsq" else received)
                # the bare count includes the ping and TCP phases: keep only the UDP phase for it
                results[name] = {"sent": sent, "received": received, "forwarded_pps": received / seconds,
                                 "inspected_total": inspected, "tcp_mbps": mbps, "rtt_median_ms": med,
                                 "rtt_p99_ms": p99, "ping_lost": lost, "paced": paced}
    finally:
        lab.down()
    return results


def bare_udp_only(seconds: float) -> float:
    """The bare consumer's inspected pps over a UDP-only phase (its count cannot be split by phase)."""
    lab = Lab()
    try:
        lab.up()
        with tempfile.TemporaryDirectory() as state:
            m = Mode(lab, "bare", Path(state))
            m.start()
            udp(lab, seconds)
            return m.stop() / seconds
    finally:
        lab.down()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    why = why_no_lab()
    if why:
        print(f"bench/inline.py: skipped: {why}", file=sys.stderr)
        return 0
    r = run(args.seconds)
    bare_pps = bare_udp_only(args.seconds)
    slipsq_pps = r["slipsq"]["inspected_total"] / args.seconds
    if args.json:
        print(json.dumps({"results": r, "bare_inspected_pps": bare_pps, "slipsq_inspected_pps": slipsq_pps}))
        return 0
    base = r["none"]
    print(f"{'mode':<8} {'fwd pps':>10} {'x none':>7} {'inspected pps':>14} {'TCP Mbit/s':>11} {'x none':>7} "
          f"{'RTT med ms':>11} {'RTT p99 ms':>11}")
    for name, x in r.items():
        insp = {"none": float("nan"), "bare": bare_pps, "slipsq": slipsq_pps}[name]
        print(f"{name:<8} {x['forwarded_pps']:>10.0f} {x['forwarded_pps'] / base['forwarded_pps']:>7.2f} "
              f"{insp:>14.0f} {x['tcp_mbps']:>11.0f} {x['tcp_mbps'] / base['tcp_mbps']:>7.2f} "
              f"{x['rtt_median_ms']:>11.3f} {x['rtt_p99_ms']:>11.3f}")
    print(f"slipsq / bare consumer, inspected pps: {slipsq_pps / bare_pps:.2f} (target >= 0.80)")
    s, b = r["slipsq"], r["bare"]
    print(f"added RTT vs no queue: slipsq median +{s['rtt_median_ms'] - base['rtt_median_ms']:.3f} ms, "
          f"p99 +{s['rtt_p99_ms'] - base['rtt_p99_ms']:.3f} ms; "
          f"bare median +{b['rtt_median_ms'] - base['rtt_median_ms']:.3f} ms, "
          f"p99 +{b['rtt_p99_ms'] - base['rtt_p99_ms']:.3f} ms")
    p = r["slipsq"]["paced"]
    lost = p["sent"] - p["received"]
    print(f"paced below capacity ({p['rate']} pkt/s): sent {p['sent']}, received {p['received']}, "
          f"lost {lost}, inspected {p['inspected']}; kernel after: {p['kernel_after']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
