"""The wire between a queue worker process and the daemon (`slipsq --queue A:B`, slipsq.multiqueue).

One message is one datagram of a SOCK_SEQPACKET socketpair (the kernel keeps message boundaries, so
there is no framing here): a tuple whose first item names its kind, pickled (protocol 5) and read
back by an unpickler that refuses every global, so a message can only hold tuples, lists, dicts,
str, bytes, int, float, bool and None: no class is ever looked up, no code ever runs. Each decoded
message is then checked for its shape; anything else is a WireError.

    worker -> daemon   ("ready", info)            bound to its queue; info: num, pid, rcvbuf, ...
                       ("error", text)            could not start (the text is for a person)
                       ("batch", flows, app, stats)  closed flows as Flow field tuples, app packets
                                                  as (ts, ip packet), counters (None: unchanged)
                       ("drained", stats)         the queue ran dry after a drain request
    daemon -> worker   ("ops", [(op, arg), ...])  "config" (the flowtable.* keys: the last op of
                                                  a worker's init), "block"/"unblock" addresses,
                                                  "kinds" (app kinds to hand up), "drain", "stop"

Why pickle and not JSON or struct: a closed flow is 17 fields, four of them short strings the
table already shares (address texts, protocol, state); pickle's C code writes a batch of such
tuples in about a microsecond per flow and its memo sends a repeated address once per batch
(bench/multiqueue.py --wire measures it). This module does no I/O and keeps no state.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable, Sequence
from typing import Any

from slipsq import twins
from slipsq.errors import SlipsqError
from slipsq.flow import Flow

PROTOCOL = 5
# a datagram never exceeds this (the daemon and the workers set their socket buffers above it);
# encode_batches cuts longer batches into several messages
MAX_MESSAGE = 256 * 1024
# what an app packet costs in a message besides its bytes (pickle opcodes, the float), and what a
# flow costs at most with its strings not yet in the memo: used to cut batches before encoding
_APP_OVERHEAD = 24
_FLOW_COST = 400
# what an address costs in an ops message besides its text, at most (opcode, length, memo)
_ADDR_OVERHEAD = 16
OPS = frozenset({"config", "bypass", "block", "unblock", "kinds", "drain", "stop"})
# Flow's fields in order, with the types a worker sends (slipsq.flow.Flow)
FLOW_TYPES: tuple[type, ...] = (float, float, str, str, int, str, int, int, int, int, int, str, str, int, int,
                                str, str)


class WireError(SlipsqError):
    """A message that is not one this module writes (a bug, or memory corruption in a worker)."""


class _NoGlobals(pickle.Unpickler):
    """Pickle's C unpickler with every class lookup refused (the documented way to restrict it)."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed on the worker wire")


def dumps(msg: tuple[Any, ...]) -> bytes:
    return pickle.dumps(msg, PROTOCOL)


# the opcodes protocol 5 writes for the values a message may hold. Not PUT, BINPUT or LONG_BINPUT
# (protocol 5 memoises with MEMOIZE): their explicit index makes the C unpickler grow its memo to
# twice that index, and one damaged byte asked it for 18 GB (found by the fuzz test below)
ALLOWED_OPCODES = frozenset((
    "PROTO", "FRAME", "STOP", "MARK", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST",
    "APPEND", "APPENDS", "EMPTY_DICT", "SETITEM", "SETITEMS", "MEMOIZE", "BINGET", "LONG_BINGET", "NONE",
    "NEWTRUE", "NEWFALSE", "BININT", "BININT1", "BININT2", "LONG1", "LONG4", "BINFLOAT", "SHORT_BINUNICODE",
    "BINUNICODE", "BINUNICODE8", "SHORT_BINBYTES", "BINBYTES", "BINBYTES8"))


def _arg_length(op: pickletools.OpcodeInfo) -> int:
    """An opcode's argument length as pickletools describes it: >= 0 fixed, or -1, -4, -8 for a
    length of that many bytes first (little-endian), then the bytes."""
    if op.arg is None:
        return 0
    n = op.arg.n
    if n >= 0:
        return n
    return {pickletools.TAKEN_FROM_ARGUMENT1: -1, pickletools.TAKEN_FROM_ARGUMENT4: -4,
            pickletools.TAKEN_FROM_ARGUMENT4U: -4, pickletools.TAKEN_FROM_ARGUMENT8U: -8}[n]


_ARG = {ord(op.code): _arg_length(op) for op in pickletools.opcodes if op.name in ALLOWED_OPCODES}


def scan(data: bytes) -> str | None:
    """None when `data` is a run of allowed opcodes ending with STOP, else why not: checked before
    the unpickler sees a byte (the readable twin of the compiled `_wirescan.scan`)."""
    pos, n = 0, len(data)
    while pos < n:
        op = data[pos]
        arg = _ARG.get(op)
        if arg is None:
            return f"opcode 0x{op:02x} at {pos} is not one a worker message holds"
        pos += 1
        if op == ord("."):  # STOP
            return None
        if arg >= 0:
            pos += arg
            continue
        k = -arg
        if pos + k > n:
            break
        length = int.from_bytes(data[pos:pos + k], "little")
        pos += k
        if length > n - pos:
            break
        pos += length
    return "the message ends inside an opcode, or before its STOP"


def _scanner() -> Callable[[bytes], str | None]:
    fast = twins.compiled("slipsq._wirescan")
    return scan if fast is None else fast.scan  # type: ignore[no-any-return]


def loads(data: bytes) -> tuple[Any, ...]:
    """A message's tuple, shape checked. WireError for anything this module would not have written."""
    why = _scanner()(data)
    if why is not None:
        raise WireError(f"unreadable worker message ({why})")
    try:
        msg = _NoGlobals(io.BytesIO(data)).load()
    except Exception as e:  # truncated, garbage, a refused global, a recursion bomb: all one kind
        raise WireError(f"unreadable worker message ({type(e).__name__}: {e})") from None
    if type(msg) is not tuple or not msg or type(msg[0]) is not str:
        raise WireError("a worker message must be a tuple starting with its kind")
    _check(msg)
    return msg


def _check(msg: tuple[Any, ...]) -> None:
    kind, n = msg[0], len(msg)
    if kind == "batch" and n == 4:
        _, flows, app, stats = msg
        if type(flows) is not list or type(app) is not list or not (stats is None or type(stats) is dict):
            raise WireError("a batch is (flows list, app list, stats dict or None)")
        for t in flows:
            if type(t) is not tuple or len(t) != len(FLOW_TYPES) or not all(map(isinstance, t, FLOW_TYPES)):
                raise WireError("a flow on the wire is a tuple of Flow's 17 fields with their types")
        for a in app:
            if type(a) is not tuple or len(a) != 2 or type(a[0]) is not float or type(a[1]) is not bytes:
                raise WireError("an app packet on the wire is (float time, bytes)")
    elif kind in ("ready", "drained") and n == 2:
        if type(msg[1]) is not dict:
            raise WireError(f"{kind} carries a dict")
    elif kind == "error" and n == 2:
        if type(msg[1]) is not str:
            raise WireError("error carries a str")
    elif kind == "ops" and n == 2:
        if type(msg[1]) is not list:
            raise WireError("ops carries a list")
        for op in msg[1]:
            if type(op) is not tuple or len(op) != 2 or op[0] not in OPS:
                raise WireError(f"unknown worker op {op!r}")
    else:
        raise WireError(f"unknown worker message {kind!r} of {n} items")


def flow_tuple(f: Flow) -> tuple[Any, ...]:
    return (float(f.start), float(f.end), f.proto, f.saddr, f.sport, f.daddr, f.dport, f.spkts, f.dpkts,
            f.sbytes, f.dbytes, f.state, f.dir, f.stos, f.dtos, f.label, f.closed_by)


def flows_of(msg: tuple[Any, ...]) -> list[Flow]:
    """The Flow records of a decoded batch message."""
    return [Flow(*t) for t in msg[1]]


def encode_batches(flows: Sequence[Flow], app: Sequence[tuple[float, bytes]],
                   stats: dict[str, Any] | None) -> list[bytes]:
    """Batch messages for `flows` and `app` (in that order per message; the daemon analyses a
    message's app packets before its flows, as the single-process engine does), each under
    MAX_MESSAGE. The stats ride on the last one; with nothing to send, one message with the stats
    alone (a heartbeat)."""
    out: list[bytes] = []
    cur_f: list[tuple[Any, ...]] = []
    cur_a: list[tuple[float, bytes]] = []
    size = 0
    budget = MAX_MESSAGE - 4096  # room for the stats and the opcodes around the lists

    def cut() -> None:
        nonlocal cur_f, cur_a, size
        out.append(dumps(("batch", cur_f, cur_a, None)))
        cur_f, cur_a, size = [], [], 0

    for ts, pkt in app:
        cost = len(pkt) + _APP_OVERHEAD
        if size + cost > budget and (cur_f or cur_a):
            cut()
        cur_a.append((float(ts), bytes(pkt)))
        size += cost
    for f in flows:
        if size + _FLOW_COST > budget:
            cut()
        cur_f.append(flow_tuple(f))
        size += _FLOW_COST
    out.append(dumps(("batch", cur_f, cur_a, stats)))
    return out


def ops(items: Sequence[tuple[str, Any]]) -> list[bytes]:
    """Ops messages for `items`, in order, each under MAX_MESSAGE: a long block or unblock list is
    cut over several messages (a worker's init carries every active block, up to judge.max_blocks:
    65,536 addresses are some 2 MB, and a longer datagram reaches the worker truncated)."""
    out: list[bytes] = []
    cur: list[tuple[str, Any]] = []
    size = 0
    budget = MAX_MESSAGE - 4096

    def cut() -> None:
        nonlocal cur, size
        out.append(dumps(("ops", cur)))
        cur, size = [], 0

    for op, arg in items:
        if op in ("block", "unblock"):
            for ip in arg:
                cost = len(ip) + _ADDR_OVERHEAD
                if size + cost > budget:
                    cut()
                if not cur or cur[-1][0] != op:
                    cur.append((op, []))
                cur[-1][1].append(ip)
                size += cost
            continue
        cost = len(dumps((op, arg)))
        if size + cost > budget and cur:
            cut()
        cur.append((op, arg))
        size += cost
    if cur or not out:
        cut()
    return out
