"""Replay one capture on two cores, with the output of one process, byte for byte.

`slipsq replay` of a capture spends its time in two places: the compiled reader and flow table (a
third to a half of it) and the engine's analysis of what the table hands up (closed flows through
the detectors, app packets, the judge). Here the first runs in a child process, the *table
process*, forked once the engine is built, and the second in this one, the *engine process*:

    table process:   PcapFile.feed ─► FlowTable (record mode) ─► messages ─┐ pipe
    engine process:  RecordedTable ◄──────────────────────────────────────┘ ─► detectors ─► judge ─► sinks

**Messages.** The table process runs the engine's own time logic (Engine._advance and _second
without the detectors) and sends a *message* each time the engine would have had something to do:
"a" (advance: what the table handed up after a packet, at time `now`), "x" (the table's expiry pass
of a new second), "z" (the capture's end, with what was read), "f" (the end of input: every open
flow, and the table's counters). Messages are numbered from 1. A message carries its app packets and
its closed flows as the table's C records (`_flowtable.FlowRecord`: no Python object a flow on that
side, `flows_of_records` makes the Flows here). The engine process hands each message to the engine
through `RecordedTable`, which the engine cannot tell from its FlowTable. There is about one message
per closed flow, so neither side runs a Python frame for a plain one: the table process's loop makes
them in C (`sources/_pcap.feed_plain`) and the engine takes runs of them in C
(`Engine.steps`, `_dispatch.run_steps`); each returns to the Python loops here at a tick, a full
frame, a command, a snapshot: wherever those have more to do.

**Blocks, exactly.** In one process a block reaches the table at once: the blocked address's next
packets are dropped, so what the table emits after a block depends on it. The table process runs
ahead, not knowing the blocks the engine has yet to decide, so its messages are a speculation. Every
block and unblock is therefore told back with the number of the message the engine was analysing
(`RecordedTable.step_done`), and the engine reads no further message until the table process has
answered ("r"). If no packet fed since that message had the command's address (the table logs the
addresses of its last 65,536 IP packets: `FlowTable.touched_since`), no packet would have been
dropped or passed otherwise: the table takes the command where it is, and what it sent stands.
Otherwise it rolls back: it keeps *snapshots*, children forked at message boundaries and asleep on a
pipe (a fork is a copy-on-write checkpoint of the whole table for about a millisecond); the newest
snapshot at or before the command's message wakes, takes the commands it was forked without, re-runs
the packets since its fork without sending what the engine has already analysed, and goes on; the
process that was ahead exits, and the engine drops what it read from it after the command. A
rollback costs the re-run from the newest snapshot, at most SNAPSHOT_EVERY packets; a command the
table takes where it is, one round trip (~0.2 ms measured: a capture with 999 blocks replays in 1.4 s
against 0.9 s in one process; a capture with none or a few, 1.5-2x faster).

**Wire.** Frames on the data pipe (table -> engine) are a 4-byte little-endian length and a marshal
payload: ("m", new snapshot message numbers, [message or run, ...]); ("r", keep[, pid]) the marker
after a command (with the pid of the snapshot that rolled back and goes on); ("e", traceback) the
table process failed (a bug); ("i", error class, message) its input failed it (the capture changed
while read): that error, one message. A message is (number, kind, now, app packets, records,
extra); a *run* is a stretch of consecutive plain "a" messages packed in one bytes, which the
engine process reads in place (dispatch.pack_messages and dispatch.Run: a 24-byte head a message,
then its app packets and its records). There are about as many messages as app packets (20,011
messages and 19,465 app packets on the 300k-packet slice of bench/replay.py's 200k-flow capture),
and as tuples each was seven to ten objects to unmarshal and free: runs took the engine process
from 600 M to 563 M instructions there (bench/flowcost.py --processes). On the control pipe
(engine -> table): ("cmds", analysed, [(message number, "block"|"unblock", ip), ...]) every command
so far, ("ack", n) the engine is past snapshot n (older ones can go), ("done",). marshal, not
pickle or slipsq.mqwire: both ends are forks of one process (one build, one trust domain, the
records are this build's C structs), and marshal's C code reads a message's tuples and bytes in
about a third of pickle's time; the queue workers' wire is hardened for a different case.

**Why the detectors stay in the engine process** (bench/README.md, round of 2026-12-08): moving
some to the table process (their evidence sent with the message) was measured before it was built,
and lost. Both sides would then make the Flows, decode the app packets and learn the DNS names
(every detector reads ctx.dns_names), and the snapshots, cheap while this process's heap is a flow
table, copy the detectors' pages after every fork: the table process took 2-3.5 s more CPU on the
200k-flow capture to save the engine process ~1 s.

**Failing open is not an option here; failing loudly is.** A table process that dies (killed, out
of memory) ends the replay with PipelineError; a bug raises in the table process and its traceback
travels back. When this process dies, the table process sees its pipes close and exits. `slipsq
replay --processes 1` (or a capture among several inputs, or the readable twins) runs everything in
one process, as before.
"""

from __future__ import annotations

import marshal
import os
import select
import signal
import struct
import time
import traceback
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from ipaddress import ip_address
from typing import Any

from slipsq import twins
from slipsq.dispatch import make_run, packer, take_first
from slipsq.errors import InputError, SlipsqError
from slipsq.flow import Flow
from slipsq.sources.pcap import BATCH, PROGRESS_EVERY, Progress

SNAPSHOT_EVERY = 262_144   # packets between snapshots: a rollback re-runs at most this many
FLUSH_MESSAGES = 128       # the table process writes a frame after this many messages ...
FLUSH_BYTES = 32 * 1024    # ... or this many bytes of records and app packets, whichever first
                           # (small frames in the default 64 kB pipe: the table process stays a few
                           # frames ahead, and answers a command after at most a frame's worth)
_NEVER = 1 << 62           # Engine.steps' last message when no snapshot is ahead: none
_LEN = struct.Struct("<I")


class PipelineError(SlipsqError):
    """The table process failed or left the protocol (a bug, or the process was killed)."""


CPU_MAX = "/sys/fs/cgroup/cpu.max"  # cgroup v2: "<quota> <period>" or "max <period>"


def default_processes() -> int:
    """2 when this process may run on two CPUs or more, else 1: the CPUs it may be scheduled on,
    and a container's CPU quota (`docker run --cpus 1` leaves every CPU in the affinity mask, but
    two processes would share one CPU's time and take longer than one: they do ~25 % more work)."""
    try:
        cpus = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        cpus = float(os.cpu_count() or 1)
    try:
        with open(CPU_MAX) as f:
            quota, period = f.read().split()[:2]
        if quota != "max" and float(period) > 0:
            cpus = min(cpus, float(quota) / float(period))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit here, or not one this reads
    return 2 if cpus >= 2 else 1


# --- framing (both processes) --------------------------------------------------------------------

def frame(obj: Any) -> bytes:
    payload = marshal.dumps(obj)
    return _LEN.pack(len(payload)) + payload


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_frame(f: Any) -> Any:
    """The next frame's object from the buffered file `f`; None at the end of the stream."""
    head = f.read(_LEN.size)
    if not head:
        return None
    if len(head) < _LEN.size:
        raise PipelineError("the table process's stream ends inside a frame")
    (n,) = _LEN.unpack(head)
    body = f.read(n)
    if len(body) < n:
        raise PipelineError("the table process's stream ends inside a frame")
    return marshal.loads(body)


def _failure(item: tuple[Any, ...]) -> SlipsqError:
    """The error a failure frame from the table process stands for: ("e", traceback) a bug in it,
    ("i", class name, message) a slipsq error of its own (an input that changed as it was read),
    raised here as that error with its one message."""
    if item[0] == "i":
        cls = {c.__name__: c for c in (InputError, PipelineError)}.get(item[1], SlipsqError)
        return cls(item[2])
    return PipelineError(f"the table process failed:\n{item[1]}")


def commands_by_message(cmds: list[tuple[int, str, str]]) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = {}
    for n, op, ip in cmds:
        out.setdefault(n, []).append((op, ip))
    return out


# --- the table process ---------------------------------------------------------------------------

@dataclass
class _Snapshot:
    seq: int     # the message it was forked after (its commands applied)
    pid: int
    wake: int    # write end of the pipe it sleeps on


def make_message(proc: Any, table: Any, kind: str, extra: Any) -> int:
    """Message proc.seq + 1 of the table process `proc` (a TableProcess, or any object with its
    numbers): what `table` has for the engine taken, the table's packet count at it kept, and the
    message queued unless the engine has analysed it already. Returns its number. The first half
    of TableProcess._ship, shared with feed_plain's readable twin."""
    proc.seq += 1
    seq: int = proc.seq
    apps, recs = table.pop_app(), table.pop_records()
    proc.seen_at.append(table.seen_count)
    if seq > proc.quiet_until:
        proc.out.append((seq, kind, proc.now, apps, recs, extra))
        proc.out_bytes += len(recs) + 64 * len(apps)
    return seq


class TableProcess:
    """The reader and the flow table, in the forked child: Engine._advance/_second/finish's table
    calls in the same order, each hand-up sent as a numbered message (module docstring)."""

    def __init__(self, table: Any, pcap: Any, out_fd: int, ctl_fd: int, now: float, next_tick: float,
                 snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self.table, self.pcap = table, pcap
        self.out_fd, self.ctl_fd = out_fd, ctl_fd
        self.now, self.next_tick = now, next_tick
        self.snapshot_every = snapshot_every
        self.seq = 0                 # the last message made
        self.quiet_until = 0         # messages up to this one were analysed already: not sent
        self.cmds: dict[int, list[tuple[str, str]]] = {}
        self.seen_at = array("Q", [table.seen_count])  # [n]: the table's IP packet count at message n
        self.out: list[tuple[Any, ...]] = []
        self.out_bytes = 0
        self.new_snapshots: list[int] = []
        self.snapshots: list[_Snapshot] = []
        self.snap_due = 0            # the packet count at which the next snapshot is due
        self.ctl_buf = b""
        self.fork_failed = ""        # why the last snapshot could not be made, if one could not
        self.pack = packer()         # messages for the wire: plain advances in runs (dispatch.Run)
        os.set_blocking(ctl_fd, False)
        os.set_blocking(out_fd, False)  # _write: a full data pipe must not stop us reading the engine

    def run(self) -> None:
        pcap, table = self.pcap, self.table
        self._snapshot()  # message 0: before the first packet
        # the one-process loop `while pcap.feed(...): advance(pcap.last_ts)`, its plain steps made by
        # feed_plain (compiled: no Python frame a message, ~250k messages on a capture of 200k flows)
        feeds = _feed_plain()
        while step := feeds(self, pcap, table, BATCH, FLUSH_MESSAGES, FLUSH_BYTES):
            if step == ADVANCE:
                self.advance(pcap.last_ts)
            else:
                self._shipped(self.seq)
        if pcap.packets:
            self.advance(pcap.last_ts)
        self._ship("z", {"format": pcap.format, "linktypes": pcap.linktypes, "packets": pcap.packets,
                         "truncated": pcap.truncated, "corrupt": pcap.corrupt, "first_ts": pcap.first_ts,
                         "last_ts": pcap.last_ts})
        table.close_all(self.now)
        self._ship("f", table.stats())
        self._send()
        while True:  # the engine may still decide a block at a message we fed packets past
            self._poll()  # first what _write read while the pipe was full
            select.select([self.ctl_fd], [], [])

    def advance(self, now: float) -> None:
        """Engine._advance's table calls: a message when the engine would analyse or tick."""
        if now > self.now:
            self.now = now
        second = self.now >= self.next_tick
        if second or self.table.pending:
            self._ship("a", self.pcap.offset)
        if second:  # Engine._second
            self.next_tick = int(self.now) + 1.0
            self.table.expire(self.now)
            self._ship("x", None)

    def _ship(self, kind: str, extra: Any) -> None:
        self._shipped(make_message(self, self.table, kind, extra))

    def _shipped(self, seq: int) -> None:
        """What follows message `seq` once made: a frame sent when full, the commands at it applied,
        a snapshot forked when one is due (feed_plain leaves these to us)."""
        if seq > self.quiet_until and (len(self.out) >= FLUSH_MESSAGES or self.out_bytes >= FLUSH_BYTES):
            self._send()
            # what the engine said (it waits for our answer to a command), once a frame: read
            # once a message, the empty pipe's BlockingIOError (an OSError made with its text
            # decoded from the locale) was a third of this process's Python time on a capture
            # of many flows, and the pipeline took more CPU than one process
            self._poll()
        for op, ip in self.cmds.get(seq, ()):
            self._apply(op, ip)
        if seq >= self.quiet_until and self.pcap.packets >= self.snap_due:
            self._snapshot()

    def _apply(self, op: str, ip: str) -> None:
        (self.table.block if op == "block" else self.table.unblock)(ip)

    def _send(self) -> None:
        if self.out or self.new_snapshots:
            self._write(frame(("m", self.new_snapshots, self.pack(self.out))))
            self.out, self.out_bytes, self.new_snapshots = [], 0, []

    def _write(self, data: bytes) -> None:
        """`data` down the data pipe. While the pipe is full, what the engine says is read into
        ctl_buf (and acted on later, by _poll): the engine may be writing a command frame larger
        than its pipe, and would wait for us as we wait for it."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.out_fd, view):]
                continue
            except BlockingIOError:
                pass
            readable, _, _ = select.select([self.ctl_fd], [self.out_fd], [])
            if readable:
                self._read_ctl()

    # --- the control pipe ------------------------------------------------------------------------
    def _read_ctl(self) -> None:
        """What the engine has said so far, into ctl_buf. (The control pipe stays non-blocking: its
        flag is shared with every snapshot, which may read it later.)"""
        try:
            data = os.read(self.ctl_fd, 65536)
        except BlockingIOError:
            return
        if not data:  # the engine process is gone
            self._exit(0)
        self.ctl_buf += data

    def _poll(self) -> None:
        """Read and act on what the engine said; nothing waiting: return at once."""
        self._read_ctl()
        while len(self.ctl_buf) >= _LEN.size:
            (n,) = _LEN.unpack_from(self.ctl_buf)
            if len(self.ctl_buf) < _LEN.size + n:
                break
            msg = marshal.loads(self.ctl_buf[_LEN.size:_LEN.size + n])
            self.ctl_buf = self.ctl_buf[_LEN.size + n:]
            self._control(msg)

    def _control(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "ack":  # the engine is past snapshot msg[1]: keep only the newest at or before it
            older = [s for s in self.snapshots if s.seq <= msg[1]]
            for s in older[:-1]:
                self._drop(s)
        elif msg[0] == "done":
            self._exit(0)
        elif msg[0] == "cmds":
            self._commands(msg[1], msg[2])
        else:
            raise PipelineError(f"unknown control message {msg[0]!r}")

    def _commands(self, analysed: int, told: list[tuple[int, str, str]]) -> None:
        """The engine decided `told` (blocks and unblocks, each with its message, in order: every
        earlier command has an earlier or the same message) while analysing up to message
        `analysed`: apply them now, or roll back to where they apply."""
        for n, op, ip in told:
            self.cmds.setdefault(n, []).append((op, ip))
        first = told[0][0]  # (in message order)
        if not self.table.touched_since(self.seen_at[first], {ip for _, _, ip in told}):
            # no packet since message `first` had one of these addresses, so none would have been
            # dropped (or passed) otherwise: what was sent stands, and the table takes them now
            for _, op, ip in told:
                self._apply(op, ip)
            self._write(frame(("r", True)))
            return
        back = [s for s in self.snapshots if s.seq <= first]
        if not back:
            if self.fork_failed:
                raise PipelineError(f"the table process has no snapshot to roll a block back to: a fork "
                                    f"failed ({self.fork_failed}); replay with --processes 1")
            raise PipelineError(f"no snapshot at or before message {first} (snapshots: "
                                f"{[s.seq for s in self.snapshots]})")
        chosen = back[-1]
        self._write(frame(("r", False, chosen.pid)))  # the engine drops what it holds from us
        every = [(n, op, ip) for n in sorted(self.cmds) for op, ip in self.cmds[n]]
        _write_all(chosen.wake, marshal.dumps((analysed, every)))
        os.close(chosen.wake)
        self.snapshots.remove(chosen)
        for s in list(self.snapshots):
            self._drop(s)
        os._exit(0)  # the snapshot goes on in our place

    # --- snapshots -------------------------------------------------------------------------------
    def _snapshot(self) -> None:
        """Fork a snapshot here, the next one due snapshot_every packets on. When the fork fails (out
        of processes or memory) the older ones serve (a rollback re-runs more; _commands stops with
        one message when none is left), and the next try is as far on."""
        self._send()  # the child must not carry messages this process still owes
        self.snap_due = self.pcap.packets + self.snapshot_every
        fds: tuple[int, ...] = ()
        try:
            fds = r, w = os.pipe()
            pid = os.fork()
        except OSError as e:
            for fd in fds:
                os.close(fd)
            self.fork_failed = e.strerror or str(e)
            return
        if pid:
            os.close(r)
            self.snapshots.append(_Snapshot(self.seq, pid, w))
            self.new_snapshots.append(self.seq)
            return
        # the snapshot: asleep until woken with the commands, or until its pipe closes
        os.close(w)
        for s in self.snapshots:
            os.close(s.wake)
        self.snapshots = []
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        os.close(r)
        if not data:
            os._exit(0)
        analysed, cmd_list = marshal.loads(data)
        self.quiet_until = analysed
        known, self.cmds = self.cmds, commands_by_message(cmd_list)
        # commands at our message or before that we were forked without: told after our fork, and
        # taken by the process that forked us where it was then, because no packet since their
        # message had their addresses (TableProcess._commands). Taken here likewise, in order.
        for n in sorted(self.cmds):
            if n <= self.seq:
                for op, ip in self.cmds[n][len(known.get(n, ())):]:
                    self._apply(op, ip)
        self.snap_due = 0  # its own first snapshot, once past what the engine has analysed
        self.ctl_buf = b""

    def _drop(self, s: _Snapshot) -> None:
        os.close(s.wake)  # it wakes to an empty message and exits
        self.snapshots.remove(s)
        try:
            os.waitpid(s.pid, 0)
        except ChildProcessError:
            pass

    def _exit(self, code: int) -> None:
        for s in list(self.snapshots):
            self._drop(s)
        os._exit(code)


ADVANCE, SHIPPED = 1, 2  # feed_plain's answers besides 0 (the capture's end)


def feed_plain(proc: TableProcess, pcap: Any, table: Any, batch: int, flush_messages: int, flush_bytes: int) -> int:
    """TableProcess.run's loop, `while pcap.feed(table, batch): proc.advance(pcap.last_ts)`, for as
    long as each advance is a plain one: no tick due, and at most an "a" message made that needs
    nothing more (proc._shipped: no full frame to send, no command at it, no snapshot due).
    Returns 0 at the end of the capture; ADVANCE when the last feed needs proc.advance(pcap.last_ts)
    (a tick is due), nothing of it done yet; SHIPPED when it made message proc.seq and
    proc._shipped(proc.seq) is to follow. The readable twin of sources/_pcap.feed_plain."""
    while pcap.feed(table, batch):
        if pcap.last_ts > proc.now:
            proc.now = pcap.last_ts
        if proc.now >= proc.next_tick:
            return ADVANCE
        if not table.pending:
            continue
        seq = make_message(proc, table, "a", pcap.offset)  # proc._ship("a", pcap.offset) up to _shipped
        if seq > proc.quiet_until and (len(proc.out) >= flush_messages or proc.out_bytes >= flush_bytes):
            return SHIPPED
        if seq in proc.cmds or (seq >= proc.quiet_until and pcap.packets >= proc.snap_due):
            return SHIPPED
    return 0


def _feed_plain() -> Callable[..., int]:
    """sources/_pcap.feed_plain, or its twin above when the readable twins were asked for."""
    fast = twins.compiled("slipsq.sources._pcap")
    return feed_plain if fast is None else fast.feed_plain  # type: ignore[no-any-return]


def _table_main(table: Any, pcap: Any, out_fd: int, ctl_fd: int, now: float, next_tick: float,
                snapshot_every: int) -> None:
    """The forked child: run the table process; any exception goes back to the engine as text.
    Never returns: os._exit (no atexit handler, no flush of the parent's buffered files)."""
    proc = TableProcess(table, pcap, out_fd, ctl_fd, now, next_tick, snapshot_every)
    code = 0
    try:
        proc.run()
    except BrokenPipeError:
        code = 0  # the engine process went away first
    except SlipsqError as e:  # an input's fault (the capture changed while read): its one message
        code = 1
        try:
            proc._write(frame(("i", type(e).__name__, e.message)))
        except OSError:
            pass
    except BaseException:
        code = 1
        try:
            proc._write(frame(("e", traceback.format_exc())))
        except OSError:
            pass
    proc._exit(code)  # with our snapshots woken to exit and reaped


# --- the engine process --------------------------------------------------------------------------

class RecordedTable:
    """The engine's flow table in the engine process: it hands the engine what the table process's
    table handed up, message by message, and tells that process every block and unblock with the
    message it was decided at. The engine cannot tell it from a FlowTable: pending, pop_app,
    pop_closed, expire and close_all (each takes its message), block, unblock, is_blocked, stats."""

    def __init__(self, stream: Any, ctl_fd: int, pid: int, flows_of_records: Callable[[bytes], list[Flow]]) -> None:
        self.stream, self.ctl_fd, self.pid = stream, ctl_fd, pid
        self.pids = [pid]                             # table processes not reaped: the first, then
                                                      # each rollback's snapshot (see _reap)
        self._flows_of = flows_of_records
        self.msgs: deque[Any] = deque()            # message tuples and runs (dispatch.Run)
        self.seq = 0                                  # the message being analysed
        self.app: list[tuple[float, bytes]] = []
        self.recs = b""
        self.blocked: set[bytes] = set()              # packed, as FlowTable keeps them
        self.cmds: list[tuple[int, str, str]] = []    # every command, with its message
        self.told = 0                                 # commands the table process has been told
        self.snapshots: deque[int] = deque()          # snapshots the engine has not passed yet
        self.awaiting = False                         # a marker is due before the next message
        self.final: dict[str, int] = {}
        self.finished = False
        self.rollbacks = 0                            # commands the table process re-ran for
        self.kept = 0                                 # commands it applied at once

    # --- the FlowTable interface -----------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self.recs) or bool(self.app)

    def pop_closed(self) -> list[Flow]:
        recs, self.recs = self.recs, b""
        return self._flows_of(recs) if recs else []

    def pop_app(self) -> list[tuple[float, bytes]]:
        out, self.app = self.app, []
        return out

    def expire(self, now: float) -> None:
        self._take("x")

    def close_all(self, now: float) -> None:
        try:
            self.final = self._take("f")[5]
        finally:
            self.close()

    def block(self, ip: str) -> None:
        packed = ip_address(ip).packed  # as the tables key it (and the same ValueError)
        if packed not in self.blocked:
            self.blocked.add(packed)
            self.cmds.append((self.seq, "block", ip))

    def unblock(self, ip: str) -> None:
        packed = ip_address(ip).packed
        if packed in self.blocked:
            self.blocked.discard(packed)
            self.cmds.append((self.seq, "unblock", ip))

    def is_blocked(self, ip: str) -> bool:
        return ip_address(ip).packed in self.blocked

    def set_app_kinds(self, kinds: frozenset[str]) -> None:
        raise PipelineError("the table process's app kinds are fixed when it starts")

    def stats(self) -> dict[str, int]:
        return dict(self.final)

    def memory(self) -> int:
        return 0

    # --- messages --------------------------------------------------------------------------------
    def next_message(self) -> tuple[Any, ...]:
        """The next message (now the one being analysed)."""
        while not self.msgs or self.awaiting:
            self._read()
        msg = take_first(self.msgs)
        if msg[0] != self.seq + 1:
            raise PipelineError(f"message {msg[0]} came after {self.seq}")
        self.seq = msg[0]
        return msg

    def _take(self, kind: str) -> tuple[Any, ...]:
        """The next message, which must be of `kind`, loaded: its app packets and flows pending."""
        msg = self.next_message()
        if msg[1] != kind:
            raise PipelineError(f"message {msg[0]} is {msg[1]!r} where the engine expects {kind!r}")
        self.load(msg)
        return msg

    def load(self, msg: tuple[Any, ...]) -> None:
        """Make the message's app packets and flows pending (for Engine.advance)."""
        self.app, self.recs = msg[3], msg[4]

    def _read(self) -> None:
        try:
            item = _read_frame(self.stream)
        except PipelineError:  # cut inside a frame: it was killed while writing
            raise self._gone() from None
        if item is None:
            raise self._gone()
        kind = item[0]
        if kind == "m":
            self.snapshots.extend(item[1])
            self.msgs.extend(m if type(m) is tuple else make_run(m) for m in item[2])
        elif kind == "r":  # the answer to our commands: keep what we hold, or drop it (a rollback)
            if not self.awaiting:
                raise PipelineError("a rollback marker nobody asked for")
            self.awaiting = False
            if item[1]:
                self.kept += 1
            else:
                self.rollbacks += 1
                self.msgs.clear()
                self.snapshots.clear()
                self.pid = item[2]
                self.pids.append(item[2])
                self._reap(os.WNOHANG)
        elif kind in ("e", "i"):
            raise _failure(item)
        else:
            raise PipelineError(f"unknown frame {kind!r} from the table process")

    def step_done(self) -> None:
        """The engine has analysed every message it took so far: tell the table process the commands
        decided since, and which snapshots it is past."""
        if len(self.cmds) > self.told:
            self._say(("cmds", self.seq, self.cmds[self.told:]))
            self.told = len(self.cmds)
            self.awaiting = True
            return
        passed = None
        while self.snapshots and self.snapshots[0] <= self.seq:
            passed = self.snapshots.popleft()
        if passed is not None:
            self._say(("ack", passed))

    def _say(self, msg: tuple[Any, ...]) -> None:
        try:
            _write_all(self.ctl_fd, frame(msg))
        except BrokenPipeError:  # it is gone: say why, if its stream tells
            raise self._gone() from None

    def _gone(self) -> SlipsqError:
        """The error for a table process that stopped reading us: its own (an "e" frame it sent
        before it ended), or that it ended (killed: nothing more on its stream)."""
        try:
            while (item := _read_frame(self.stream)) is not None:
                if item[0] in ("e", "i"):
                    return _failure(item)
        except (OSError, ValueError, EOFError, PipelineError):
            pass
        return PipelineError("the table process ended before the end of the capture (killed, or out of memory?)")

    def close(self) -> None:
        """Let the table process go (it exits) and reap it."""
        if self.finished:
            return
        self.finished = True
        try:
            os.set_blocking(self.ctl_fd, False)  # never wait here: closing the pipes ends it as well
            _write_all(self.ctl_fd, frame(("done",)))
        except OSError:
            pass
        os.close(self.ctl_fd)
        self.stream.close()
        self._reap(0)

    def _reap(self, flags: int) -> None:
        """Reap the table processes that are this process's children and have ended (with flags 0:
        wait for them, oldest first). The first is our child; a snapshot that rolled back is an orphan
        once the process that forked it exits, reaped by init, or by this process when orphans come
        here (a subreaper, or PID 1 of a container): then each rollback would leave a zombie here
        without this. Such a snapshot stays listed until reaped, even while its parent still runs
        (slow to exit on a busy machine, after the next rollback)."""
        left = []
        for pid in self.pids:  # oldest first: once one has ended, the next is an orphan (ours or init's)
            try:
                done, _ = os.waitpid(pid, flags)
            except ChildProcessError:  # init's, or (its parent still runs) not ours yet
                if flags and (pid == self.pid or _orphans_come_here()):
                    left.append(pid)
                continue
            if done == 0:
                left.append(pid)
        self.pids = left


@cache
def _orphans_come_here() -> bool:
    """Whether this process inherits its descendants' orphans: PID 1 of its namespace, or a child
    subreaper (prctl PR_GET_CHILD_SUBREAPER); False where it cannot tell (not Linux). Asked once, when
    a rollback's snapshot is first reaped, not when a replay starts: it loads ctypes (~7 ms), for a
    question most replays never ask."""
    if os.getpid() == 1:
        return True
    try:
        import ctypes

        flag = ctypes.c_int(0)
        if ctypes.CDLL(None, use_errno=True).prctl(37, ctypes.byref(flag), 0, 0, 0) != 0:
            return False
        return flag.value != 0
    except (OSError, AttributeError):
        return False


def replay_capture(run: Any, pcap: Any, progress: Progress | None = None,
                   snapshot_every: int = SNAPSHOT_EVERY, check: Callable[[dict[str, Any]], None] | None = None
                   ) -> dict[str, Any]:
    """Replay the opened capture `pcap` (a PcapFile) through `run` (runmode.Offline) with a table
    process; the same result as sources.pcap.replay_capture's loop. `check(info)` judges what was
    read (its exception ends the table process too). The caller calls run.finish() after (its
    close_all takes the last message and lets the table process go)."""
    from slipsq import _flowtable  # type: ignore[attr-defined]

    engine = run.engine
    table = engine.table
    table.set_records(True)
    data_r, data_w = os.pipe()
    ctl_r, ctl_w = os.pipe()
    # Ctrl-C (SIGINT to the whole foreground group) is the engine's: the table process ignores it and
    # ends when the engine does. Blocked across the fork, so that none lands in the child before it
    # ignores it, nor in this process before the try below can stop the child.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        pid = os.fork()
    except BaseException as e:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for fd in (data_r, data_w, ctl_r, ctl_w):
            os.close(fd)
        if isinstance(e, OSError):
            raise PipelineError(f"cannot start the table process ({e.strerror or e}): "
                                "replay with --processes 1") from None
        raise
    if pid == 0:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(data_r)
            os.close(ctl_w)
            _table_main(table, pcap, data_w, ctl_r, engine.now, engine._next_tick, snapshot_every)
        finally:
            os._exit(1)  # never back into the caller's code (_table_main itself ends with os._exit)
    os.close(data_w)
    os.close(ctl_r)
    recorded = RecordedTable(os.fdopen(data_r, "rb", buffering=1 << 20), ctl_w, pid, _flowtable.flows_of_records)
    engine.table = recorded
    size = pcap.total
    next_report = time.monotonic() + PROGRESS_EVERY
    # the loop below runs once a message (~250k on a capture of 200k flows): its common case, a
    # message already read and nothing to tell the table process, takes no Python call of its own
    # (RecordedTable.next_message, Offline.step and step_done's test inline: 3 frames a message;
    # callgrind, this process on the 300k-packet slice of bench/replay.py's 200k-flow capture:
    # 1.208 G instructions with the calls, 1.181 G without, -2.3 %)
    # Most messages go to Engine.steps, a run of them in one call (compiled: no Python frame a
    # message): the "a" messages that need nothing of this loop. It stops before a tick and after a
    # message that decided a command, or reached the next snapshot; that message's follow-up (apply,
    # tell the table process) is done here as below, and a message it leaves goes the way below.
    engine_step, engine_steps, take, apply = run.engine.step, run.engine.steps, run.engine.take, run.apply
    flows_of = recorded._flows_of
    msgs, snapshots, cmds = recorded.msgs, recorded.snapshots, recorded.cmds
    try:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # a Ctrl-C since the fork is raised here
        while True:
            if msgs and not recorded.awaiting and engine_steps(recorded, snapshots[0] if snapshots else _NEVER,
                                                               flows_of):
                commands = take()
                if commands:
                    apply(commands)
                if len(cmds) > recorded.told or (snapshots and snapshots[0] <= recorded.seq):
                    recorded.step_done()
                continue
            if msgs and not recorded.awaiting:  # RecordedTable.next_message, inline
                msg = take_first(msgs)
                if msg[0] != recorded.seq + 1:
                    raise PipelineError(f"message {msg[0]} came after {recorded.seq}")
                recorded.seq = msg[0]
            else:
                msg = recorded.next_message()
            kind = msg[1]
            if kind == "a":  # run.advance(now) with the message loaded, in 5 Python calls fewer
                recs = msg[4]  # (Engine.step)
                commands = engine_step(msg[2], msg[3], flows_of(recs) if recs else [])
                if commands:  # runmode.Offline.step
                    apply(commands)
                if len(recorded.cmds) > recorded.told or (snapshots and snapshots[0] <= recorded.seq):
                    recorded.step_done()  # something to tell the table process
                if progress is not None and time.monotonic() >= next_report:
                    next_report = time.monotonic() + PROGRESS_EVERY
                    progress(msg[5], size)
            elif kind == "z":  # the capture's end: the one-process loop's last advance, if it read any
                info: dict[str, Any] = msg[5]
                recorded.load(msg)
                if info["packets"]:
                    run.advance(msg[2])
                if check is not None:
                    check(info)
                break
            else:
                raise PipelineError(f"message {msg[0]} is {kind!r} where the engine expects an advance")
    except BaseException:
        recorded.close()
        raise
    if progress is not None:
        progress(size, size)
    return info
