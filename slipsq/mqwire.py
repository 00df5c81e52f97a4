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
from collections.abc import Sequence
from typing import Any

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


def loads(data: bytes) -> tuple[Any, ...]:
    """A message's tuple, shape checked. WireError for anything this module would not have written."""
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
