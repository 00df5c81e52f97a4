"""`slipsq --queue A:B`: one worker process per queue, one daemon that judges them all.

    kernel ── --queue-balance A:B ──► queue A ─► worker A (slipsq.mqworker: flow table, verdicts) ─┐
                                      queue B ─► worker B                                          │
                          closed flows, app packets (slipsq.mqwire, SOCK_SEQPACKET, batches) ◄─────┘
    daemon (slipsq.daemon, unchanged): RemoteTable ─► every detector ─► judge ─► worker thread
                                       (firewall + store), control socket, systemd, watchdog
    blocks ─► the kernel once (ipset, the worker thread) and every worker's table (packets already queued)

The split is at the closed-flow boundary: what runs per packet (parse, flow update, blocked check,
verdict) runs in the workers, in parallel; what needs the whole host's view (a scan spread over
queues, beacons, the judge's sums) runs once, in the daemon, on the same records as in one process,
so every detector works unchanged. The kernel's balance hash is over the address pair and protocol
(both directions of a conversation land in one queue), so a worker's flows are whole.

This module is the daemon's side: `RemoteTable` (slipsq.mqtable) stands in for the flow table inside the engine, and
`WorkerPool` stands in for the NFQUEUE source in the daemon's packet loop (same `run`, `drain`,
`stats`, `kernel`, `close`). It never blocks the loop on a worker: messages to a busy worker wait in
its outbox; a dead or stalled worker is restarted (its queue fails open meanwhile: --queue-bypass).
"""

from __future__ import annotations

import math
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from slipsq import mqwire
from slipsq.errors import SystemSetupError, UsageError
from slipsq.mqtable import RemoteTable as RemoteTable  # the daemon builds it as multiqueue.RemoteTable
from slipsq.sources.nfqueue import QueueInfo
from slipsq.verdict.firewall import QueueCounters, queue_counters

MAX_WORKERS = 64
START_WAIT = 15.0  # seconds for every worker to bind its queue at start
DRAIN_WAIT = 3.0
RESTART_MIN, RESTART_MAX = 1.0, 30.0  # seconds before a dead worker is restarted (doubling while it keeps dying)
SOCK_BUF = 8 << 20  # socket buffers far above one message (mqwire.MAX_MESSAGE): bursts wait in the kernel
READ_BATCH = 64  # messages read from one worker before the engine runs (at most ~600 flows each)
QUEUE_KEYS = ("packets", "accepted", "dropped", "errors", "enobufs", "no_payload")

Queues = int | tuple[int, int]


def parse_queue(text: str) -> Queues:
    """`--queue`: "N" (one queue, the single-process daemon) or "A:B" (workers for queues A..B)."""
    a, sep, b = text.strip().partition(":")
    try:
        first = int(a)
        last = int(b) if sep else first
    except ValueError:
        raise UsageError(f"--queue takes N or A:B (queue numbers 0-65535), not {text!r}") from None
    if not (0 <= first <= 65535 and 0 <= last <= 65535):
        raise UsageError(f"--queue: queue numbers are 0-65535, not {text!r}")
    if not sep:
        return first
    if last <= first:
        raise UsageError(f"--queue A:B needs A < B (A:A is --queue A), not {text!r}")
    if last - first + 1 > MAX_WORKERS:
        raise UsageError(f"--queue {text}: {last - first + 1} workers; at most {MAX_WORKERS}")
    return (first, last)


def queue_text(q: Queues) -> str:
    return str(q) if isinstance(q, int) else f"{q[0]}:{q[1]}"


def init_ops(table: RemoteTable, table_config: dict[str, Any],
             bypass: dict[str, Any] | None = None) -> list[tuple[str, Any]]:
    """What a new worker is told before it binds its queue: every active block and the app kinds,
    its bypass settings (when bypass is on), then the config last (the worker reads its init up to
    it, however many messages the blocks take)."""
    return [*table.state_ops(), *([("bypass", bypass)] if bypass is not None else []), ("config", table_config)]


@dataclass
class WorkerProc:
    """One worker process as the daemon sees it."""

    num: int
    proc: subprocess.Popen[bytes] | None = None
    sock: socket.socket | None = None
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=lambda: dict.fromkeys(QUEUE_KEYS, 0))  # earlier lives
    outbox: deque[bytes] = field(default_factory=deque)
    last_seen: float = 0.0
    restarts: int = 0
    restart_at: float = math.inf
    started: float = 0.0
    backoff: float = RESTART_MIN
    drained: bool = False
    error: str = ""

    @property
    def alive(self) -> bool:
        return self.sock is not None

    def counts(self) -> dict[str, int]:
        q = self.stats.get("queue") or {}
        return {k: self.base[k] + int(q.get(k, 0)) for k in QUEUE_KEYS}


def log(msg: str) -> None:
    print(f"slipsq: {msg}", file=sys.stderr, flush=True)


class WorkerPool:
    """The daemon's packet source for `--queue A:B`: a worker process per queue (see the module doc)."""

    def __init__(self, first: int, last: int, table: RemoteTable, *, maxlen: int,
                 table_config: dict[str, Any], stall_timeout: float = 0.0,
                 bypass: dict[str, Any] | None = None) -> None:
        """`bypass`: conntrack.bypass_settings (None: off); each worker bypasses on its own table,
        with its share of bypass.max_open, and merges its own flows' counts from conntrack."""
        self.first, self.last, self.table, self.maxlen = first, last, table, maxlen
        n = last - first + 1
        self.bypass = None if bypass is None else {**bypass, "max_open": max(1, int(bypass["max_open"]) // n)}
        # `table_config`: the flowtable.* section; flowtable.max_flows is the whole host's, each
        # worker holds its share
        self.table_config = {f"flowtable.{k}": v for k, v in table_config.items()}
        self.table_config["flowtable.max_flows"] = max(1000, math.ceil(table_config["max_flows"] / n))
        self.stall_timeout = stall_timeout
        self.workers = {num: WorkerProc(num) for num in range(first, last + 1)}
        self.messages = 0
        self.all_started = False  # until every worker is bound: a failure fails the start
        try:
            for w in self.workers.values():
                self._spawn(w)
            self._wait_ready(START_WAIT)
        except BaseException:
            self.close()
            raise
        table.take_ops()  # what they said so far is in every worker's init already
        self.all_started = True
        i = self.workers[first].info
        self.info = QueueInfo(first, int(i["maxlen"]), 4096, int(i["rcvbuf"]), bool(i["fail_open"]),
                              bool(i["gso"]))
        log(f"{n} queue workers on NFQUEUE {first}:{last} (pids "
            f"{', '.join(str(w.info['pid']) for w in self.workers.values())}), "
            f"flowtable.max_flows {self.table_config['flowtable.max_flows']} each")

    # --- processes ---------------------------------------------------------------------------------
    def _spawn(self, w: WorkerProc) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (mine, theirs):
            for opt, force in ((socket.SO_SNDBUF, 32), (socket.SO_RCVBUF, 33)):  # *BUFFORCE as root
                try:
                    s.setsockopt(socket.SOL_SOCKET, force, SOCK_BUF)
                except OSError:
                    s.setsockopt(socket.SOL_SOCKET, opt, SOCK_BUF)
        try:
            # a session of its own: with the kernel's autogroup scheduling (the default on Debian), the
            # processes of one session share one task's CPU on a busy machine, and a second worker
            # would add nothing; it still ends with the daemon (EOF on its socket, or systemd's cgroup)
            w.proc = subprocess.Popen(
                [sys.executable, "-m", "slipsq.mqworker", str(theirs.fileno()), str(w.num), str(self.maxlen)],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            theirs.close()
        mine.setblocking(False)
        w.sock, w.ready, w.drained, w.error, w.stats = mine, False, False, "", {}
        w.last_seen = w.started = time.monotonic()
        w.restart_at = math.inf
        w.outbox.clear()
        for m in mqwire.ops(init_ops(self.table, self.table_config, self.bypass)):
            self._send(w, m)

    def _wait_ready(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not all(w.ready for w in self.workers.values()):
            left = deadline - time.monotonic()
            bad = [w for w in self.workers.values() if w.error or not w.alive]
            if bad:
                raise SystemSetupError(f"queue worker {bad[0].num}: {bad[0].error or 'exited at start'}")
            if left <= 0:
                late = [str(w.num) for w in self.workers.values() if not w.ready]
                raise SystemSetupError(f"queue workers {', '.join(late)} did not bind within {seconds:g} s")
            self._poll(min(left, 0.2), ())

    def _died(self, w: WorkerProc, why: str) -> None:
        """The worker is gone (EOF, a broken message, a stall): reap it; restart it later."""
        for k, v in w.counts().items():
            w.base[k] = v
        w.stats = {}
        if w.sock is not None:
            w.sock.close()
            w.sock = None
        code = None
        if w.proc is not None:
            if w.proc.poll() is None:
                w.proc.kill()
            try:
                code = w.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        w.ready = False
        self.table.worker_tables.pop(w.num, None)
        self.table.worker_bytes.pop(w.num, None)
        if not self.all_started:  # at start a worker that fails fails the start (_wait_ready says why)
            return
        w.restart_at = time.monotonic() + w.backoff
        log(f"queue worker {w.num} (pid {w.info.get('pid', '?')}) {why} (exit status {code}); queue {w.num} "
            f"fails open (--queue-bypass) until it is restarted in {w.backoff:g} s")
        w.backoff = min(RESTART_MAX, w.backoff * 2)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for w in self.workers.values():
            if not w.alive and now >= w.restart_at:
                w.restarts += 1
                try:
                    self._spawn(w)
                except OSError as e:
                    w.restart_at = now + w.backoff
                    log(f"cannot restart queue worker {w.num}: {e}")
            elif w.alive and self.stall_timeout > 0 and now - w.last_seen > self.stall_timeout:
                self._died(w, f"sent nothing for {now - w.last_seen:.0f} s (daemon.stall_timeout): killed")
            elif w.ready and w.backoff > RESTART_MIN and now - w.started > 60:
                w.backoff = RESTART_MIN  # a minute of good health forgives earlier deaths

    # --- messages ----------------------------------------------------------------------------------
    def _send(self, w: WorkerProc, data: bytes) -> None:
        w.outbox.append(data)
        self._flush(w)

    def _flush(self, w: WorkerProc) -> None:
        while w.outbox and w.sock is not None:
            try:
                w.sock.send(w.outbox[0])
            except BlockingIOError:
                return  # the worker is busy: the rest waits, in order
            except OSError as e:
                self._died(w, f"cannot be written to ({e.strerror})")
                return
            w.outbox.popleft()

    def _receive(self, w: WorkerProc) -> None:
        # at most READ_BATCH messages at a time: the engine gets its turn (and the flows read so far
        # are analysed) before more are taken in; the rest waits in the socket, then in the worker
        for _ in range(READ_BATCH):
            if w.sock is None:
                return
            try:
                data = w.sock.recv(mqwire.MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError as e:
                self._died(w, f"broke its socket ({e.strerror})")
                return
            if not data:
                self._died(w, "exited")
                return
            try:
                msg = mqwire.loads(data)
            except mqwire.WireError as e:
                self._died(w, f"sent a broken message ({e}): killed")
                return
            self.messages += 1
            w.last_seen = time.monotonic()
            self._handle(w, msg)

    def _handle(self, w: WorkerProc, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "batch":
            if msg[2]:
                self.table.app.extend(msg[2])
            if msg[1]:
                self.table.closed.extend(mqwire.flows_of(msg))
            if msg[3] is not None:
                self._took_stats(w, msg[3])
        elif kind == "ready":
            w.ready, w.info = True, msg[1]
            if w.restarts:
                log(f"queue worker {w.num} restarted (pid {w.info.get('pid')})")
        elif kind == "drained":
            w.drained = True
            self._took_stats(w, msg[1])
        elif kind == "error":
            w.error = msg[1]
            if self.all_started:
                log(f"queue worker {w.num} could not start: {w.error}")

    def _took_stats(self, w: WorkerProc, stats: dict[str, Any]) -> None:
        w.stats = stats
        if isinstance(stats.get("table"), dict):
            self.table.worker_tables[w.num] = stats["table"]
        self.table.worker_bytes[w.num] = int(stats.get("table_bytes", 0))

    def _poll(self, timeout: float, fds: tuple[int, ...]) -> bool:
        """Wait up to `timeout` s for a worker message or one of `fds`; read every message waiting.
        True when one of `fds` is readable."""
        socks = {w.sock.fileno(): w for w in self.workers.values() if w.sock is not None}
        p = select.poll()
        for fd in (*socks, *fds):
            p.register(fd, select.POLLIN)
        ready = p.poll(max(0.0, timeout) * 1000)
        woke = False
        for fd, _ in ready:
            w = socks.get(fd)
            if w is None:
                woke = True
            else:
                self._receive(w)
        return woke

    # --- the source interface (daemon.Daemon.run and shutdown) -------------------------------------
    def run(self, budget: int, timeout: float, fds: tuple[int, ...] = ()) -> int:
        """Send the engine's ops to every worker, then wait for their messages until the table has
        work, one of `fds` is readable or `timeout` passes. Returns the messages read."""
        before = self.messages
        ops = self.table.take_ops()
        if ops:
            messages = mqwire.ops(ops)
            for w in self.workers.values():
                for m in messages:
                    if w.alive:
                        self._send(w, m)
        for w in self.workers.values():
            self._flush(w)
        self._restart_due()
        deadline = time.monotonic() + timeout
        while True:
            woke = self._poll(deadline - time.monotonic(), tuple(fds))
            if woke or self.table.pending or time.monotonic() >= deadline:
                break
        return self.messages - before

    def drain(self, seconds: float = DRAIN_WAIT) -> int:
        """After the diversion is gone: every worker verdicts what is still queued and ships its last
        flows (their analysis follows, in the daemon's own drain)."""
        live = [w for w in self.workers.values() if w.ready]
        for w in live:
            for m in mqwire.ops([("drain", None)]):
                self._send(w, m)
        deadline = time.monotonic() + seconds
        while any(not w.drained and w.alive for w in live) and time.monotonic() < deadline:
            self._poll(deadline - time.monotonic(), ())
        return sum(1 for w in live if w.drained)

    def stats(self) -> dict[str, int]:
        out = dict.fromkeys(QUEUE_KEYS, 0)
        for w in self.workers.values():
            for k, v in w.counts().items():
                out[k] += v
        return out

    def bypass_stats(self) -> dict[str, int] | None:
        """The workers' bypass counters, summed (None when bypass is off). A restarted worker's
        counters start again from zero."""
        if self.bypass is None:
            return None
        out: dict[str, int] = {}
        for w in self.workers.values():
            for k, v in (w.stats.get("bypass") or {}).items():
                out[k] = out.get(k, 0) + int(v)
        return out

    def kernel(self) -> QueueCounters | None:
        qs = [c for num, c in queue_counters().items() if self.first <= num <= self.last]
        if not qs:
            return None
        return QueueCounters(self.first, 0, sum(q.waiting for q in qs), qs[0].copy_mode, qs[0].copy_range,
                             sum(q.queue_dropped for q in qs), sum(q.user_dropped for q in qs), 0)

    def status_extra(self) -> dict[str, Any]:
        """What `slipsq status` adds for a pool: the range and one line per worker."""
        rows = []
        for w in self.workers.values():
            c = w.counts()
            t = self.table.worker_tables.get(w.num, {})
            rows.append({"queue": w.num, "pid": w.info.get("pid") if w.alive else None, "alive": w.ready,
                         "restarts": w.restarts, "packets": c["packets"], "accepted": c["accepted"],
                         "dropped": c["dropped"], "errors": c["errors"], "flows_open": t.get("flows_open", 0),
                         "lost_messages": int(w.stats.get("lost_messages", 0))})
        return {"queue": f"{self.first}:{self.last}", "workers": rows}

    def close(self) -> None:
        """Stop every worker (after drain), waiting a little, then kill what is left."""
        for w in self.workers.values():
            if w.sock is not None:
                try:
                    w.sock.setblocking(True)
                    w.sock.settimeout(0.5)
                    w.sock.send(mqwire.ops([("stop", None)])[0])
                except OSError:
                    pass
        deadline = time.monotonic() + 3.0
        for w in self.workers.values():
            if w.proc is not None:
                try:
                    w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    os.kill(w.proc.pid, signal.SIGKILL)
                    w.proc.wait(timeout=5)
            if w.sock is not None:
                w.sock.close()
                w.sock = None
            w.ready = False
