"""The pipeline's wire (slipsq/dispatch.py, "the pipeline's wire"): plain "a" messages packed in runs
and read back, by both twins, to the same messages; a run cut short is an error, never a crash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq import dispatch, twins

FAST = twins.compiled("slipsq._dispatch")
TWINS = [pytest.param(dispatch, id="readable"),
         pytest.param(FAST, id="compiled", marks=pytest.mark.skipif(FAST is None, reason="not built"))]

times = st.floats(allow_nan=False, min_value=-1e12, max_value=1e12)
packets = st.lists(st.tuples(times, st.binary(max_size=40)), max_size=3)
odd = st.sampled_from([
    ("x", None), ("z", {"packets": 3}), ("a", None), ("a", 1 << 70), ("a", "7"),  # not plain: kept as they are
])


@st.composite
def message_lists(draw: Any) -> list[tuple[Any, ...]]:
    """Messages as the table process makes them, numbered from some n on (with an odd gap), most of
    them plain advances, some ticks and ends, some that no run can hold."""
    # (a run holds numbers in [0, 2**62): near and past both edges, messages stay tuples)
    seq = draw(st.one_of(st.integers(-4, 1000), st.integers((1 << 62) - 12, (1 << 62) + 2)))
    out: list[tuple[Any, ...]] = []
    for _ in range(draw(st.integers(0, 12))):
        seq += draw(st.sampled_from([1, 1, 1, 1, 2]))
        if draw(st.integers(0, 4)) == 0:
            kind, extra = draw(odd)
            out.append((seq, kind, draw(times), draw(packets), draw(st.binary(max_size=30)), extra))
        else:
            out.append((seq, "a", draw(times), draw(packets), draw(st.binary(max_size=300)),
                        draw(st.integers(-(1 << 63), (1 << 63) - 1))))
    if out and draw(st.booleans()):  # an app packet that is no (float, bytes): its message stays a tuple
        n, kind, now, app, recs, extra = out[0]
        out[0] = (n, kind, now, [*app, (1, b"x")], recs, extra)
    return out


def unpacked(twin: Any, items: list[Any]) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    for item in items:
        if type(item) is tuple:
            out.append(item)
            continue
        run = twin.Run(item)
        while run.left:
            seq, now = run.seq, run.now
            msg = run.take()
            assert (msg[0], msg[2]) == (seq, now)
            out.append(msg)
        with pytest.raises(ValueError):
            run.take()  # none left
    return out


@pytest.mark.parametrize("twin", TWINS)
@settings(max_examples=300, deadline=None)
@given(msgs=message_lists())
def test_runs_give_back_every_message_and_hold_only_plain_consecutive_ones(twin: Any,
                                                                            msgs: list[tuple[Any, ...]]) -> None:
    items = twin.pack_messages(msgs)
    assert unpacked(twin, items) == msgs
    for item in items:
        if type(item) is tuple:
            assert not dispatch._plain(item)  # every plain message went into a run
    runs = [twin.Run(i) for i in items if type(i) is bytes]
    assert sum(r.left for r in runs) == sum(dispatch._plain(m) for m in msgs)


@pytest.mark.skipif(FAST is None, reason="not built")
@settings(max_examples=300, deadline=None)
@given(msgs=message_lists())
def test_both_twins_write_the_same_bytes_and_read_each_others(msgs: list[tuple[Any, ...]]) -> None:
    assert FAST is not None
    items = dispatch.pack_messages(msgs)
    assert FAST.pack_messages(msgs) == items
    assert unpacked(FAST, items) == unpacked(dispatch, items) == msgs


@pytest.mark.parametrize("twin", TWINS)
def test_a_run_cut_short_or_run_on_is_an_error(twin: Any) -> None:
    msgs = [(7, "a", 1.5, [(1.25, b"packet"), (1.5, b"")], b"r" * 10, 99), (8, "a", 2.0, [], b"", 100)]
    (blob,) = twin.pack_messages(msgs)
    for cut in range(len(blob)):
        got: list[tuple[Any, ...]] = []
        with pytest.raises(ValueError):
            run = twin.Run(blob[:cut])
            while len(got) < 3:
                assert run.now == msgs[len(got)][2]
                got.append(run.take())
        # what was read before the error is whole and right; the message the cut falls in is not read
        assert got == msgs[:len(got)] and len(got) < 2
    run = twin.Run(blob + b"more")  # bytes past the last message are not read
    assert [run.take(), run.take()] == msgs and run.left == 0
    with pytest.raises(ValueError):
        _ = run.now


@pytest.mark.parametrize("twin", TWINS)
@pytest.mark.parametrize("field", ["packet", "records"])
@pytest.mark.parametrize("length", [7, 0xFFFFFFF4, 0xFFFFFFFF, 1 << 31])
def test_a_length_past_the_run_is_an_error_not_a_read_past_its_bytes(twin: Any, field: str, length: int) -> None:
    """A length field that points past the run's bytes (one byte past, or far enough that adding it
    to an offset would wrap a 32-bit sum) is a ValueError, before any byte of it is read."""
    import struct

    (blob,) = twin.pack_messages([(1, "a", 1.0, [(1.0, b"pkt")], b"rr", 5)])
    # run head 12, message head 24 (now, offset, app packets, records), app head 12 (ts, length)
    at = 12 + 24 + 8 if field == "packet" else 12 + 20
    bad = blob[:at] + struct.pack("=I", length) + blob[at + 4:]
    run = twin.Run(bad)
    assert run.now == 1.0  # the head is whole
    with pytest.raises(ValueError):
        run.take()
