"""Inline mode: `slipsq --queue N`. Wires NFQUEUE → engine (flow table, detectors, judge) → the
inline sink (kernel block + block store) and alerts on stdout, and runs the loop that gives the
engine wall time, answers the control socket and handles signals.

    SIGTERM/SIGINT  stop reading, remove the diversion rules it installed, verdict what is queued,
                    unbind; blocks stay (they expire by themselves in the kernel)
    SIGHUP          reload config, allow list and models; flows, blocks and evidence are kept

It never decides anything itself (the judge does) and never blocks a protected address.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Any

from slipsq import config as configmod
from slipsq import protect, runmode
from slipsq.allow import AllowList, own_addresses
from slipsq.control import Admin, ControlServer, parse_duration
from slipsq.enrich import make_enrichers
from slipsq.errors import ModelError, SlipsqError
from slipsq.output.alerts import AlertWriter
from slipsq.records import Alert
from slipsq.sink import Sink
from slipsq.sources.nfqueue import DEFAULT_MAXLEN, FAIL_OPEN_NOTE, NfqueueSource, check_system
from slipsq.verdict.firewall import Firewall, diversion_tag, host_firewall
from slipsq.verdict.store import BlockStore, resolve_state_dir

BUDGET = 1024  # packets per return to Python at most (the engine still runs whenever flows are pending)


def log(msg: str) -> None:
    print(f"slipsq: {msg}", file=sys.stderr, flush=True)


class InlineSink(Sink):
    """The engine's verdict sink inline: a block goes to the kernel and the store in one step.

    A block is never lost: when the kernel refuses the set update (ipset failing, the ip_set module
    unloaded), the block is still written to the store, the flow table keeps dropping the address's
    packets in slipsq, and the kernel update is retried (`retry`, from the daemon's loop) until it
    succeeds or the block expires."""

    RETRY_EVERY = 5.0  # seconds between kernel retries

    def __init__(self, firewall: Firewall, store: BlockStore) -> None:
        self.fw = firewall
        self.store = store
        self.pending: dict[str, float | None] = {}  # ip -> expiry (None: none) of blocks not in the kernel yet
        self._next_retry = 0.0

    def block(self, ip: str, duration: float, alert: Alert) -> None:
        seconds = duration or None
        now = alert.evidence.ts
        expires = None if seconds is None else now + seconds
        try:
            refused = self.fw.block([(ip, seconds)])
        except SlipsqError as e:
            refused = []
            self.pending[ip] = expires
            log(f"the kernel refused the block of {ip} ({e}); slipsq drops its packets itself and "
                f"retries every {self.RETRY_EVERY:.0f} s")
        if refused:  # the judge already refuses these; this is the second line of defence
            log(f"not blocking {ip}: {refused[0][1]}")
            return
        self.store.add(ip, since=now, expires=expires, reason=alert.decision.reason,
                       detector=alert.evidence.detector, evidence=alert.to_dict(), by="judge")

    def retry(self, now: float) -> None:
        """Put the blocks the kernel refused into it (one batch), at most every RETRY_EVERY s."""
        if not self.pending or now < self._next_retry:
            return
        self._next_retry = now + self.RETRY_EVERY
        # one expired meanwhile: the engine unblocks it, nothing to add
        self.pending = {ip: exp for ip, exp in self.pending.items() if exp is None or exp > now}
        if not self.pending:  # all expired: no empty batch, no "0 block(s)" message
            return
        entries = [(ip, None if exp is None else exp - now) for ip, exp in self.pending.items()]
        try:
            self.fw.block(entries)
        except SlipsqError as e:
            log(f"the kernel still refuses {len(entries)} block(s) ({e}); slipsq keeps dropping them itself")
            return
        log(f"{len(entries)} block(s) the kernel had refused are in the kernel now")
        self.pending.clear()

    def unblock(self, ip: str, ts: float, reason: str, who: str) -> None:
        self.pending.pop(ip, None)
        self.fw.unblock([ip])
        self.store.remove(ip, ts=ts, who=who, reason=reason)


def load_models(cfg: configmod.Config) -> list[Any]:
    """The Markov models, or [] with a warning (inline mode still runs its other detectors)."""
    from slipsq.replay import load_engine_models

    try:
        return load_engine_models(None, cfg)
    except ModelError as e:
        log(f"warning: running without Markov models: {e}")
        return []


def make_allow(cfg: configmod.Config) -> AllowList:
    return AllowList(cfg["allow.ips"], own_addresses() if cfg["allow.own_addresses"] else [])


def default_duration(cfg: configmod.Config) -> float | None:
    """A manual block's length when none is given: judge.block_duration, 0 meaning no expiry."""
    d = float(cfg["judge.block_duration"])
    return d if d > 0 else None


class Daemon:
    def __init__(self, queue: int, install_rules: bool, config_path: str | None, state_dir: str | None,
                 queue_maxlen: int | None = None, backend: str | None = None) -> None:
        self.queue_num = queue
        self.install_rules = install_rules
        self.config_path = config_path
        self.state_dir = resolve_state_dir(state_dir)
        self.maxlen = queue_maxlen or DEFAULT_MAXLEN
        self.backend = backend
        self.stop = False
        self.diversion_installed = False
        self.want_reload = False
        self.started = time.time()
        self.engine_errors = 0
        self._last_error_log = -math.inf

    # --- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        from slipsq.engine import Engine

        check_system()
        self.cfg = runmode.load_config(self.config_path)
        self.allow = make_allow(self.cfg)
        self.protected = protect.for_config(self.allow, self.cfg)  # issue 12: followed while running
        self.store = BlockStore(self.state_dir)
        self.fw = host_firewall(self.allow, self.backend)
        # the control socket first: it is also the "is another slipsq using this state dir" check
        self.control = ControlServer(self.state_dir, self.handle)
        self.sink = InlineSink(self.fw, self.store)
        self.writer = AlertWriter(sys.stdout, bool(self.cfg["output.json"]))
        self.engine = Engine(self.cfg, models=load_models(self.cfg), allow=self.allow,
                             enrichers=make_enrichers(self.cfg),
                             sinks=[self.writer, self.sink], on_error=self._engine_error)
        self.admin = Admin(self.store, self.fw, self.allow, default_duration(self.cfg), self.engine, self.sink)
        # sets, chain and jumps always (blocks need them), then the stored blocks, then the queue
        # (a busy queue fails here, before we touch a diversion that may belong to another slipsq),
        # and only then the diversion, when asked
        self.fw.install(None)
        if self.fw.cleaned:  # issue 12: a switched firewall.backend left rules in the other one
            log("removed what slipsq had left in the other iptables backend: " + "; ".join(self.fw.cleaned))
        self.restore_blocks(time.time())
        self.source = NfqueueSource(self.queue_num, self.engine.table, maxlen=self.maxlen)
        if self.install_rules:
            self.fw.install(self.queue_num)
            self.diversion_installed = True
        i = self.source.info
        log(f"inline on NFQUEUE {i.num} (maxlen {i.maxlen}, copy {i.copy_range} B, rcvbuf {i.rcvbuf} B, "
            f"fail-open {'on' if i.fail_open else 'UNSUPPORTED'}), iptables backend {self.fw.backend.name}, "
            f"state {self.state_dir}" + ("" if self.install_rules else "; diversion rules not installed "
                                        "(--install-rules)"))

    def restore_blocks(self, now: float) -> None:
        """Unexpired blocks back into the kernel (one batch) and the engine; expired ones and ones
        protected now removed (one batch too)."""
        gone = self.store.purge_expired(now)
        out = [b.ip for b in gone]
        entries = []
        for b in self.store.active(now):
            why = self.allow.why_protected(b.ip)
            if why is not None:  # the allow list changed since: protected now wins
                out.append(b.ip)
                self.store.remove(b.ip, ts=now, who="allow-list", reason=f"now protected: {why}")
                continue
            entries.append((b.ip, b.remaining(now)))
            self.engine.restore_block(b.ip, math.inf if b.expires is None else b.expires, b.times)
        if out:
            self.fw.unblock(out)
        self.fw.block(entries)
        if entries or gone:
            log(f"restored {len(entries)} blocks from the store, {len(gone)} expired ones removed")

    # --- run -----------------------------------------------------------------------------------
    def run(self) -> int:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        old_wakeup = signal.set_wakeup_fd(wfd)
        sigs = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        handlers = {s: signal.signal(s, self._on_signal) for s in sigs}
        try:
            source, table = self.source, self.engine.table
            fds = (self.control.fileno(), rfd)
            next_tick = 0.0
            while not self.stop:
                source.run(BUDGET, 0.5, fds)
                now = time.time()
                if table.pending or now >= next_tick:
                    self._advance(now)
                    next_tick = now + 0.5
                self.control.poll()
                try:
                    os.read(rfd, 512)
                except BlockingIOError:
                    pass
                if self.want_reload:
                    self.want_reload = False
                    self.reload()
            return 0
        finally:
            self.shutdown()
            for s, h in handlers.items():
                signal.signal(s, h)
            signal.set_wakeup_fd(old_wakeup)
            os.close(rfd)
            os.close(wfd)

    def _advance(self, now: float) -> None:
        """Run the engine; a bug in one detector must not take the gateway's inspection down with it
        (the packet path keeps running; the error is reported, at most once a minute). The engine
        isolates each detector, decoder and sink call (`_engine_error`); this catch is the last line
        of defence for anything else."""
        try:
            self.engine.advance(now)
        except Exception as e:  # the last line of defence of a long-running daemon
            self._engine_error("engine", e)
        self.sink.retry(now)
        if self.protected is not None:  # issue 12: addresses gained since start (never waits)
            self.protected.refresh(now)
        self.admin.sync_store(now)  # issue 12: what an admin changed while this daemon was stuck

    def _engine_error(self, where: str, e: Exception) -> None:
        self.engine_errors += 1
        now = time.time()
        if now - self._last_error_log >= 60:
            self._last_error_log = now
            log(f"engine error in {where} ({self.engine_errors} so far), continuing: {type(e).__name__}: {e}")

    def _on_signal(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGHUP:
            self.want_reload = True
        else:
            self.stop = True

    def shutdown(self) -> None:
        """Diversion out first (no new packets come), then verdict what is queued, then unbind."""
        src = getattr(self, "source", None)
        if self.diversion_installed:
            try:
                self.fw.remove_diversion(self.queue_num)
            except SlipsqError as e:
                log(f"could not remove the diversion rule: {e}")
        if src is not None:
            src.drain()
            self._advance(time.time())
            src.close()
        if hasattr(self, "control"):
            self.control.close()
        guard: protect.ProtectedAddresses | None = getattr(self, "protected", None)
        if guard is not None:
            guard.close()
        self.diversion_installed = False
        if hasattr(self, "store"):
            self.store.close()
        if src is not None:
            log("stopped; blocks stay in force until they expire (slipsq blocks / slipsq unblock IP)")

    # --- reload and control --------------------------------------------------------------------
    def reload(self) -> None:
        """New config, allow list and models; the flow table, blocks and evidence windows are kept."""
        try:
            cfg = runmode.load_config(self.config_path)
            allow = make_allow(cfg)
            models = load_models(cfg)
        except SlipsqError as e:
            log(f"reload failed, keeping the running configuration: {e}")
            return
        self.engine.reconfigure(cfg, models, allow, make_enrichers(cfg))
        if self.protected is not None:
            self.protected.allow = allow  # the next refresh installs the current map into it
        self.cfg, self.allow = cfg, allow
        self.fw.allow = self.admin.allow = allow
        self.admin.default_duration = default_duration(self.cfg)
        self.writer.as_json = bool(cfg["output.json"])
        log(f"reloaded {cfg.source}: {len(models)} models, {len(allow.networks)} allow-list entries")

    def handle(self, req: dict[str, Any], who: str) -> dict[str, Any]:
        cmd = req["cmd"]
        if cmd == "block":
            dur = req.get("duration", "default")
            seconds = parse_duration(str(dur)) if dur not in ("default", None) else "default"
            b = self.admin.block(str(req.get("ip", "")), seconds, str(req.get("reason") or "manual"), who)
            return {"ok": True, "block": b.to_dict()}
        if cmd == "unblock":
            self.admin.unblock(str(req.get("ip", "")), who, str(req.get("reason") or "unblocked by admin"))
            return {"ok": True}
        if cmd == "blocks":
            return {"ok": True, "blocks": self.admin.blocks()}
        if cmd == "reload":
            self.reload()
            return {"ok": True}
        return {"ok": True, "status": self.status()}

    def status(self) -> dict[str, Any]:
        q = self.source.stats()
        k = self.source.kernel()
        c = self.engine.counters
        pk, by = self.fw.drop_counters()
        return {
            "pid": os.getpid(), "uptime": round(time.time() - self.started, 1), "queue": self.queue_num,
            "packets": q["packets"], "accepted": q["accepted"], "dropped": q["dropped"],
            "errors": q["errors"], "engine_errors": self.engine_errors, "table": self.engine.table.stats(),
            "flows": c.flows, "alerts": c.alerts, "blocks_decided": c.blocks,
            "blocks_active": len(self.store.active(time.time())),
            "kernel": None if k is None else {"waiting": k.waiting, "queue_dropped": k.queue_dropped,
                                              "user_dropped": k.user_dropped, "maxlen": self.maxlen},
            "kernel_block_drops": {"packets": pk, "bytes": by},
            "fail_open": self.source.info.fail_open, "note": FAIL_OPEN_NOTE,
            "backend": self.fw.backend.name, "diversion": diversion_tag(self.queue_num) if self.install_rules
            else "not installed by slipsq",
        }


def run_daemon(queue: int, install_rules: bool, config_path: str | None, state_dir: str | None,
               queue_maxlen: int | None = None, backend: str | None = None) -> int:
    """`slipsq --queue N`: run until SIGTERM/SIGINT. SlipsqError (one line) when it cannot start."""
    d = Daemon(queue, install_rules, config_path, state_dir, queue_maxlen, backend)
    try:
        d.start()
    except BaseException:
        d.shutdown()  # undo what a failed start did (socket, queue); never the blocks
        raise
    return d.run()
