"""One queue worker of `slipsq --queue A:B`: a process that owns one NFQUEUE and one flow table.

    python -m slipsq.mqworker FD QUEUE MAXLEN      (started by slipsq.multiqueue, never by hand)

It gives every packet of its queue its verdict from its own compiled table (the same C path as the
single-process daemon: sources/_nfq feeding _flowtable, blocked addresses dropped there) and ships
what the detectors consume, closed flows and app packets, to the daemon over the socket FD, in
batches (slipsq.mqwire). The daemon runs every detector and the judge on all workers' flows, so a
scan spread over queues is seen whole; it sends back blocks, unblocks and app kinds.

Startup: read the "init" ops (blocked addresses, app kinds and bypass settings, then the table
config: as many messages as the blocks take) from FD, build the table, bind the queue, answer
"ready" (or "error" with one line), then loop. It exits when the daemon says "stop" or goes away
(EOF on FD): it must never outlive the daemon, and it never does I/O other than its queue and FD,
and with bypass its own conntrack socket (no files, no firewall, no store; the packet loop never
waits on the daemon: a full socket keeps at most MAX_BACKLOG_BYTES of messages here and counts what
it had to let go).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import socket
import sys
import time
from collections import deque
from typing import Any

from slipsq import mqwire

BUDGET = 1024  # packets per return to Python, as the daemon's packet loop
TICK = 1.0  # expiry and stats every second, as the engine's tick
INIT_WAIT = 15.0  # seconds the worker waits for its init message
# bytes of messages kept while the daemon's socket is full, oldest dropped first (and counted as lost):
# about 20,000 closed flows; a count of messages (256 of up to 256 kB) would allow 64 MB on a Pi
MAX_BACKLOG_BYTES = 8 << 20


def log(msg: str) -> None:
    print(f"slipsq worker: {msg}", file=sys.stderr, flush=True)


class QueueWorker:
    def __init__(self, sock: socket.socket, num: int, maxlen: int) -> None:
        self.sock, self.num, self.maxlen = sock, num, maxlen
        self._ops = select.poll()  # the daemon's socket: read_ops reads it when it holds something
        self._ops.register(sock.fileno(), select.POLLIN)
        self.backlog: deque[bytes] = deque()
        self.backlog_bytes = 0
        self.lost_messages = 0
        self.stop = False
        self.draining = False

    def start(self) -> None:
        from slipsq import config as configmod
        from slipsq import twins
        from slipsq.sources.nfqueue import NfqueueSource

        init = self.read_init()
        settings = dict(init)  # (the last of each op: config is read_init's last)
        cfg = configmod.load(configmod.CORE_OPTIONS, None, settings["config"])
        # the table alone (not slipsq.engine, which would import every detector into every worker)
        fast = twins.compiled("slipsq._flowtable")
        if fast is None:
            from slipsq.flowtable import FlowTable

            self.table: Any = FlowTable(cfg)
        else:
            self.table = fast.FlowTable(cfg)
        self.apply(init)
        bypass = settings.get("bypass")  # flow bypass on this worker's table (sources/conntrack.py)
        self.merger: Any = None
        if bypass is not None:
            from slipsq.sources import conntrack

            self.merger = conntrack.start_merger(bypass, self.table)
        self.source = NfqueueSource(self.num, self.table, maxlen=self.maxlen,  # SystemSetupError: one line
                                    bypass_mark=int(bypass["mark"]) if bypass else 0,
                                    repeat_mark=int(bypass["repeat"]) if bypass else 0)
        i = self.source.info
        self.send(mqwire.dumps(("ready", {"num": self.num, "pid": os.getpid(), "maxlen": i.maxlen,
                                          "rcvbuf": i.rcvbuf, "fail_open": i.fail_open, "gso": i.gso})))

    def read_init(self) -> list[tuple[str, Any]]:
        """The init ops, up to the config (the daemon sends it last: every block before the queue is
        bound, over as many messages as they take)."""
        self.sock.settimeout(INIT_WAIT)
        items: list[tuple[str, Any]] = []
        while not items or items[-1][0] != "config":
            data = self.sock.recv(mqwire.MAX_MESSAGE)
            msg = mqwire.loads(data) if data else ("eof",)
            if msg[0] != "ops":
                raise SystemExit("slipsq worker: no init message from the daemon")
            items += msg[1]
        self.sock.setblocking(False)
        return items

    def apply(self, items: list[tuple[str, Any]]) -> None:
        for op, arg in items:
            if op == "config" or op == "bypass":
                continue  # read once, at start
            if op == "block":
                for ip in arg:
                    self.table.block(ip)
            elif op == "unblock":
                for ip in arg:
                    self.table.unblock(ip)
            elif op == "kinds":
                self.table.set_app_kinds(frozenset(arg))
            elif op == "drain":
                self.draining = True
            elif op == "stop":
                self.stop = True

    def stats(self) -> dict[str, Any]:
        q = self.source.stats()
        out = {"pid": os.getpid(), "queue": q, "table": self.table.stats(),
               "table_bytes": int(self.table.memory()), "lost_messages": self.lost_messages}
        if self.merger is not None:
            out["bypass"] = self.merger.status(q)
        return out

    def send(self, data: bytes) -> None:
        """Never waits: what the socket cannot take now waits here (at most MAX_BACKLOG_BYTES, the
        oldest let go first), in order."""
        if self.backlog or not self._try(data):
            self.backlog.append(data)
            self.backlog_bytes += len(data)
            while self.backlog_bytes > MAX_BACKLOG_BYTES and len(self.backlog) > 1:
                self.backlog_bytes -= len(self.backlog.popleft())
                self.lost_messages += 1

    def _try(self, data: bytes) -> bool:
        try:
            self.sock.send(data)
            return True
        except BlockingIOError:
            return False

    def flush_backlog(self) -> None:
        while self.backlog and self._try(self.backlog[0]):
            self.backlog_bytes -= len(self.backlog[0])
            self.backlog.popleft()

    def ship(self, with_stats: bool) -> None:
        t = self.table
        if t.pending or with_stats:
            for m in mqwire.encode_batches(t.pop_closed(), t.pop_app(), self.stats() if with_stats else None):
                self.send(m)

    def read_ops(self) -> None:
        # nothing waiting (most turns of the loop): no recv, whose BlockingIOError cost ~4 µs a turn
        if not self._ops.poll(0):
            return
        while True:
            try:
                data = self.sock.recv(mqwire.MAX_MESSAGE)
            except BlockingIOError:
                return
            if not data:  # the daemon is gone: fail open (the kernel bypasses an unbound queue)
                self.stop = True
                return
            msg = mqwire.loads(data)
            if msg[0] == "ops":
                self.apply(msg[1])

    def run(self) -> None:
        fds = (self.sock.fileno(),) if self.merger is None else (self.sock.fileno(), self.merger.fd)
        next_tick = 0.0
        while not self.stop:
            self.source.run(BUDGET, TICK, fds)
            now = time.time()
            if self.merger is not None:
                self.merger.poll(now)  # conntrack's counts for this table's bypassed flows
            tick = now >= next_tick
            if tick:
                next_tick = now + TICK
                self.table.expire(now)
            self.flush_backlog()
            self.ship(tick)
            self.read_ops()
            if self.draining:  # the diversion is gone: verdict what is queued, ship, report
                self.source.drain()
                if self.merger is not None:
                    self.merger.flush()  # held flows go on with what they have
                self.ship(False)
                self.send(mqwire.dumps(("drained", self.stats())))
                self.draining = False
        self.flush_backlog()
        self.source.close()
        if self.merger is not None:
            self.merger.close()


def main(argv: list[str]) -> int:
    fd, num, maxlen = (int(a) for a in argv)
    # SIGINT/SIGTERM from a terminal's Ctrl-C reach the whole process group: the daemon decides
    # when its workers stop (after it removed the diversion), so they ignore both
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    w = QueueWorker(sock, num, maxlen)
    try:
        w.start()
    except Exception as e:
        msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        try:
            sock.setblocking(True)
            sock.send(mqwire.dumps(("error", str(msg))))
        except OSError:
            pass
        return 5
    gc.collect()
    gc.freeze()  # what start-up made is never collected again (as engine.tune_gc)
    w.run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
