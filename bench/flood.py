"""Flood benchmark: floods of invented keys against the same volume on few keys, in one run.

    python bench/flood.py [--flows 400000] [--few 1000] [--rate 10000] [--only servers,dns]
    FLOOD_TREE=/work/main python bench/flood.py     # the same rows on another checkout (A/B)

Each row replays `--flows` one-packet flows (raw IPv4, `--rate` flows per second of packet time)
through a whole Engine (compiled flow table, every detector, judge), in its own child process so the
RSS numbers are that row's own. Kinds of flood:

  sources   one UDP packet each from --flows distinct (spoofed) sources to one server
  servers   one LAN host sending one UDP packet each to --flows distinct servers
  tuples    distinct (client, server, port) triples: every detector's per-tuple state
  dns       DNS answers, each for a distinct name with a distinct address (ctx.dns_names)

and the same kind on `--few` keys (the same volume, keys repeating). After the flood, packet time
runs on (one advance per second) until every flow has expired; the longest single advance is the
longest time the engine would hold the packet loop (the forwarding gap inline, where it runs in the
loop). Reported per row: µs per flow, that longest advance, RSS before the flood, at its peak, and
after expiry (after slipsq.memory.trim(), which hands freed heap back to the kernel).

The judge runs with judge.block = false: a flood from one LAN host to many servers is a real
horizontal scan, and a block would drop the rest of the row unanalysed.

Targets (issue 12): invented keys cost within 1.5x of few keys per flow; RSS after expiry within
10 % of before; no advance over 1 s. Run by hand or by `make bench`, never by `make test`.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("FLOOD_TREE", str(ROOT)))  # the tree under test (A/B: another checkout)

KINDS = ("sources", "servers", "tuples", "dns")


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def _csum(b: bytes) -> int:
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF


def udp4(src: int, sport: int, dst: int, dport: int, payload: bytes) -> bytes:
    """A raw IPv4/UDP packet (linktype 101) with a valid header checksum."""
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack("!BBHHHBBHII", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src, dst)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def dns_answer(name: str, addr: int) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    head = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0)
    ans = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + struct.pack("!I", addr)
    return head + q + struct.pack("!HH", 1, 1) + ans


LAN = 0x0A000005          # 10.0.0.5
RESOLVER = 0x08080808     # 8.8.8.8
SERVER = 0xC6120001       # 198.18.0.1
NET = 0x2C000000          # 44.0.0.0/8: invented public addresses


def packets(kind: str, i: int, keys: int) -> list[bytes]:
    """The packets of flow `i` of a flood of `kind` on `keys` keys."""
    k = i % keys
    sport = 1024 + (i // keys) % 60000  # every flow its own 5-tuple, whatever the number of keys
    if kind == "sources":
        return [udp4(NET + k, sport, SERVER, 443, b"x" * 32)]
    if kind == "servers":
        return [udp4(LAN, sport, NET + k, 443, b"x" * 32)]
    if kind == "tuples":
        return [udp4(LAN + (k & 0xFF), sport, NET + (k >> 8), 1000 + k % 50000, b"x" * 32)]
    answer = dns_answer(f"h{k}.example.com", NET + k)  # a query and its answer: an answered flow
    sport = 1024 + i % 60000  # (DNS flows are told apart by the client port alone)
    return [udp4(LAN, sport, RESOLVER, 53, answer[:12] + answer[12:answer.index(b"\xc0\x0c")]),
            udp4(RESOLVER, 53, LAN, sport, answer)]


def child(kind: str, flows: int, keys: int, rate: float) -> dict[str, Any]:
    from slipsq import runmode
    from slipsq.engine import Engine, tune_gc

    def trim() -> None:
        try:
            from slipsq import memory
        except ImportError:  # an older tree (A/B against main, FLOOD_TREE=/work/main): the same call
            import ctypes
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        else:
            memory.trim()
    cfg = runmode.load_config()
    cfg.set("judge.block", False)  # judged, alerted, never dropped: every row analyses all its flows
    engine = Engine(cfg, models=runmode.load_engine_models(None, cfg))  # as the daemon runs it
    tune_gc()
    t0 = 1_700_000_000.0
    for i in range(2000):  # warm up: first-use allocations are not the flood's (nothing gets blocked)
        for buf in packets("dns", i, 50):
            engine.packet(buf, t0 + i / rate, 101)
    engine.advance(t0 + 1000)
    trim()
    before = rss_mb()
    peak = before
    t0 += 2000
    fed = 0.0  # seconds spent feeding: packets are made in chunks, off the clock and freed
    for first in range(0, flows, 20_000):
        made = [packets(kind, i, keys) for i in range(first, min(flows, first + 20_000))]
        a = time.perf_counter()
        for i, bufs in enumerate(made, first):
            ts = t0 + i / rate
            for buf in bufs:
                engine.packet(buf, ts, 101)
        fed += time.perf_counter() - a
        del made
        peak = max(peak, rss_mb())
    start = time.perf_counter() - fed
    now = t0 + flows / rate
    longest = 0.0
    for s in range(1, 700):  # past every idle timeout: every flow of the flood is analysed
        a = time.perf_counter()
        engine.advance(now + s)
        longest = max(longest, time.perf_counter() - a)
        if s % 10 == 0:
            peak = max(peak, rss_mb())
    work = time.perf_counter() - start  # table and detectors: all the work the flood caused
    for s in range(700, 25_000, 60):  # past the longest horizon (stratosphere.tuple_idle, 6 h)
        engine.advance(now + s)
    trim()
    after = rss_mb()
    return {"kind": kind, "keys": keys, "flows": engine.counters.flows, "seconds": work,
            "us_per_flow": work / flows * 1e6, "longest_advance": longest,
            "rss_before": before, "rss_peak": peak, "rss_after": after,
            "open_after": engine.table.stats()["flows_open"],
            "blocks": engine.counters.blocks, "dropped": engine.table.stats()["dropped"]}


def run_child(kind: str, flows: int, keys: int, rate: float) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--child", kind, "--flows", str(flows), "--keys", str(keys),
                          "--rate", str(rate)], capture_output=True, text=True, check=False,
                         env={**os.environ, "PYTHONPATH": os.environ.get("FLOOD_TREE", str(ROOT))})
    if out.returncode != 0:
        sys.exit(f"flood.py: child {kind}/{keys} failed:\n{out.stderr}")
    result: dict[str, Any] = json.loads(out.stdout)
    return result


RECV = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)
s.bind((sys.argv[1], 9999)); s.settimeout(0.5)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2]); last = None; gap = 0.0; n = 0; at = 0.0
while time.monotonic() < end:
    try:
        s.recv(64)
    except TimeoutError:
        continue
    now = time.monotonic(); n += 1
    if last is not None and now - last > gap:
        gap, at = now - last, now - end + float(sys.argv[2])
    last = now
print(n, round(gap, 3), round(at, 1), flush=True)
"""
SEND = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 9999))
end = time.monotonic() + float(sys.argv[2]); n = 0
while time.monotonic() < end:
    s.send(b"p"); n += 1; time.sleep(0.005)
print(n, flush=True)
"""
SPOOF = r"""
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
dst = socket.inet_aton(sys.argv[1]); n = int(sys.argv[2])
for i in range(n):  # one UDP packet from each of n invented sources (44.0.0.0/8)
    src = struct.pack("!I", 0x2C000000 + i + 1)
    udp = struct.pack("!HHHH", 1024 + i % 60000, 7, 12, 0) + b"xxxx"
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 32, i & 0xFFFF, 0, 64, 17, 0, src, dst)
    try:
        s.sendto(hdr + udp, (sys.argv[1], 0))
    except OSError:
        pass
print(n, flush=True)
"""


def lab_run(flood: int, seconds: float) -> dict[str, Any]:
    """slipsq in a namespace gateway: the longest gap in a 200 packets/s probe stream through it while
    `flood` spoofed-source one-packet flows arrive and then expire (flowtable.udp_idle = 5 s)."""
    import tempfile

    from tests.kernel.lab import CNC, Lab, why_no_lab

    why = why_no_lab()
    if why:
        sys.exit(f"flood.py --lab: {why}")
    lab = Lab().up()
    try:
        tmp = Path(tempfile.mkdtemp(prefix="slipsq-flood-"))
        conf = tmp / "slipsq.toml"
        conf.write_text("[flowtable]\nudp_idle = 5.0\n")
        lab.sh(lab.gw, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0")
        for side in ("a", "b", "srv"):
            lab.sh(lab.gw, "sysctl", "-qw", f"net.ipv4.conf.sq{lab.sfx}{side}1.rp_filter=0")
        tree = os.environ.get("FLOOD_TREE", str(ROOT))
        d = lab.popen(lab.gw, sys.executable, "-m", "slipsq", "--queue", "7", "--install-rules", "--state-dir",
                      str(tmp / "state"), "--config", str(conf), env={"PYTHONPATH": tree})
        deadline = time.monotonic() + 20
        while lab.sh(lab.gw, "iptables", "-t", "security", "-S", check=False).stdout.count("NFQUEUE") == 0:
            if d.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"flood.py --lab: slipsq did not start: {d.stderr.read() if d.stderr else ''}")
            time.sleep(0.2)
        recv = lab.popen(lab.ns["srv"], sys.executable, "-c", RECV, CNC, str(seconds))
        assert recv.stdout is not None
        recv.stdout.readline()
        send = lab.popen(lab.ns["b"], sys.executable, "-c", SEND, CNC, str(seconds - 1))
        time.sleep(2.0)
        t = time.monotonic()
        lab.sh(lab.ns["a"], sys.executable, "-c", SPOOF, CNC, str(flood), timeout=120)
        flood_s = time.monotonic() - t
        got, gap, at = recv.stdout.readline().split()
        sent = send.communicate(timeout=30)[0].strip()
        rss = int(lab.sh(lab.gw, "ps", "-o", "rss=", "-p", str(d.pid)).stdout.strip() or 0) / 1000
        st = json.loads(lab.sh(lab.gw, "env", f"PYTHONPATH={tree}", sys.executable, "-m", "slipsq", "status",
                               "--json", "--state-dir", str(tmp / "state")).stdout)
        seen = {"inspected_packets": st["packets"], "flows_closed": st["flows"],
                "queue_dropped": (st["kernel"] or {}).get("queue_dropped")}
        return {"flood": flood, "flood_seconds": round(flood_s, 1), "probe_sent": int(sent),
                "probe_received": int(got), "longest_gap": float(gap), "gap_at": float(at), "rss_mb": rss, **seen}
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=400_000)
    ap.add_argument("--few", type=int, default=1000, help="keys of the baseline rows")
    ap.add_argument("--rate", type=float, default=10_000.0, help="flows per second of packet time")
    ap.add_argument("--only", default=",".join(KINDS), help="comma-separated kinds")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--lab", type=int, default=0, metavar="N",
                    help="instead: N spoofed-source flows through slipsq in a namespace gateway (root); "
                         "report the longest forwarding gap of a probe stream")
    ap.add_argument("--seconds", type=float, default=30.0, help="--lab: length of the probe stream")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--keys", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.lab:
        print(json.dumps(lab_run(a.lab, a.seconds)))
        return
    if a.child:
        print(json.dumps(child(a.child, a.flows, a.keys, a.rate)))
        return
    rows = []
    for kind in a.only.split(","):
        few = run_child(kind, a.flows, a.few, a.rate)  # interleaved: few, many, per kind
        many = run_child(kind, a.flows, a.flows, a.rate)
        rows.append((few, many))
    if a.json:
        print(json.dumps([r for pair in rows for r in pair], indent=1))
        return
    print(f"{a.flows} one-packet flows per row, {a.rate:.0f}/s of packet time; RSS in MB")
    print(f"{'kind':8} {'keys':>8} {'us/flow':>8} {'ratio':>6} {'longest':>8} {'rss0':>7} {'peak':>7} "
          f"{'after':>7} {'after/0':>8}")
    for few, many in rows:
        for r in (few, many):
            ratio = r["us_per_flow"] / few["us_per_flow"]
            print(f"{r['kind']:8} {r['keys']:>8} {r['us_per_flow']:8.1f} {ratio:6.2f} "
                  f"{r['longest_advance']:7.2f}s {r['rss_before']:7.1f} {r['rss_peak']:7.1f} "
                  f"{r['rss_after']:7.1f} {r['rss_after'] / r['rss_before']:8.2f}")


if __name__ == "__main__":
    main()
