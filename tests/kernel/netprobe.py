"""Small network actors the kernel tests and the bench run inside namespaces (stdlib only).

    python netprobe.py serve IP:PORT [IP:PORT ...]           TCP: answer "ok\\n" to each connection
    python netprobe.py udpsink IP:PORT SECONDS               UDP: count datagrams, print the count
    python netprobe.py beacon IP:PORT INTERVAL COUNT         TCP connect every INTERVAL s, print JSON lines
    python netprobe.py udpflood IP:PORT SECONDS SIZE [RATE]  send UDP (RATE/s or flat out), print the count
    python netprobe.py tcpsink IP:PORT SECONDS [IDLE]         TCP: accept one sender, print bytes received
                                                             (ends IDLE s, default 2, after its last bytes)
    python netprobe.py tcpsend IP:PORT SECONDS                TCP: send as fast as possible
    python netprobe.py ping IP COUNT INTERVAL                 ICMP echo (raw socket), print RTTs in ms as JSON

Every loop is bounded (COUNT or SECONDS), so nothing outlives a test that forgets it.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time


def _addr(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def serve(addrs: list[str], lifetime: float = 600.0) -> None:
    sel = selectors.DefaultSelector()
    for a in addrs:
        s = socket.socket(socket.AF_INET6 if ":" in _addr(a)[0] else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(_addr(a))
        s.listen(128)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    end = time.monotonic() + lifetime
    while time.monotonic() < end:
        for key, _ in sel.select(timeout=1.0):
            try:
                c, _ = key.fileobj.accept()  # type: ignore[union-attr]
                c.settimeout(1.0)
                c.sendall(b"ok\n")
                c.close()
            except OSError:
                pass


def beacon(addr: str, interval: float, count: int) -> None:
    host, port = _addr(addr)
    for i in range(count):
        t0 = time.time()
        ok, err = False, ""
        try:
            with socket.create_connection((host, port), timeout=min(0.8, interval)) as s:
                ok = s.recv(16) == b"ok\n"
        except OSError as e:
            err = type(e).__name__
        print(json.dumps({"i": i, "t": t0, "ok": ok, "err": err}), flush=True)
        time.sleep(max(0.0, interval - (time.time() - t0)))


def udpsink(addr: str, seconds: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE (root): a burst must not overflow us
    s.bind(_addr(addr))
    s.settimeout(0.2)
    print("ready", flush=True)
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s.recv(2048)
            n += 1
        except TimeoutError:
            pass
    print(n, flush=True)


def udpflood(addr: str, seconds: float, size: int, rate: float = 0.0) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(_addr(addr))
    payload = b"x" * size
    n = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate and n >= rate * (now - start):
            time.sleep(0.0005)
            continue
        try:
            s.send(payload)
            n += 1
        except OSError:
            pass
    print(n, flush=True)


def tcpsink(addr: str, seconds: float, idle: float = 2.0) -> None:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(_addr(addr))
    s.listen(1)
    s.settimeout(seconds + 10)
    print("ready", flush=True)
    c, _ = s.accept()
    c.settimeout(idle)
    n = 0
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds + 5:
            b = c.recv(1 << 20)
            if not b:
                break
            n += len(b)
    except OSError:
        pass
    print(json.dumps({"bytes": n, "seconds": time.monotonic() - t0}), flush=True)


def tcpsend(addr: str, seconds: float) -> None:
    s = socket.create_connection(_addr(addr), timeout=5)
    chunk = b"\0" * (1 << 16)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        s.sendall(chunk)
    s.close()


def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    t = sum(int.from_bytes(b[i:i + 2], "big") for i in range(0, len(b), 2))
    t = (t >> 16) + (t & 0xFFFF)
    return ~(t + (t >> 16)) & 0xFFFF


def ping(host: str, count: int, interval: float) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(1.0)
    ident = 0x5151
    rtts: list[float | None] = []
    for seq in range(count):
        body = ident.to_bytes(2, "big") + seq.to_bytes(2, "big") + b"slipsq-ping-pad!" * 2
        pkt = b"\x08\x00" + _csum(b"\x08\x00\x00\x00" + body).to_bytes(2, "big") + body
        t0 = time.perf_counter()
        s.sendto(pkt, (host, 0))
        got = None
        while got is None and time.perf_counter() - t0 < 1.0:
            try:
                data = s.recv(2048)
            except TimeoutError:
                break
            ihl = (data[0] & 15) * 4
            icmp = data[ihl:]
            if icmp[0] == 0 and icmp[4:8] == body[:4]:
                got = (time.perf_counter() - t0) * 1000
        rtts.append(got)
        time.sleep(interval)
    print(json.dumps(rtts), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args)
    elif cmd == "beacon":
        beacon(args[0], float(args[1]), int(args[2]))
    elif cmd == "udpsink":
        udpsink(args[0], float(args[1]))
    elif cmd == "tcpsink":
        tcpsink(args[0], float(args[1]), *(float(a) for a in args[2:3]))
    elif cmd == "tcpsend":
        tcpsend(args[0], float(args[1]))
    elif cmd == "ping":
        ping(args[0], int(args[1]), float(args[2]))
    elif cmd == "udpflood":
        udpflood(args[0], float(args[1]), int(args[2]), float(args[3]) if len(args) > 3 else 0.0)
    else:
        raise SystemExit(f"unknown command {cmd}")
