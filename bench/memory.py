"""What slipsq holds in memory on a small gateway: RSS of the daemon's parts, idle and with many flows.

    python bench/memory.py                    # every scenario, 100,000 flows
    python bench/memory.py --flows 20000      # smaller

Each scenario runs in a fresh interpreter (RSS is not given back to the OS, so scenarios must not share
one) and reports VmRSS from /proc/self/status:

    python         the bare interpreter
    cli            `slipsq --version`: what the command line imports
    daemon-idle    what the daemon holds before the first packet: config, models, every detector,
                   the engine and its flow table, the firewall, control and NFQUEUE modules
    open-flows     daemon-idle + N open TCP flows (handshake and data, none closed yet)
    closed-flows   open-flows, then every flow closed and analysed: the detectors' state from N flows

and bytes per open flow ((RSS open-flows - RSS idle) / N, against the table's own 128 B/flow).
Targets (issue 13): < 40 MB idle, < 100 MB with 100,000 open flows.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported in the child only: a scenario's RSS counts what it imports
    from slipsq.config import Config
    from slipsq.engine import Engine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SCENARIOS = ("python", "cli", "daemon-idle", "open-flows", "closed-flows")
T0 = 1_700_000_000.0


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _frame(src: int, dst: int, sport: int, dport: int, flags: int, payload: bytes = b"") -> bytes:
    """Ethernet + IPv4 + TCP (checksums zero: the flow table does not verify them)."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 1, 5 << 4, flags, 65535, 0, 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0,
                     src.to_bytes(4, "big"), dst.to_bytes(4, "big")) + tcp
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip


def build_daemon_parts() -> tuple[Config, Engine]:
    """What Daemon.start() builds, without root (no queue bound, no firewall touched)."""
    import slipsq.control
    import slipsq.sources.nfqueue
    import slipsq.verdict.firewall
    from slipsq import runmode
    from slipsq.allow import AllowList
    from slipsq.daemon import load_models
    from slipsq.engine import Engine, tune_gc
    from slipsq.enrich import make_enrichers

    try:
        import slipsq.sources._nfq  # noqa: F401
    except ImportError:
        pass
    from slipsq.detect import DETECTORS

    cfg = runmode.load_config(os.environ.get("SLIPSQ_BENCH_CONFIG") or None)
    only = os.environ.get("SLIPSQ_BENCH_DETECTORS")  # e.g. "beacon,portscan": what each one holds
    dets = None if only is None else [d for d in DETECTORS if d.name in only.split(",")]
    from slipsq import budget

    budget.apply(cfg)  # as the daemon does (memory.budget_mb)
    engine = Engine(cfg, models=load_models(cfg), allow=AllowList(cfg["allow.ips"]),
                    enrichers=make_enrichers(cfg), detectors=dets)
    tune_gc()
    return cfg, engine


def scenario(name: str, flows: int) -> dict[str, Any]:
    t = time.perf_counter()
    out: dict[str, Any] = {"scenario": name}
    if name == "cli":
        import slipsq.cli  # noqa: F401
    elif name != "python":
        _, engine = build_daemon_parts()
        out["idle_kb"] = rss_kb()
        if name in ("open-flows", "closed-flows"):
            table = engine.table
            client_base, server_base = 0x0A000000, 0xC0A80000
            ts = T0
            for i in range(flows):
                c, s = client_base + (i % 250) + 1, server_base + i // 250
                sp = 1024 + i % 60000
                for f, pl, fwd in ((0x02, b"", True), (0x12, b"", False), (0x18, b"GET / HTTP/1.1\r\n\r\n", True)):
                    frame = _frame(c, s, sp, 80, f, pl) if fwd else _frame(s, c, 80, sp, f, pl)
                    table.feed(frame, ts, 1)
                ts += 1e-5
                if table.pending:
                    engine.drain()
            engine.advance(ts)
            out["open_flows"] = table.stats()["flows_open"]
            out["table_bytes"] = table.memory() if hasattr(table, "memory") else None
            if name == "closed-flows":
                engine.advance(ts + 4000)  # past every idle timeout
                engine.advance(ts + 4001)
                out["closed"] = engine.counters.flows
                out["open_after"] = table.stats()["flows_open"]
    out["rss_kb"] = rss_kb()
    out["seconds"] = round(time.perf_counter() - t, 2)
    return out


def run_child(name: str, flows: int) -> dict[str, Any]:
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name, "--flows", str(flows)],
                       capture_output=True, text=True, check=True)
    return dict(json.loads(r.stdout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--child", choices=SCENARIOS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(scenario(args.child, args.flows)))
        return
    rows = {n: run_child(n, args.flows) for n in SCENARIOS}
    idle = int(rows["daemon-idle"]["rss_kb"])
    print(f"{'scenario':14} {'RSS MB':>8} {'vs idle MB':>11}  notes")
    for n, r in rows.items():
        mb = int(r["rss_kb"]) / 1024
        note = ""
        if "open_flows" in r:
            of = int(r["open_flows"])
            per = (int(rows["open-flows"]["rss_kb"]) - idle) * 1024 / max(1, of)
            note = f"{of:,} open flows; {per:.0f} B/open flow in RSS, table {r['table_bytes']:,} B"
            if n == "closed-flows":
                note = f"{r['closed']:,} flows closed and analysed, {r['open_after']} still open"
        print(f"{n:14} {mb:8.1f} {(int(r['rss_kb']) - idle) / 1024:11.1f}  {note}")
    print(f"targets: daemon-idle < 40 MB ({'ok' if idle < 40 * 1024 else 'OVER'}), "
          f"open-flows < 100 MB with 100,000 flows "
          f"({'ok' if int(rows['open-flows']['rss_kb']) < 100 * 1024 else 'OVER'})")


if __name__ == "__main__":
    main()
