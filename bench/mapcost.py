"""What one entry of each bounded map costs, measured: the numbers behind slipsq/budget.py.

    python bench/mapcost.py                 # every map, 20,000 entries each
    python bench/mapcost.py --entries 5000 --only reconnect.max_tuples,dga.max_total_sites

For each config key that bounds a map the network feeds, a flood that makes exactly one new entry
per flow or event (a distinct server, client, pair, name…) goes through a real Engine with only the
detector that owns the map, under tracemalloc; bytes per entry = traced growth / entries. The key
strings the map holds are counted (a flood invents them), the flows themselves are not (they pass),
and neither is the evidence a flow may raise (the judge's maps are bounded on their own).
Each row runs in its own interpreter. Compare the column with budget.SHARES' costs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable, Iterator, MutableMapping
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T0 = 1_700_000_000.0
HOST = "192.168.1.10"
WARM = 200


def server(i: int) -> str:
    return f"198.{18 + (i >> 16) % 2}.{(i >> 8) & 255}.{i & 255}"


def client(i: int) -> str:
    return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


def flows(make: Callable[[int], Any]) -> Callable[[int], Iterator[tuple[str, Any]]]:
    return lambda n: (("flow", make(i)) for i in range(n))


def events(make: Callable[[int], Any]) -> Callable[[int], Iterator[tuple[str, Any]]]:
    return lambda n: (("app", make(i)) for i in range(n))


def rows() -> dict[str, tuple[str, Callable[[int], Iterator[tuple[str, Any]]]]]:
    """config key -> (detector name, generator of n (method, item) pairs, each a new entry)."""
    from slipsq.flow import AppEvent, Flow
    from slipsq.records import LOW, Evidence

    def tcp(i: int, src: str, dst: str, dport: int, state: str, sbytes: int = 600, dbytes: int = 3000,
            dur: float = 0.2, sport: int = 40000) -> Flow:
        ts = T0 + i * 0.001
        return Flow(ts, ts + dur, "tcp", src, sport, dst, dport, 3, 4 if dbytes else 0, sbytes, dbytes,
                    state=state, closed_by="fin")

    def dns(i: int, rcode: int, name: str, answers: list[str]) -> AppEvent:
        return AppEvent(T0 + i * 0.001, "dns", "192.168.1.1", 53, client(i) if rcode == 3 else HOST, 53000,
                        "udp", {"query": name, "qtype": 1, "answers": answers, "rcode": rcode, "response": True})

    def arp(i: int) -> AppEvent:
        src = "192.168.1.66"
        return AppEvent(T0 + i * 1e-5, "arp", src, 0, client(i), 0, "arp",
                        {"op": 1, "src_mac": f"02:00:00:00:{(i >> 14) & 255:02x}:01", "src_ip": src,
                         "dst_ip": client(i)})

    def udp_peer(i: int) -> Flow:
        ts = T0 + i * 0.001
        return Flow(ts, ts + 0.05, "udp", f"192.168.{(i >> 7) & 255}.{1 + (i & 127) % 250}", 51413, server(i),
                    20000 + i % 40000, 1, 1, 74, 74, state="CON", closed_by="idle")

    def evidence(i: int) -> Evidence:
        dst = server(i)
        return Evidence(ts=T0 + i * 0.001, detector="longconn", offender=dst, src_ip=HOST, dst_ip=dst,
                        dst_port=443, proto="tcp", threat_level=LOW, confidence=0.8, key=f"longconn:{dst}",
                        description=f"long connection from {HOST} to {dst}:443/tcp: 33 min (closed), "
                                    "1.52 MB, 2011 packets")

    def random_name(i: int) -> str:
        return "".join("bcdfghjklmnpqrstvwxz"[(i >> (3 * k)) % 20] for k in range(12)) + "q.com"

    return {
        "beacon.max_tuples": ("beacon", flows(lambda i: tcp(i, HOST, server(i), 443, "SF"))),
        "stratosphere.max_tuples": ("stratosphere", flows(lambda i: tcp(i, HOST, server(i), 443, "SF"))),
        "portscan.max_keys": ("portscan", flows(lambda i: tcp(i, client(i), "192.168.1.20", 23, "S0", dbytes=0))),
        "portscan.max_total_targets": ("portscan", flows(lambda i: Flow(
            T0 + i * 0.001, T0 + i * 0.001, "icmp", HOST, 8, server(i), 7, 1, 0, 84, 0, closed_by="idle"))),
        "reconnect.max_tuples": ("reconnect", flows(lambda i: tcp(i, HOST, server(i), 8443, "S0", dbytes=0))),
        "exfil.max_pairs": ("exfil", flows(lambda i: tcp(i, HOST, server(i), 443, "SF", sbytes=40_000))),
        "bruteforce.max_keys": ("bruteforce", flows(lambda i: tcp(i, client(i), "192.168.1.20", 22, "SF"))),
        "longconn.max_connections": ("longconn", flows(lambda i: tcp(i, HOST, server(i), 443, "SF", dur=2000.0))),
        "dns.max_addresses": ("dga", events(lambda i: dns(i, 0, f"h{i}.example.com", [server(i)]))),
        "dga.max_total_sites": ("dga", events(lambda i: dns(i // 8, 3, random_name(i), []))),
        # a flood's long names (a 100-180 character hex label), 64 a (host, domain) pair
        "dnstunnel.max_total_names": ("dnstunnel", events(lambda i: dns(
            i // 64, 0, f"{i * 0x9E3779B97F4A7C15 + 0xABCDEF:x}" * 6 + f".c2x{i // 64}.com", [server(i)]))),
        "p2p.max_total_peers": ("p2p", flows(udp_peer)),
        "arpscan.max_total_targets": ("arpscan", events(arp)),
        "judge.max_offenders": ("longconn", lambda n: (("evidence", evidence(i)) for i in range(n))),
    }


def measure(key: str, n: int) -> dict[str, Any]:
    from slipsq import runmode
    from slipsq.detect import DETECTORS
    from slipsq.engine import Engine
    from slipsq.lru import Nested

    name, gen = rows()[key]
    cfg = runmode.load_config(None)
    for k in rows():  # no bound cuts the flood short
        if k in cfg.options:
            cfg.set(k, 10 * n)
    cfg.set("judge.block", False)
    engine = Engine(cfg, detectors=[d for d in DETECTORS if d.name == name])
    det = engine.detectors[0]
    # straight to the detector (its evidence is dropped), but DNS answers through the engine, which
    # keeps ctx.dns_names, and evidence straight to the judge
    calls = {"flow": det.on_flow, "app": engine.app if key == "dns.max_addresses" else det.on_app,
             "evidence": engine.judge.add}
    items = gen(n + WARM)  # made as they go, inside the measurement: the strings a map keeps count
    for method, item in islice(items, WARM):  # first-use allocations (free lists) are not per entry
        calls[method](item)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for method, item in items:
        calls[method](item)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    sizes = {a: (v.total if isinstance(v, Nested) else len(v)) for a, v in vars(det).items()
             if isinstance(v, (MutableMapping, Nested)) and len(v)}  # dicts, OrderedDicts, lru.new's LruMaps
    if key == "dns.max_addresses":
        sizes["ctx.dns_names"] = len(engine.ctx.dns_names)
    if key == "judge.max_offenders":
        sizes = {"judge._windows": len(engine.judge._windows)}
    return {"key": key, "detector": name, "entries": n, "bytes_per_entry": round((after - before) / n),
            "maps": sizes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=20_000)
    ap.add_argument("--only", default="", help="comma-separated config keys")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.entries)))
        return
    keys = args.only.split(",") if args.only else list(rows())
    from slipsq.budget import SHARES

    print(f"{'config key':28} {'detector':13} {'B/entry':>8} {'budget.py':>10}")
    for key in keys:
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", key, "--entries",
                            str(args.entries)], capture_output=True, text=True, check=True)
        row = json.loads(r.stdout)
        known = SHARES.get(key, (None, 0.0))[0]
        print(f"{key:28} {row['detector']:13} {row['bytes_per_entry']:>8} {known if known else '-':>10}  "
              f"maps after: {row['maps']}")


if __name__ == "__main__":
    main()
