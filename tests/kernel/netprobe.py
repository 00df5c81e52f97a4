"""Small network actors the kernel tests and the bench run inside namespaces (stdlib only).

    python netprobe.py serve IP:PORT [IP:PORT ...]           TCP: answer "ok\\n" to each connection
    python netprobe.py udpsink IP:PORT SECONDS               UDP: count datagrams, print the count
    python netprobe.py beacon IP:PORT INTERVAL COUNT         TCP connect every INTERVAL s, print JSON lines
    python netprobe.py udpflood IP:PORT SECONDS SIZE          send UDP as fast as possible, print the count

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
    s = socket.socket(socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
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


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "serve":
        serve(args)
    elif cmd == "beacon":
        beacon(args[0], float(args[1]), int(args[2]))
    elif cmd == "udpsink":
        udpsink(args[0], float(args[1]))
    elif cmd == "udpflood":
        udpflood(args[0], float(args[1]), int(args[2]), float(args[3]) if len(args) > 3 else 0.0)
    else:
        raise SystemExit(f"unknown command {cmd}")
