"""The queue workers' wire (slipsq.mqwire): what a worker writes the daemon reads back unchanged,
cut into messages under the size limit; anything else is one WireError, never another exception
and never code run."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq import mqwire
from slipsq.flow import Flow
from slipsq.mqwire import WireError

texts = st.text(max_size=40)
counts = st.integers(min_value=0, max_value=2**63)
times = st.floats(allow_nan=False, allow_infinity=False, width=64)
flows = st.builds(Flow, times, times, texts, texts, counts, texts, counts, counts, counts, counts, counts, texts,
                  texts, counts, counts, texts, texts)
apps = st.tuples(times, st.binary(max_size=4096))
stats = st.none() | st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=5), max_size=5)


def decode_all(messages: list[bytes]) -> tuple[list[Flow], list[tuple[float, bytes]], list[object]]:
    fl: list[Flow] = []
    ap: list[tuple[float, bytes]] = []
    st_: list[object] = []
    for m in messages:
        assert len(m) <= mqwire.MAX_MESSAGE
        msg = mqwire.loads(m)
        assert msg[0] == "batch"
        fl += mqwire.flows_of(msg)
        ap += msg[2]
        st_.append(msg[3])
    return fl, ap, st_


@settings(max_examples=200, deadline=None)
@given(st.lists(flows, max_size=60), st.lists(apps, max_size=20), stats)
def test_batches_round_trip(fs: list[Flow], app: list[tuple[float, bytes]], s: dict[str, object] | None) -> None:
    msgs = mqwire.encode_batches(fs, app, s)
    got_f, got_a, got_s = decode_all(msgs)
    assert got_f == fs
    assert got_a == app
    assert got_s[-1] == s and all(x is None for x in got_s[:-1])  # stats once, on the last message


def test_big_batches_are_cut_under_the_limit_and_keep_their_order() -> None:
    fs = [Flow(float(i), float(i) + 1, "tcp", f"10.0.{i // 250}.{i % 250}", 40000 + i % 1000, "192.0.2.1", 80,
               3, 2, 180, 120, "S_RA", "<->", 0, 0, "", "rst") for i in range(20_000)]
    app = [(float(i), bytes([i % 256]) * 4000) for i in range(300)]
    msgs = mqwire.encode_batches(fs, app, {"pid": 1})
    assert len(msgs) > 2
    got_f, got_a, got_s = decode_all(msgs)
    assert got_f == fs and got_a == app and got_s[-1] == {"pid": 1}


def test_nothing_to_send_is_one_heartbeat_with_the_stats() -> None:
    [m] = mqwire.encode_batches([], [], {"queue": {"packets": 5}})
    assert mqwire.loads(m) == ("batch", [], [], {"queue": {"packets": 5}})


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_are_a_message_or_one_wire_error(data: bytes) -> None:
    try:
        msg = mqwire.loads(data)
    except WireError:
        return
    assert type(msg) is tuple and msg[0] in ("batch", "ready", "drained", "error", "ops")


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(min_value=0, max_value=10_000))
def test_a_damaged_message_is_a_wire_error_or_still_well_formed(junk: bytes, at: int) -> None:
    good = mqwire.encode_batches([Flow(1.0, 2.0, "udp", "10.0.0.1", 5, "10.0.0.2", 53)], [(1.0, b"x")], None)[0]
    at %= len(good)
    bad = good[:at] + junk + good[at + len(junk):]
    try:
        msg = mqwire.loads(bad)
    except WireError:
        return
    mqwire.flows_of(msg) if msg[0] == "batch" else None  # well-formed: the daemon can use it


c_wirescan = pytest.importorskip("slipsq._wirescan", reason="the compiled extension is not built")


@settings(max_examples=300, deadline=None)
@given(st.lists(flows, max_size=4), st.lists(apps, max_size=3), stats, st.binary(min_size=1, max_size=12),
       st.integers(min_value=0, max_value=10_000))
def test_both_opcode_checks_agree(fl: list[Flow], ap: list[tuple[float, bytes]], sts: dict[str, Any] | None,
                                  junk: bytes, at: int) -> None:
    """The compiled check and its readable twin pass every message the workers write, and give the
    same answer on damaged ones."""
    for good in mqwire.encode_batches(fl, ap, sts):
        assert c_wirescan.scan(good) is None and mqwire.scan(good) is None
        at %= len(good)
        bad = good[:at] + junk + good[at + len(junk):]
        assert c_wirescan.scan(bad) == mqwire.scan(bad)


def test_a_memo_index_cannot_make_the_reader_allocate() -> None:
    """A damaged byte that reads as LONG_BINPUT with a large index made the C unpickler grow its memo
    to twice that index (the fuzz test above once drove a worker to 14 GB). Here 2**26: 1 GB without
    the opcode check; with it, the message is refused before the unpickler runs."""
    code = ("import resource, sys\nfrom slipsq import mqwire\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    mqwire.loads(b'\\x80\\x05N' + b'r' + (2**26).to_bytes(4, 'little') + b'.')\n"
            "except mqwire.WireError as e:\n    print('refused:', e)\n"
            "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n")
    for pure in ("0", "1"):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, SLIPSQ_PURE_PYTHON=pure))
        assert r.returncode == 0, r.stderr
        said, grew_mb = r.stdout.splitlines()
        assert said.startswith("refused: unreadable worker message (opcode 0x72 at 3"), said
        assert int(grew_mb) < 100


class Boom:
    ran = False

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (Boom.go, ())

    @staticmethod
    def go() -> None:
        Boom.ran = True


def test_no_class_is_looked_up_and_no_code_runs() -> None:
    evil = pickle.dumps(("batch", [Boom()], [], None), 5)
    with pytest.raises(WireError, match=r"not one a worker message holds"):
        mqwire.loads(evil)
    assert not Boom.ran
    with pytest.raises(WireError, match="0x93"):  # a Flow object itself is a class lookup (STACK_GLOBAL)
        mqwire.loads(pickle.dumps(("batch", [Flow(1.0, 2.0, "tcp", "a", 1, "b", 2)], [], None), 5))
    # behind the opcode check, the unpickler itself still refuses every global
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        mqwire._NoGlobals(io.BytesIO(evil)).load()
    assert not Boom.ran


@pytest.mark.parametrize("msg", [
    ("batch", [("x",)], [], None),                                   # a flow of the wrong length
    ("batch", [(1.0, 2.0, "tcp", "a", "1", "b", 2, 0, 0, 0, 0, "", "", 0, 0, "", "")], [], None),  # port as text
    ("batch", [], [(1, b"x")], None),                                # app time not a float
    ("batch", [], [], [1]),                                          # stats not a dict
    ("batch", [], []),                                               # too short
    ("ops", [("format-disk", None)]),                                # unknown op
    ("ops", "block"),
    ("ready", []),
    ("error", 5),
    ("hello",),
    ["batch", [], [], None],                                         # a list, not a tuple
    (),
])
def test_wrong_shapes_are_refused(msg: object) -> None:
    with pytest.raises(WireError):
        mqwire.loads(pickle.dumps(msg, 5))


def test_ops_round_trip() -> None:
    items = [("config", {"flowtable.max_flows": 10}), ("block", ["192.0.2.1", "2001:db8::1"]),
             ("kinds", ["dns"]), ("unblock", ["192.0.2.1"]), ("drain", None), ("stop", None)]
    assert [mqwire.loads(m) for m in mqwire.ops(items)] == [("ops", items)]


addresses = st.ip_addresses().map(str)
op_items = st.lists(st.tuples(st.sampled_from(["block", "unblock"]), st.lists(addresses, max_size=50))
                    | st.tuples(st.sampled_from(["kinds"]), st.lists(st.sampled_from(["dns", "tls"])))
                    | st.tuples(st.sampled_from(["drain", "stop"]), st.none()), max_size=8)


@settings(max_examples=100, deadline=None)
@given(op_items, st.integers(0, 70_000), st.booleans())
def test_ops_of_any_length_are_cut_under_the_limit_in_order(items: list[tuple[str, object]], many: int,
                                                           v6: bool) -> None:
    # up to judge.max_blocks (65,536) addresses in one op: what a worker's init carries
    burst = [f"2001:db8:ffff:ffff:ffff:ffff:{i >> 16:x}:{i & 0xFFFF:x}" if v6 else
             f"10.{i >> 16}.{i >> 8 & 255}.{i & 255}" for i in range(many)]
    items = [*items, ("block", burst), ("config", {"flowtable.max_flows": 10})]
    messages = mqwire.ops(items)
    got: list[tuple[str, object]] = []
    for m in messages:
        assert len(m) <= mqwire.MAX_MESSAGE
        kind, ops = mqwire.loads(m)
        assert kind == "ops" and ops
        got += ops

    def per_address(ops: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        for op, arg in ops:
            out += [(op, ip) for ip in arg] if op in ("block", "unblock") else [(op, arg)]
        return out

    assert per_address(got) == per_address(items)
    assert got[-1][0] == "config"  # a worker's init ends with it
