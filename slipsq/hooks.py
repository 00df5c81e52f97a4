"""Hooks: a command of the admin's run on each block or alert, with the decision as JSON on its
standard input (notify a phone, ring a bell: Stratosphere Linux IPS 0.2 played a sound on alerts).

    [hooks]
    on_block = "/usr/local/bin/notify-phone"     # each block decided (by the judge or an admin)
    on_alert = "/usr/bin/paplay /usr/share/sounds/bell.oga"
    timeout = "10s"                              # then the hook's whole process group is killed
    max_per_minute = 20                          # per hook; a burst of up to this many at once

A command is split like a shell would (shlex) and run without a shell. Its stdin is one JSON
object: `{"event": "alert", ...the alert's fields (records.Alert.to_dict)}` or `{"event": "block",
"ip", "ts", "duration", "expires", "reason", "by", "times", "detector", "alert": {...} or null}`;
SLIPSQ_EVENT, SLIPSQ_IP and SLIPSQ_DETECTOR are set in its environment for scripts that read no
JSON. Blocks re-applied from the store at start are no new decisions and run no hook.

What this module guarantees, and how:
* it never stalls the caller (the daemon's worker thread, which carries out blocks): a hook is
  rate-limited by a token bucket and handed to a bounded mailbox (slipsq.background) in O(1); when
  the bucket is empty or the mailbox full, the run is dropped and counted, never waited for;
* commands run one at a time in the mailbox's thread (never forked from the packet loop), each in
  a session of its own, killed with its whole process group at the timeout (what a hook leaves
  running in the background after it exited is its own business: it is not waited for);
* stdout and stderr are read and kept up to OUTPUT_KEEP bytes each (a chatty hook costs no memory);
* failures (cannot start, non-zero exit, timeout) are counted and logged, at most once a minute
  per hook, with the counts since the last line.

Replay runs no hooks: a replay analyses the past, and a week of captured traffic would ring the
bell for every alert of that week at once; replay also stays a pure function of its input.
"""

from __future__ import annotations

import json
import os
import selectors
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from slipsq.background import Mailbox
from slipsq.config import Config, Option
from slipsq.errors import ConfigError
from slipsq.records import Alert, Block, printable
from slipsq.sink import Sink

if TYPE_CHECKING:
    import subprocess

OUTPUT_KEEP = 4096  # bytes of a hook's stdout and stderr kept (for the log line and status)
LOG_EVERY = 60.0  # seconds between failure lines per hook (the first failure is logged at once)
EXIT_GRACE = 0.5  # seconds the pipes are still read after the hook exited (its last words)


def command_line(text: str) -> bool:
    """True for "" (no hook) and for a command line shlex can split."""
    try:
        shlex.split(text)
    except ValueError:
        return False
    return True


OPTIONS: tuple[Option, ...] = (
    Option("hooks.on_block", "", "inline: command run on each block, the block as JSON on stdin (split like "
           "a shell would, run without one); \"\": none", command_line, "a command line (balanced quotes)"),
    Option("hooks.on_alert", "", "inline: command run on each alert, the alert as JSON on stdin; \"\": none",
           command_line, "a command line (balanced quotes)"),
    Option("hooks.timeout", 10.0, "a hook still running after this many seconds is killed with its process "
           "group", lambda v: 0 < v <= 3600, "> 0 and at most 1h", duration=True),
    Option("hooks.max_per_minute", 20, "runs per minute per hook at most (a burst of this many at once); "
           "more are dropped and counted", lambda v: 0 < v <= 10_000, "between 1 and 10000"),
    Option("hooks.queue", 32, "hook runs waiting at most; more are dropped and counted", lambda v: 0 < v <= 10_000,
           "between 1 and 10000"),
)


class TokenBucket:
    """`rate` tokens a second up to `capacity`; take() is O(1) and never waits."""

    def __init__(self, capacity: float, rate: float, now: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens = capacity
        self.stamp = now

    def take(self, now: float) -> bool:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass
class Outcome:
    returncode: int | None  # None: it did not exit by itself (killed at the timeout) or never started
    timed_out: bool = False
    error: str = ""  # why it could not start
    stdout: bytes = b""
    stderr: bytes = b""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def run_command(argv: list[str], data: bytes, timeout: float, env: Mapping[str, str] | None = None,
                keep: int = OUTPUT_KEEP) -> Outcome:
    """Run argv with `data` on stdin, in a new session; kill its process group at `timeout`. At most
    `keep` bytes of stdout and of stderr are kept; the rest is read and thrown away."""
    import subprocess  # here, not at import: every command's start-up reads OPTIONS, few run a hook

    started = time.monotonic()
    deadline = started + timeout
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, close_fds=True, cwd="/", env=env)
    except (OSError, ValueError) as e:
        return Outcome(None, error=str(e))
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
    out = {out_fd: bytearray(), err_fd: bytearray()}
    pending = memoryview(data)
    timed_out = False
    with selectors.DefaultSelector() as sel:
        for fh in (proc.stdout, proc.stderr):
            os.set_blocking(fh.fileno(), False)
            sel.register(fh.fileno(), selectors.EVENT_READ)
        if pending:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        exited_at = 0.0
        while sel.get_map():  # until both outputs are at EOF (stdin is written or given up on)
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            # it exited but something it started in the background holds its pipes: that is no
            # reason to wait (or to kill); we stop listening shortly after its exit
            if exited_at == 0.0 and proc.poll() is not None:
                exited_at = now
            if exited_at and now - exited_at > EXIT_GRACE:
                break
            for key, _ in sel.select(min(deadline - now, 0.25)):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]):]
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:  # it exited or closed its stdin unread: its choice
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                buf = out[fd]
                if len(buf) < keep:
                    buf += chunk[:keep - len(buf)]
    if not timed_out:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            timed_out = True
    if timed_out:
        _kill_group(proc)
    for fh in (proc.stdin, proc.stdout, proc.stderr):
        if not fh.closed:
            fh.close()
    return Outcome(None if timed_out else proc.returncode, timed_out, "", bytes(out[out_fd]), bytes(out[err_fd]),
                   round(time.monotonic() - started, 3))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    import subprocess

    try:
        os.killpg(proc.pid, signal.SIGKILL)  # its session is its own (start_new_session): the group is it
    except ProcessLookupError:
        pass
    try:
        proc.wait(5.0)
    except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): leave it, never wait forever
        pass


@dataclass
class HookStats:
    runs: int = 0
    ok: int = 0
    failed: int = 0
    timed_out: int = 0
    rate_limited: int = 0
    last_error: str = ""
    last_log: float = field(default=-1e18, repr=False)
    unlogged: int = field(default=0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "ok": self.ok, "failed": self.failed, "timed_out": self.timed_out,
                "rate_limited": self.rate_limited, "last_error": self.last_error}


@dataclass(frozen=True)
class Job:
    event: str  # "alert" or "block"
    payload: bytes
    ip: str
    detector: str


def block_payload(block: Block) -> dict[str, Any]:
    """What on_block reads on stdin."""
    return {"event": "block", "ip": block.ip, "ts": block.ts, "duration": block.duration, "expires": block.expires,
            "reason": block.reason, "by": block.by, "times": block.times, "detector": block.detector,
            "alert": block.alert.to_dict() if block.alert is not None else None}


class Hooks(Sink):
    """The hooks of one daemon: a sink the worker's Fanout calls; see the module docstring."""

    def __init__(self, commands: Mapping[str, list[str]], timeout: float, max_per_minute: int, queue: int,
                 log: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> None:
        self.commands = {event: argv for event, argv in commands.items() if argv}
        self.timeout, self.log, self.clock = timeout, log, clock
        now = clock()
        self.buckets = {event: TokenBucket(max_per_minute, max_per_minute / 60.0, now) for event in self.commands}
        self.stats = {event: HookStats() for event in self.commands}
        self.mailbox: Mailbox[Job] = Mailbox("slipsq-hooks", self._run, queue, on_error=self._crashed)
        self.mailbox.start()

    def alert(self, alert: Alert) -> None:
        if "alert" in self.commands:
            ev = alert.evidence
            self._fire("alert", lambda: {"event": "alert", **alert.to_dict()}, ev.offender, ev.detector)

    def block(self, block: Block) -> None:
        if "block" in self.commands and block.by != "store":
            self._fire("block", lambda: block_payload(block), block.ip, block.detector)

    def _fire(self, event: str, payload: Callable[[], dict[str, Any]], ip: str, detector: str) -> None:
        """O(1) and never waits: the bucket first (a flood costs one comparison per alert, no JSON),
        then the mailbox (which counts what it drops)."""
        if not self.buckets[event].take(self.clock()):
            self.stats[event].rate_limited += 1
            return
        if self.mailbox.full():  # counted as the mailbox counts; the JSON is not even built
            self.mailbox.dropped += 1
            return
        self.mailbox.offer(Job(event, json.dumps(payload(), separators=(",", ":")).encode() + b"\n", ip, detector))

    def _run(self, job: Job) -> None:
        st = self.stats[job.event]
        st.runs += 1
        env = {**os.environ, "SLIPSQ_EVENT": job.event, "SLIPSQ_IP": job.ip, "SLIPSQ_DETECTOR": job.detector}
        res = run_command(self.commands[job.event], job.payload, self.timeout, env)
        if res.ok:
            st.ok += 1
            return
        st.failed += 1
        if res.timed_out:
            st.timed_out += 1
            why = f"still running after {self.timeout:g} s: killed"
        elif res.error:
            why = f"could not start: {res.error}"
        else:
            tail = res.stderr.decode("utf-8", "replace").strip().splitlines()
            # escaped: it may quote a description (DNS names of any bytes) into our log and `status`
            why = f"exit status {res.returncode}" + (f": {printable(tail[-1][:200])}" if tail else "")
        st.last_error = why
        st.unlogged += 1
        now = self.clock()
        if now - st.last_log >= LOG_EVERY:
            more = f" ({st.unlogged} failures since the last report, {st.failed} in all)" if st.failed > 1 else ""
            self.log(f"hook on_{job.event} failed: {why}{more}")
            st.last_log, st.unlogged = now, 0

    def _crashed(self, e: Exception) -> None:
        self.log(f"hook runner error: {e!r}")

    def counters(self) -> dict[str, Any]:
        """For `slipsq status`: per hook, and what the mailbox dropped (it was full)."""
        return {**{f"on_{event}": st.to_dict() for event, st in self.stats.items()},
                "dropped_queue_full": self.mailbox.dropped, "waiting": self.mailbox.pending()}

    def close(self) -> None:
        """Let queued hooks run for up to one timeout more, then leave them (daemon threads)."""
        self.mailbox.stop(self.timeout + 1.0)


def from_config(cfg: Config, log: Callable[[str], None]) -> Hooks | None:
    """The daemon's hooks, or None when none is configured. ConfigError naming the key when a
    command's program is not an executable file (checked at start, not by `replay`, which runs none)."""
    commands: dict[str, list[str]] = {}
    for event in ("block", "alert"):
        key = f"hooks.on_{event}"
        argv = shlex.split(cfg[key])
        if not argv:
            continue
        program = shutil.which(argv[0]) if os.sep not in argv[0] else argv[0]
        if program is None or not os.path.isfile(program) or not os.access(program, os.X_OK):
            raise ConfigError(f"configuration key '{key}': {argv[0]!r} is not an executable file")
        commands[event] = [program, *argv[1:]]
    if not commands:
        return None
    return Hooks(commands, float(cfg["hooks.timeout"]), int(cfg["hooks.max_per_minute"]), int(cfg["hooks.queue"]),
                 log)
