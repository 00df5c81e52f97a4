"""Inline mode: `slipsq --queue N`. NFQUEUE → engine (flow table, detectors, judge) → commands, which
a worker thread carries out (alerts to stdout, blocks to the kernel and the block store). Three threads,
each owning its part, so that the packet loop never waits on I/O:

    packet loop (main)  reads the queue (verdicts come from the compiled table), gives the engine wall
                        time, hands each batch of commands to the worker, runs the engine calls the
                        control thread posts (manual block/unblock, reload swap), beats the heartbeat
    worker              owns the firewall and the block store: one `ipset restore` and one store
                        transaction per batch, retried when the kernel or the store fails (no block
                        is ever lost: the table drops a blocked IP's packets meanwhile)
    control             answers the control socket (slipsq block/unblock/blocks/status/reload); it
                        asks the packet loop for engine work and the worker for store/kernel work,
                        and waits for them itself
    watchdog            when the packet loop has not beaten for `daemon.stall_timeout` seconds, the
                        process exits: the kernel then passes the traffic (--queue-bypass) and
                        systemd restarts slipsq; a hung slipsq must not hold the network

    SIGTERM/SIGINT  stop reading, remove the diversion rules it installed, verdict what is queued,
                    carry out the last commands, unbind; blocks stay (they expire by themselves)
    SIGHUP          reload config, allow list and models (loaded off the packet loop); flows, blocks
                    and evidence are kept

With `--queue A:B` the packet loop reads from worker processes instead of a queue (one per queue,
slipsq.multiqueue: they verdict packets and ship closed flows here); all the rest is as above.

It never decides anything itself (the judge does) and never blocks a protected address.
"""

from __future__ import annotations

import math
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, TypeVar

from slipsq import budget, multiqueue, protect, runmode, twins
from slipsq.addr import parse_ip
from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.control import Admin, ControlServer, check_block, parse_duration
from slipsq.enrich import make_enrichers
from slipsq.errors import ModelError, RefusedError, SlipsqError
from slipsq.output import activity
from slipsq.output import inline as inline_outputs
from slipsq.output.alerts import AlertWriter
from slipsq.output.binetflow import BinetflowWriter
from slipsq.output.metrics import Exporter, Tally, daemon_snapshot
from slipsq.records import Command, Unblock, printable
from slipsq.service import Service, rss_kb
from slipsq.sink import Fanout
from slipsq.sources import conntrack
from slipsq.sources.nfqueue import FAIL_OPEN_NOTE, NfqueueSource, check_system
from slipsq.verdict.apply import Change, Outcome, carry_out, changes
from slipsq.verdict.backends import TABLE
from slipsq.verdict.firewall import SET4, SET6, Firewall, diversion_tag, host_firewall
from slipsq.verdict.store import Block as Stored
from slipsq.verdict.store import BlockStore, resolve_state_dir

BUDGET = 1024  # packets per return to Python at most (the engine still runs whenever flows are pending)
# an idle daemon wakes once a second, no more (a Pi's CPU and power); the control socket and signals
# wake it at once, and the engine's timers run once a second anyway
IDLE_WAKE = 1.0
STALL_EXIT = 75  # exit status when the watchdog ends a stalled packet loop (EX_TEMPFAIL: restart me)
T = TypeVar("T")


def log(msg: str) -> None:
    print(f"slipsq: {msg}", file=sys.stderr, flush=True)


class Worker:
    """The daemon's I/O thread: carries out batches of the engine's commands, in order.

    Alerts go to the writers; blocks and unblocks go to the kernel (one `ipset restore` for the
    whole batch) and the store (one transaction). A kernel or store failure keeps that part pending:
    it is retried with the next batch, and every RETRY_EVERY seconds, until it lands (the flow table
    drops a blocked IP's packets meanwhile, and expired blocks drop out of the retry by themselves).
    `call` runs any other function on the firewall or the store here, for the control thread."""

    RETRY_EVERY = 5.0

    def __init__(self, fw: Firewall, store: BlockStore, writers: Fanout,
                 clock: Callable[[], float] = time.time) -> None:
        self.fw, self.store, self.writers, self.clock = fw, store, writers, clock
        self.kernel_pending: list[Change] = []
        self.store_pending: list[Change] = []
        self.batches = 0
        self.busy_since = 0.0  # when the batch being carried out began (0: idle), for status
        self._q: SimpleQueue[tuple[list[Command], Future[Outcome] | None] | Callable[[], None] | None] = (
            SimpleQueue())
        self._thread = threading.Thread(target=self._run, name="slipsq-worker", daemon=True)
        # another process (an admin command that found this daemon stuck) may change the store:
        # on_store_change(ips unblocked there, blocks added there, the store's pardons) tells the daemon, at most every
        # SYNC_EVERY s (one cheap query when nothing changed)
        self.on_store_change: Callable[[list[str], list[Stored], dict[str, tuple[float, frozenset[str]]]],
                                       None] | None = None
        self._store_version = 0
        self._store_ips: set[str] = set()
        self.remember_store(clock())
        self.guard: Callable[[float], None] | None = None  # run here every GUARD_EVERY s (Daemon._heal_firewall)

    SYNC_EVERY = 1.0
    GUARD_EVERY = 10.0  # how often `guard` (the daemon's firewall check) runs, when set

    def remember_store(self, now: float) -> None:
        """Take the store as it is now as the known state (at start, after restoring blocks)."""
        self._store_version = self.store.data_version()
        self._store_ips = {b.ip for b in self.store.active(now)}

    def start(self) -> None:
        self._thread.start()

    def submit(self, commands: list[Command]) -> Future[Outcome]:
        """Queue a batch; the future is done when it has been carried out (for admins who wait)."""
        done: Future[Outcome] = Future()
        self._q.put((commands, done))
        return done

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run fn() in the worker thread (the firewall and the store are used from this thread only)."""
        done, run = _deferred(fn)
        self._q.put(run)
        return done

    def say(self, msg: str) -> None:
        """log(msg), written by this thread: stderr is a pipe to journald, and a write to it waits
        while journald does not read; the packet loop must not. Written at once when this thread is
        the caller or is not running (before start, after stop: nothing would write it later)."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            log(msg)
        else:
            self._q.put(partial(log, msg))

    def stop(self, timeout: float = 10.0) -> bool:
        """Carry out what is queued, then end the thread. False when it did not end in time."""
        if not self._thread.is_alive():  # never started (a failed start) or already ended
            return True
        self._q.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        next_retry = self.clock() + self.RETRY_EVERY
        next_sync = self.clock() + self.SYNC_EVERY
        next_guard = self.clock() + self.GUARD_EVERY
        while True:
            try:
                item = self._q.get(timeout=self.SYNC_EVERY)
            except Empty:
                item = _idle  # nothing came: a retry and sync turn, no batch
            batch: list[tuple[list[Command], Future[Outcome] | None]] = []
            stop = False
            while True:  # everything queued by now is one batch: one ipset call, one transaction
                if item is None:
                    stop = True
                elif callable(item):
                    item()
                else:
                    batch.append(item)
                try:
                    item = self._q.get_nowait()
                except Empty:
                    break
            now = self.clock()
            if batch or ((self.kernel_pending or self.store_pending) and now >= next_retry):
                next_retry = now + self.RETRY_EVERY
                self._carry_out(batch, now)
            if now >= next_sync and not self.store_pending:
                next_sync = now + self.SYNC_EVERY
                self._sync(now)
            if self.guard is not None and now >= next_guard and not stop:
                next_guard = now + self.GUARD_EVERY
                try:
                    self.guard(now)
                except Exception as e:  # a bug in the check must not end the worker
                    log(f"firewall check failed, continuing: {type(e).__name__}: {e}")
            if stop:
                return

    def _sync(self, now: float) -> None:
        """What another process changed in the store since last time (its own writes do not count,
        see BlockStore.data_version), handed to on_store_change."""
        try:
            version = self.store.data_version()
            if version == self._store_version:
                return
            self._store_version = version
            active = {b.ip: b for b in self.store.active(now)}
            gone = sorted(self._store_ips - set(active))
            pardons = self.store.pardons(now) if gone else {}  # what the admin gave each unblock
        except Exception as e:  # the store unreadable now: the next turn tries again
            log(f"cannot read the block store ({type(e).__name__}: {e})")
            return
        new = [b for ip, b in active.items() if ip not in self._store_ips]
        self._store_ips = set(active)
        if (gone or new) and self.on_store_change is not None:
            self.on_store_change(gone, new, pardons)

    def _carry_out(self, batch: list[tuple[list[Command], Future[Outcome] | None]], now: float) -> None:
        self.busy_since = now
        commands = [c for cmds, _ in batch for c in cmds]
        try:
            # the kernel first: a block must not wait while a batch's flows go to the activity log
            outcome = self.apply(changes(commands), now)
            self.writers(commands)
        except BaseException as e:  # a bug here must not leave an admin waiting forever
            for _, done in batch:
                if done is not None:
                    done.set_exception(e)
            log(f"worker error, continuing: {type(e).__name__}: {e}")
            return
        finally:
            self.busy_since = 0.0
        self.batches += 1
        for _, done in batch:
            if done is not None:
                done.set_result(outcome)

    def apply(self, new: list[Change], now: float) -> Outcome:
        """Kernel and store for `new`, after whatever failed before (so the last command per IP wins)."""
        kernel_was, store_was = bool(self.kernel_pending), bool(self.store_pending)
        kernel = self.kernel_pending + new
        stored = self.store_pending + new
        out = Outcome()
        if kernel:
            k = carry_out(self.fw, None, kernel, now)
            out.refused, out.kernel_error = k.refused, k.kernel_error
            for ip, why in k.refused.items():  # the judge already refuses these: a second line of defence
                log(f"not blocking {ip}: {why}")
            if k.kernel_error:
                if not kernel_was:
                    log(f"the kernel refused a block update ({k.kernel_error}); slipsq drops the packets "
                        f"itself and retries every {self.RETRY_EVERY:.0f} s")
                # a block that runs out before the retry turns into a delete there (apply.plan)
                self.kernel_pending = kernel
            else:
                if kernel_was:
                    log("the block updates the kernel had refused are in the kernel now")
                self.kernel_pending = []
        keep = [c for c in stored if c.ip not in out.refused]
        if keep:
            s = carry_out(None, self.store, keep, now)
            out.stored, out.store_error = s.stored, s.store_error
            if not s.store_error:
                for c in keep:
                    if isinstance(c, Unblock):
                        self._store_ips.discard(c.ip)
                    else:
                        self._store_ips.add(c.ip)
            if s.store_error:
                if not store_was:
                    log(f"the block store failed ({s.store_error}); the blocks stand in the kernel and are "
                        f"written when the store works again (retried every {self.RETRY_EVERY:.0f} s)")
                self.store_pending = keep
            else:
                if store_was:
                    log("the block store works again; every pending block is written")
                self.store_pending = []
        return out


class Daemon:
    def __init__(self, queue: multiqueue.Queues, install_rules: bool, config_path: str | None,
                 state_dir: str | None, queue_maxlen: int | None = None, backend: str | None = None,
                 alert_format: str | None = None) -> None:
        self.queue_num = queue
        self.alert_format = alert_format  # --alert-format; None: the config's output.format
        self.install_rules = install_rules
        self.config_path = config_path
        self.state_dir = resolve_state_dir(state_dir)
        self.maxlen_flag = queue_maxlen
        self.backend = backend
        self.stop = False
        self.bypass: conntrack.Merger | None = None  # flow bypass (sources/conntrack.py), when enabled
        self.diversion_installed = False
        self._heal_lock = threading.Lock()  # _heal_firewall (worker) against shutdown's diversion removal
        self._marks = (0, 0)  # bypass (mark, repeat) as installed
        self._dns = False  # dns.queue_gateway as installed (at start, and on each reload)
        self.want_reload = False
        self.started = time.time()
        self.engine_errors = 0
        self.heartbeat = time.monotonic()
        self._last_error_log = -math.inf
        self._calls: SimpleQueue[Callable[[], None]] = SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)
        self._threads_stop = threading.Event()

    # --- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        check_system()
        self.cfg = runmode.load_config(self.config_path)
        budgeted = budget.apply(self.cfg)  # memory.budget_mb
        self.svc = Service.from_env(self.cfg, self.state_dir)  # sd_notify, journal, alerts.jsonl (service.py)
        self.maxlen = self.maxlen_flag or int(self.cfg["queue.maxlen"])
        self.allow = runmode.make_allow(self.cfg)
        # what the gateway depends on, and its LAN: followed while running (never waits)
        self.protected: protect.ProtectedAddresses | None = protect.for_config(self.allow, self.cfg)
        self.store = BlockStore(self.state_dir)
        self.fw = host_firewall(self.allow, self.backend)
        # the control socket first: it is also the "is another slipsq using this state dir" check
        self.control = ControlServer(self.state_dir, self.handle)
        fmt = self.alert_format or self.cfg["output.format"]
        iface = "NFQ#" + multiqueue.queue_text(self.queue_num)  # as Suricata names a queue (NFQ#0, or NFQ#0:3)
        self.writer = AlertWriter(sys.stdout, bool(self.cfg["output.json"]), fmt, in_iface=iface,
                                  facility=self.cfg["output.syslog_facility"])
        self.outputs = inline_outputs.build(self.cfg, fmt, iface, self.svc.log)  # format_log, syslog, hooks
        self.tally = Tally()  # alerts and blocks per detector, for the metrics
        # the activity log behind `slipsq timeline`/`report`: written by the worker, never the loop
        activity_log = activity.gateway_sink(self.cfg, self.state_dir)
        writers = [*([self.writer] if self.svc.alerts_to_stdout else []), *self.svc.sinks, *self.outputs.sinks,
                   self.tally, *([activity_log] if activity_log is not None else [])]
        if self.cfg["output.flows_log"]:  # what the detectors saw, flow by flow (written by the worker)
            writers.append(BinetflowWriter(open(self.cfg["output.flows_log"], "a", buffering=1)))
        self.worker = Worker(self.fw, self.store, Fanout(writers, on_error=self._engine_error))
        self.worker.on_store_change = self._store_changed
        # --queue A:B: the table is the workers' (slipsq.multiqueue); the engine cannot tell
        remote = None if isinstance(self.queue_num, int) else multiqueue.RemoteTable()
        self.engine = runmode.build_engine(self.cfg, load_models(self.cfg), self.allow,
                                           on_error=self._engine_error,
                                           export_flows=activity_log is not None or bool(self.cfg["output.flows_log"]),
                                           export_queries=activity_log is not None, table=remote)
        if self.protected is not None:  # network.follow_lan: the LAN's networks are local, followed
            self.protected.on_lan = self._lan_changed
        self._follow_lan()
        # sets, chain and jumps always (blocks need them), then the stored blocks, then the queue
        # (a busy queue fails here, before we touch a diversion that may belong to another slipsq),
        # and only then the diversion, when asked
        self.fw.install(None)
        if self.fw.cleaned:  # a switched firewall.backend (issue 12), or an older slipsq's other tables
            log("removed what slipsq had left elsewhere in the firewall: " + "; ".join(self.fw.cleaned))
        if self.fw.backend.table != TABLE:  # iptables-legacy without iptable_security (Raspberry Pi OS)
            t = self.fw.backend.table
            log(f"warning: iptables-legacy has no security table here (iptable_security): slipsq's rules are "
                f"in the {t} table, and the queue's verdicts skip any rule of yours after them in {t} FORWARD "
                f"(TCPMSS clamping: put it in the filter table, or use the nft backend, which has the table)")
        self.restore_blocks(time.time())
        # flow bypass (sources/conntrack.py): the merger is here with one queue; with a queue range
        # each worker runs its own on its own table
        bypass = conntrack.bypass_settings(self.cfg)  # None: bypass.enabled off
        self.bypass = None
        if isinstance(self.queue_num, int) and bypass is not None:
            self.bypass = conntrack.start_merger(bypass, self.engine.table)
        mark, repeat = (bypass["mark"], bypass["repeat"]) if bypass is not None else (0, 0)
        self.source: NfqueueSource | multiqueue.WorkerPool = (
            NfqueueSource(self.queue_num, self.engine.table, maxlen=self.maxlen, bypass_mark=mark,
                          repeat_mark=repeat)
            if isinstance(self.queue_num, int) else multiqueue.WorkerPool(
                *self.queue_num, self.engine.table, maxlen=self.maxlen,
                table_config=self.cfg.section("flowtable"), stall_timeout=float(self.cfg["daemon.stall_timeout"]),
                bypass=bypass))
        self._dns = bool(self.cfg["dns.queue_gateway"])
        if self.install_rules:
            self.fw.install(self.queue_num, bypass_mark=mark, repeat_mark=repeat, dns=self._dns)
            self.diversion_installed = True
        self._marks = (mark, repeat)
        self.worker.guard = self._heal_firewall
        # the other threads hold the GIL for 1 ms at most at a time, not CPython's 5 ms: the packet
        # loop gets it back quickly whenever the worker or the control thread is busy in Python
        sys.setswitchinterval(0.001)
        self.worker.start()
        self._spawn(self._serve_control, "slipsq-control")
        self.heartbeat = time.monotonic()  # the watchdog counts from here: start-up is not a stall
        if self.cfg["daemon.stall_timeout"] > 0:
            self._spawn(self._watchdog, "slipsq-watchdog")
        self.metrics = Exporter.from_config(self.cfg, lambda: daemon_snapshot(self), log)  # [metrics], own threads
        self.metrics.start()
        i = self.source.info
        log(f"inline on NFQUEUE {multiqueue.queue_text(self.queue_num)} (maxlen {i.maxlen}, copy {i.copy_range} B, "
            f"rcvbuf {i.rcvbuf} B, "
            f"fail-open {'on' if i.fail_open else 'UNSUPPORTED'}), iptables backend {self.fw.backend.name} "
            f"(table {self.fw.backend.table}), "
            f"state {self.state_dir}" + ("" if self.install_rules else "; diversion rules not installed "
                                        "(--install-rules)"))
        if budgeted:
            log("memory budget " + ", ".join(f"{k} {new}" for k, (_, new) in budgeted.items()))
        self.svc.ready(self.light_status())  # READY=1: the queue is bound, the rules are in

    def restore_blocks(self, now: float) -> None:
        """Unexpired blocks back into the kernel and the engine, through the engine's block command
        (one kernel batch); expired ones and ones protected now removed."""
        gone = self.store.purge_expired(now)
        batch: list[Change] = [Unblock(b.ip, now, "block expired", "expiry") for b in gone]
        for b in self.store.active(now):
            why = self.allow.why_protected(b.ip)
            if why is not None:  # the allow list changed since: protected now wins
                batch.append(Unblock(b.ip, now, f"now protected: {why}", "allow-list"))
                continue
            seconds = b.remaining(now)
            batch += changes(self.engine.block(b.ip, now, seconds or 0.0, b.reason, "store", b.times))
        out = carry_out(self.fw, self.store, batch, now)
        for what, err in (("kernel", out.kernel_error), ("block store", out.store_error)):
            if err:
                raise SlipsqError(f"cannot restore the stored blocks: the {what} failed: {err}")
        if hasattr(self, "worker"):
            self.worker.remember_store(now)
        for ip, (until, covers) in self.store.pardons(now).items():  # admins' unblocks still pardoned
            if ip not in self.engine.judge.blocked():
                self.engine.judge.pardon(ip, until, covers)
        restored = sum(1 for c in batch if not isinstance(c, Unblock))
        if restored or gone:
            log(f"restored {restored} blocks from the store, {len(gone)} expired ones removed")
        for why in self.store.damaged.values():
            log(f"block store {self.store.path}: a damaged row skipped (not restored): {why}")

    def _heal_firewall(self, now: float) -> None:
        """(worker, every Worker.GUARD_EVERY s) Put back what someone else removed under slipsq: its
        sets, chain, jumps and diversion (an `nft flush ruleset` when nftables.service reloads wipes
        iptables-nft's tables: blocks stopped applying and traffic went uninspected until a restart),
        and blocks missing from the kernel sets (an `ipset flush`). Never after shutdown began: the
        diversion it took out stays out (the lock orders the two)."""
        with self._heal_lock:
            if self._threads_stop.is_set():
                return
            queue = self.queue_num if self.diversion_installed else None
            mark, repeat = self._marks
            try:
                gone = self.fw.missing(queue, bypass_mark=mark, dns=self._dns)
                if gone:
                    log(f"firewall: {', '.join(gone)} removed by someone else (an nftables reload with "
                        "'flush ruleset'? an 'iptables -F'?); putting them back")
                    self.fw.install(queue, bypass_mark=mark, repeat_mark=repeat, dns=self._dns)
                # the judge's blocks, not the store's: an admin's unblock whose store write is still
                # pending is gone from the judge already (the store would put it back in the kernel)
                blocks = {str(parse_ip(ip)): until for ip, until in self.engine.judge.blocked().items() if until > now}
                counts = self.fw.member_counts()
                short = [fam for fam, name in ((4, SET4), (6, SET6)) if counts.get(name, 0)
                         < sum(1 for ip in blocks if (":" in ip) == (fam == 6))]
                if short:  # (the full listing only then: it costs in step with the blocks)
                    have = self.fw.members()
                    lost = [(ip, None if until == math.inf else until - now) for ip, until in blocks.items()
                            if ip not in have]
                    # one the firewall refuses (protected now, or IPv6 with IPv6 off) is not missing: said never
                    put = len(lost) - len(self.fw.block(lost)) if lost else 0
                    if put:
                        log(f"firewall: {put} blocks were missing from the kernel sets; put back")
            except SlipsqError as e:
                log(f"cannot check the firewall now: {e}")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    # --- the packet loop ---------------------------------------------------------------------------
    def run(self) -> int:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        old_wakeup = signal.set_wakeup_fd(wfd)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        handlers = {s: signal.signal(s, self._on_signal) for s in sigs}
        try:
            source, table = self.source, self.engine.table
            fds = (self._wake_r, rfd)
            bypass = getattr(self, "bypass", None)
            polled = fds if bypass is None else (*fds, bypass.fd)
            # the wake-up pipes are read when poll says they hold something: a read of an empty one
            # raised BlockingIOError, ~4 µs each, twice per turn of this loop (a turn every 32
            # packets under load, when the table has something for the engine)
            woken = select.poll()
            for fd in fds:
                woken.register(fd, select.POLLIN)
            next_tick = 0.0
            while not self.stop:
                source.run(BUDGET, IDLE_WAKE, polled)
                self.beat()
                now = time.time()
                if bypass is not None:
                    bypass.poll(now)  # conntrack's counts for bypassed flows (sources/conntrack.py)
                if table.pending or now >= next_tick:
                    self._advance(now)
                    next_tick = now + IDLE_WAKE
                self._run_calls()
                for fd, _ in woken.poll(0):
                    try:
                        os.read(fd, 512)
                    except BlockingIOError:
                        pass
                if self.want_reload:
                    self.want_reload = False
                    self._spawn(self._reload_logged, "slipsq-reload")
            return 0
        finally:
            self.shutdown()
            for s, h in handlers.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_wakeup)
            os.close(rfd)
            os.close(wfd)

    def beat(self) -> None:
        """The packet loop is alive (it returns from the queue at least every IDLE_WAKE s): the stall
        watchdog's heartbeat, and systemd's (WATCHDOG=1 is sent from here, the packet loop, only)."""
        self.heartbeat = time.monotonic()
        self.svc.tick(self.heartbeat, self.light_status)

    def _advance(self, now: float) -> None:
        """Run the engine and hand what it decided to the worker. A bug in one detector must not take
        the gateway's inspection down with it: the engine isolates each detector and decoder call
        (`_engine_error`); this catch is the last line of defence for anything else."""
        try:
            commands = self.engine.advance(now)
        except Exception as e:  # the last line of defence of a long-running daemon
            self._engine_error("engine", e)
            commands = self.engine.take()
        if commands:
            self.worker.submit(commands)
        if self.protected is not None:  # addresses gained since start (never waits)
            self.protected.refresh(now)

    def _store_changed(self, gone: list[str], new: list[Stored],
                       pardons: dict[str, tuple[float, frozenset[str]]]) -> None:
        """(worker thread) Another process changed the store: an admin command that found this
        daemon stuck applied a block or an unblock to the store and the kernel itself. The packet
        loop makes the engine agree (the judge forgets or restores, the table drops or passes), with
        the pardon that admin gave (none when the store has none)."""
        def sync() -> None:
            now = time.time()
            known = self.engine.judge.blocked()
            commands: list[Command] = []
            for ip in gone:
                if ip in known:
                    until, covers = pardons.get(ip, (now, frozenset()))  # none in the store: none
                    commands += self.engine.unblock(ip, now, "unblocked while slipsq did not answer", "store",
                                                    max(0.0, until - now), sorted(covers))
            for b in new:
                if b.ip not in known:
                    commands += self.engine.block(b.ip, now, b.remaining(now) or 0.0, b.reason, "store", b.times)
            if commands:
                self.worker.submit(commands)
                self.worker.say(f"picked up from the block store: {len(gone)} unblocked, {len(new)} blocked by "
                                "an admin while slipsq did not answer")

        self._calls.put(sync)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _run_calls(self) -> None:
        """Engine work the control thread asked for (it waits on its future). (Asked `empty()` first:
        get_nowait on an empty queue raises Empty, ~2 µs, at every turn of the packet loop.)"""
        calls = self._calls
        while not calls.empty():  # (this loop is the only taker: what empty() saw is there)
            calls.get_nowait()()

    def on_loop(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Run fn() on the packet loop (which owns the engine) and wait for its result (control
        thread only). SlipsqError when the loop does not get to it in `timeout` seconds."""
        done, run = _deferred(fn)
        self._calls.put(run)
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full of wake-ups already
        return _wait(done, timeout, "the packet loop")

    def _engine_error(self, where: str, e: Exception) -> None:
        self.engine_errors += 1
        now = time.time()
        if now - self._last_error_log >= 60:
            self._last_error_log = now
            self.worker.say(f"engine error in {where} ({self.engine_errors} so far), continuing: "
                            f"{type(e).__name__}: {e}")

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.want_reload = True
        else:
            self.stop = True

    def _watchdog(self) -> None:
        limit = float(self.cfg["daemon.stall_timeout"])
        while not self._threads_stop.wait(1.0):
            stalled = time.monotonic() - self.heartbeat
            if stalled > limit:
                log(f"the packet loop has not run for {stalled:.0f} s (daemon.stall_timeout {limit:g}); "
                    "exiting so that the kernel passes traffic (fail-open) and systemd restarts slipsq")
                os._exit(STALL_EXIT)

    def shutdown(self) -> None:
        """Diversion out first (no new packets come), then verdict what is queued, carry out the last
        commands, then unbind."""
        self._threads_stop.set()
        if hasattr(self, "metrics"):  # first: it reads the queue's counters
            self.metrics.stop()
        src = getattr(self, "source", None)
        svc: Service | None = getattr(self, "svc", None)
        if svc is not None:
            svc.stopping()
        with self._heal_lock:  # a firewall check running now finishes first; none runs after (stop is set)
            if self.diversion_installed:
                try:
                    self.fw.remove_diversion(self.queue_num)
                except SlipsqError as e:
                    log(f"could not remove the diversion rule: {e}")
        if src is not None:
            src.drain()
            merger: conntrack.Merger | None = getattr(self, "bypass", None)
            if merger is not None:
                merger.close()  # held flows go on with what they have
            self._advance(time.time())
            src.close()
        if hasattr(self, "control"):
            self.control.close()
        guard: protect.ProtectedAddresses | None = getattr(self, "protected", None)
        if guard is not None:
            guard.close()
        if hasattr(self, "worker") and not self.worker.stop():
            log("the worker did not finish in time (a hung ipset or store?); the flow table had dropped "
                "what it blocked")
        self.diversion_installed = False
        if hasattr(self, "store"):
            self.store.close()
        if src is not None:
            log("stopped; blocks stay in force until they expire (slipsq blocks / slipsq unblock IP)")
        if svc is not None:
            svc.close()
        if hasattr(self, "outputs"):
            self.outputs.close()

    # --- reload and control (control thread) -------------------------------------------------------
    def _serve_control(self) -> None:
        self.control.serve(self._threads_stop, every=IDLE_WAKE)

    def _reload_logged(self) -> None:
        self.svc.reloading()
        try:
            self.reload()
        except SlipsqError as e:
            log(f"reload failed, keeping the running configuration: {e}")
        except Exception as e:  # a bug, or an input error nobody turned into a message: the daemon
            # goes on with what runs (the engine swaps all or nothing), and systemd hears READY again
            log(f"reload failed, keeping the running configuration: internal error: {type(e).__name__}: {e}")
        self.svc.ready(self.light_status())

    def reload(self) -> None:
        """New config, allow list and models, loaded here (off the packet loop), then swapped in on
        the loop; the flow table, blocks and evidence windows are kept."""
        cfg = runmode.load_config(self.config_path)
        budget.apply(cfg)
        allow = runmode.make_allow(cfg)
        models = runmode.load_engine_models(None, cfg)  # a ModelError fails the reload: the models in use stay
        self.on_loop(lambda: self._swap(cfg, allow, models))
        log(f"reloaded {cfg.source}: {len(models)} models, {len(allow.networks)} allow-list entries")
        self._set_dns_diversion(bool(cfg["dns.queue_gateway"]))

    def _set_dns_diversion(self, dns: bool) -> None:
        """(reload thread) dns.queue_gateway changed: put in or take out the DNS diversion now (a
        firewall change: never on the packet loop; the heal lock orders it with the worker's heals
        and the shutdown's removal)."""
        with self._heal_lock:
            if dns == self._dns or not self.diversion_installed or self._threads_stop.is_set():
                return
            mark, repeat = self._marks
            self.fw.install(self.queue_num, bypass_mark=mark, repeat_mark=repeat, dns=dns)
            self._dns = dns
        log("dns.queue_gateway " + ("on: DNS to and from the gateway itself is queued" if dns else
                                    "off: DNS to and from the gateway itself is no longer queued"))

    def _follow_lan(self) -> None:
        """(packet loop) The LAN's networks as last read are local, when network.follow_lan."""
        lan = self.protected.lan if self.protected is not None and self.cfg["network.follow_lan"] else []
        self.engine.follow_lan(lan)

    def _lan_changed(self, networks: list[str]) -> None:
        """(packet loop) The LAN's networks changed (a new IPv6 prefix): local from now on; said by
        the worker (no write on the loop)."""
        if self.cfg["network.follow_lan"]:
            self._follow_lan()
            told = ", ".join([*self.cfg["network.local"], *networks]) or "none"
            self.worker.say(f"local networks besides the private ranges now: {told}")

    def _swap(self, cfg: Config, allow: AllowList, models: list[Any]) -> None:
        self.engine.reconfigure(cfg, models, allow, make_enrichers(cfg))
        if self.protected is not None:
            self.protected.allow = allow  # the next refresh installs the current map into it
        self.cfg, self.allow = cfg, allow
        self._follow_lan()  # network.follow_lan may have changed
        self.fw.allow = allow
        self.writer.as_json = bool(cfg["output.json"])

    def handle(self, req: dict[str, Any], who: str) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "block":
            return {"ok": True, "block": self.admin_block(req, who)}
        if cmd == "unblock":
            why = printable(req.get("reason") or "unblocked by admin")
            seconds = self.admin_unblock(str(req.get("ip", "")), who, why, req.get("pardon"))
            return {"ok": True, "pardon": "forever" if seconds == float("inf") else seconds}
        if cmd == "blocks":
            admin = Admin(self.store, None, self.allow, default_duration(self.cfg))
            # the damage found now (the store's `damaged` keeps rows removed since)
            rows, pardons, damaged = _wait(self.worker.call(lambda: (admin.blocks(), admin.pardons(),
                                                                     self.store.damage())), 10.0, "the worker")
            return {"ok": True, "blocks": rows, "pardons": pardons, "damaged": damaged}
        if cmd == "reload":
            self.reload()
            return {"ok": True}
        return {"ok": True, "status": self.status(bool(req.get("light")))}

    def admin_block(self, req: dict[str, Any], who: str) -> dict[str, Any]:
        """A manual block: checked here, decided on the packet loop through the engine (the same
        Block command as the judge's), carried out by the worker; answered once it is stored."""
        dur = req.get("duration", "default")
        seconds = default_duration(self.cfg) if dur in ("default", None) else parse_duration(str(dur))
        ip = check_block(self.allow, str(req.get("ip", "")))
        reason = printable(req.get("reason") or "manual")  # one line in the audit and the logs
        done = self.on_loop(lambda: self.worker.submit(self.engine.block(ip, time.time(), seconds or 0.0, reason, who)))
        out = _wait(done, 30.0, "the worker")
        if ip in out.refused:
            raise RefusedError(f"refusing to block {ip}: {out.refused[ip]}")
        stored = out.stored.get(ip)
        if stored is None:  # the store failed: the worker retries; the block stands in the kernel and table
            return {"ip": ip, "pending": out.store_error or out.kernel_error}
        return stored.to_dict()

    def admin_unblock(self, text: str, who: str, reason: str, pardon: Any = None) -> float:
        """Lift the block of `text`, with its pardon (seconds, "forever", or None: judge.pardon).
        Returns the pardon's length in seconds (inf: forever)."""
        from slipsq.control import canonical_ip, parse_pardon

        ip = canonical_ip(text)
        seconds = float(self.cfg["judge.pardon"]) if pardon is None else parse_pardon(str(pardon))
        stored, in_kernel, row = _wait(self.worker.call(lambda: (self.store.get(ip), ip in self.fw.members(),
                                                                 self.store.has_row(ip))), 10.0, "the worker")
        if stored is None and not in_kernel and not row:  # (a damaged row: removed too)
            raise RefusedError(f"{ip} is not blocked")
        covers = stored.decided_by() if stored is not None else ()  # when the judge has no window of it
        done = self.on_loop(lambda: self.worker.submit(self.engine.unblock(ip, time.time(), reason, who, seconds,
                                                                           covers)))
        out = _wait(done, 30.0, "the worker")
        if out.kernel_error:
            raise SlipsqError(f"unblocked in slipsq, but the kernel refused: {out.kernel_error} (retrying)")
        return seconds

    def light_status(self) -> dict[str, Any]:
        """Counters only (no subprocess, no SQLite, no other thread): cheap enough for the packet loop
        (systemd's STATUS= line, the per-second rates)."""
        q = self.source.stats()
        c = self.engine.counters
        return {"packets": q["packets"], "accepted": q["accepted"], "dropped": q["dropped"],
                "table": self.engine.table.stats(), "alerts": c.alerts, "blocks_decided": c.blocks}

    def _bypass_status(self, q: dict[str, int]) -> dict[str, int] | None:
        """Bypass's counters for `slipsq status`: this process's merger, or the sum of the queue
        workers' (None when bypass is off)."""
        if isinstance(self.source, multiqueue.WorkerPool):
            return self.source.bypass_stats()
        return None if self.bypass is None else self.bypass.status(q)

    def status(self, light: bool = False) -> dict[str, Any]:
        """`light` (slipsq top asks once a second): counters only, no `iptables-save` for the block
        rules' counters (kernel_block_drops is None) and no store query (the judge's active blocks)."""
        q = self.source.stats()
        # a pool's rows read with its sums, not after the slow part below (iptables-save, the store):
        # the packet loop updates the workers' counters meanwhile, and the rows summed to more than
        # "packets" (a kernel test saw 224 against 216)
        pool = self.source.status_extra() if isinstance(self.source, multiqueue.WorkerPool) else {}
        table = self.engine.table.stats()
        k = self.source.kernel()
        c = self.engine.counters
        now = time.time()
        try:
            if light:  # a copy of the judge's dict is atomic: no need to ask the packet loop
                (pk, by), active = (-1, -1), len(self.engine.judge.blocked())
            else:
                (pk, by), active = _wait(self.worker.call(lambda: (self.fw.drop_counters(),
                                                                   len(self.store.active(now)))), 5.0, "the worker")
        except SlipsqError:
            pk = by = active = -1  # the worker is busy (a hung ipset?): say so rather than wait
        busy = self.worker.busy_since
        st: dict[str, Any] = {
            "pid": os.getpid(), "uptime": round(now - self.started, 1), "queue": self.queue_num,
            "packets": q["packets"], "accepted": q["accepted"], "dropped": q["dropped"],
            "errors": q["errors"], "engine_errors": self.engine_errors, "table": table,
            "bypass": self._bypass_status(q),
            "flows": c.flows, "alerts": c.alerts, "blocks_decided": c.blocks,
            "blocks_active": active,
            "worker": {"batches": self.worker.batches, "busy_s": round(now - busy, 1) if busy else 0.0,
                       "kernel_pending": len(self.worker.kernel_pending),
                       "store_pending": len(self.worker.store_pending)},
            "packet_loop_age_s": round(time.monotonic() - self.heartbeat, 3),
            "kernel": None if k is None else {"waiting": k.waiting, "queue_dropped": k.queue_dropped,
                                              "user_dropped": k.user_dropped, "maxlen": self.maxlen},
            "kernel_block_drops": None if light else {"packets": pk, "bytes": by},
            "fail_open": self.source.info.fail_open, "note": FAIL_OPEN_NOTE,
            "implementation": twins.implementation(), "local_networks": self.engine.local_networks,
            # DNS answers whose names were not learnt: their resolver is not trusted (dns.trusted_resolvers)
            "dns_untrusted_answers": self.engine.ctx.resolvers.untrusted,
            "backend": self.fw.backend.name, "diversion": diversion_tag(self.queue_num) if self.install_rules
            else "not installed by slipsq",
            "dns_diversion": self._dns and self.diversion_installed,  # dns.queue_gateway's rules are in
            "per_second": self.svc.rates.to_dict(),
            "memory": {"rss_kb": rss_kb(), "table_bytes": int(getattr(self.engine.table, "memory", int)())},
            "last_alerts": self.svc.recent, "systemd": self.svc.notifier.enabled, **self.outputs.counters(),
            "watchdog": self.svc.notifier.watchdog_every,
        }
        st.update(pool)  # a pool's range, and packets per worker
        return st


def _idle() -> None:
    """The worker's turn when nothing was queued (it still retries and syncs)."""


def _deferred(fn: Callable[[], T]) -> tuple[Future[T], Callable[[], None]]:
    """(future, run): calling run() in another thread runs fn() there and settles the future."""
    done: Future[T] = Future()

    def run() -> None:
        try:
            done.set_result(fn())
        except BaseException as e:
            done.set_exception(e)

    return done, run


def _wait(done: Future[T], timeout: float, who: str) -> T:
    try:
        return done.result(timeout)
    except TimeoutError:
        raise SlipsqError(f"{who} did not get to it within {timeout:g} s (it is busy or hung); "
                          "try again, or see 'slipsq status'") from None


def load_models(cfg: Config) -> list[Any]:
    """The Markov models, or [] with a warning (inline mode still runs its other detectors)."""
    try:
        return runmode.load_engine_models(None, cfg)
    except ModelError as e:
        log(f"warning: running without Markov models: {e}")
        return []


def default_duration(cfg: Config) -> float | None:
    """A manual block's length when none is given: judge.block_duration, 0 meaning no expiry."""
    d = float(cfg["judge.block_duration"])
    return d if d > 0 else None


def run_daemon(queue: multiqueue.Queues, install_rules: bool, config_path: str | None,
               state_dir: str | None, queue_maxlen: int | None = None, backend: str | None = None,
               alert_format: str | None = None) -> int:
    """`slipsq --queue N` (or A:B: slipsq.multiqueue): run until SIGTERM/SIGINT. SlipsqError (one line)
    when it cannot start."""
    d = Daemon(queue, install_rules, config_path, state_dir, queue_maxlen, backend, alert_format)
    try:
        d.start()
    except BaseException:
        d.shutdown()  # undo what a failed start did (socket, queue); never the blocks
        raise
    return d.run()
