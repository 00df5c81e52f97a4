"""Behavioral letters (stratosphere/letters.py) against letters.md §1-3: every row, class, threshold and symbol."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.detect.stratosphere.letters import LATE_WINDOW, LetterTable, column, letters_of
from slipsq.detect.stratosphere.markov import pairs_of
from slipsq.flow import Flow

MED, SMALL, LARGE = 500, 100, 6000


def flows_at(starts: Sequence[float], size: int = MED, dur: float = 1.0) -> list[tuple[float, int, float]]:
    return [(float(s), size, dur) for s in starts]


def flow(start: float, size: int = MED, dur: float = 1.0, proto: str = "tcp", dport: int = 443,
         closed_by: str = "fin", client: str = "10.0.0.5") -> Flow:
    return Flow(start=start, end=start + dur, proto=proto, saddr=client, sport=50000, daddr="198.51.100.7",
                dport=dport, sbytes=size // 2, dbytes=size - size // 2, closed_by=closed_by)


# --- letters.md §3 examples --------------------------------------------------------------------

def test_example_https_every_two_seconds() -> None:
    assert letters_of(flows_at([2 * i for i in range(8)], 6000, 0.2)) == "88.h.h.h.h.h.h."


def test_example_medium_flows_with_irregular_gaps() -> None:
    starts = [0, 30, 60, 90, 121, 150, 400, 401]
    assert letters_of(flows_at(starts, 500, 1.0)) == "55,e,e,e,E,V+V."


def test_slips_variant_has_no_symbol_on_the_second_flow() -> None:
    starts = [0, 30, 60, 90, 121, 150, 400, 401]
    assert letters_of(flows_at(starts, 500, 1.0), variant="slips") == "55e,e,e,E,V+V."


# --- §2 size and duration classes, exact thresholds ---------------------------------------------

@pytest.mark.parametrize(("size", "dur", "col"), [
    (0, 0.0, 0), (250, 0.1, 0), (250, 0.1001, 1), (250, 10.0, 1), (250, 10.001, 2),
    (251, 0.1, 3), (1100, 0.1, 3), (1100, 10.0, 4), (1100, 3600.0, 5),
    (1101, 0.0, 6), (1101, 10.0, 7), (10**9, 10.5, 8),
])
def test_column_thresholds(size: int, dur: float, col: int) -> None:
    assert column(size, dur) == col


@pytest.mark.parametrize(("size", "dur", "digit", "strong"), [
    (100, 0.05, "1", "a"), (100, 1.0, "2", "b"), (100, 30.0, "3", "c"),
    (500, 0.05, "4", "d"), (500, 1.0, "5", "e"), (500, 30.0, "6", "f"),
    (6000, 0.05, "7", "g"), (6000, 1.0, "8", "h"), (6000, 30.0, "9", "i"),
])
def test_every_column_in_no_data_and_strongly_periodic_rows(size: int, dur: float, digit: str,
                                                            strong: str) -> None:
    assert letters_of(flows_at([0, 100, 200], size, dur)) == f"{digit}{digit}+{strong}+"


# --- §2 periodicity rows, exact TD thresholds ---------------------------------------------------

@pytest.mark.parametrize(("t2", "letter"), [
    (100.0, "e"), (105.0, "e"),  # TD <= 1.05: strongly periodic
    (105.01, "E"), (130.0, "E"),  # TD <= 1.3: weakly periodic
    (130.01, "v"), (500.0, "v"),  # TD <= 5: weakly not periodic
    (500.01, "V"), (3000.0, "V"),  # TD > 5: strongly not periodic
])
def test_periodicity_rows_when_t2_grows(t2: float, letter: str) -> None:
    s = letters_of(flows_at([0, 100, 100 + t2]))
    assert s[:4] == "55+" + letter


@pytest.mark.parametrize(("t2", "letter"), [(95.3, "e"), (95.2, "E"), (77.0, "E"), (76.9, "v"),
                                             (20.0, "v"), (19.99, "V")])
def test_periodicity_rows_when_t2_shrinks(t2: float, letter: str) -> None:
    s = letters_of(flows_at([0, 100, 100 + t2]))
    assert s[3] == letter


def test_td_is_one_when_the_smaller_gap_is_zero() -> None:
    # two flows at the same instant (T1 = 0), then one 50 s later: strongly periodic by definition
    assert letters_of(flows_at([0, 0, 50])) == "55.e,"
    assert letters_of(flows_at([0, 0, 0])) == "55.e."


# --- §3 time symbols and zeros -----------------------------------------------------------------

@pytest.mark.parametrize(("t2", "tail"), [
    (5.0, "5."), (5.001, "5,"), (60.0, "5,"), (60.001, "5+"), (300.0, "5+"), (300.001, "5*"),
    (3599.0, "5*"), (3600.0, "05*"), (3600.5, "05"), (7199.0, "05"), (7200.0, "005"), (4 * 3600 + 1, "00005"),
])
def test_symbol_of_the_second_flow_and_zeros(t2: float, tail: str) -> None:
    assert letters_of(flows_at([0, t2])) == "5" + tail


def test_zeros_come_before_the_letter_which_is_computed_as_usual() -> None:
    # T1 = 100, T2 = 2 h 10 min: two zeros, then a strongly-not-periodic letter, no symbol
    assert letters_of(flows_at([0, 100, 100 + 7800])) == "55+00V"
    # after the silence, gaps of 7800 again: periodic, still two zeros each
    assert letters_of(flows_at([0, 7800, 15600, 23400])) == "500500e00e"


def test_first_flow_has_no_symbol_and_the_third_flow_leaves_the_digit_row() -> None:
    assert letters_of(flows_at([0])) == "5"
    assert letters_of(flows_at([0, 1])) == "55."
    assert letters_of(flows_at([0, 1, 2])) == "55.e."


# --- the per-tuple table: order, late flows, bounds ----------------------------------------------

def table_string(flows: list[Flow], **kw: object) -> tuple[str, LetterTable]:
    t = LetterTable(**kw)  # type: ignore[arg-type]
    for f in flows:
        t.add(f)
    tuples = list(t)
    assert len(tuples) <= 1
    return (tuples[0].text if tuples else ""), t


def test_table_gives_the_same_string_as_the_reference() -> None:
    starts = [0, 30, 60, 90, 121, 150, 400, 401]
    text, _ = table_string([flow(s) for s in starts])
    assert text == "55,e,e,e,E,V+V."


def test_flows_closing_out_of_order_are_put_back_in_start_order() -> None:
    starts = [0, 30, 60, 90, 121, 150, 400, 401]
    order = [3, 0, 1, 7, 2, 6, 4, 5]
    text, table = table_string([flow(starts[i]) for i in order])
    assert text == "55,e,e,e,E,V+V."
    assert table.too_late == 0
    t = next(iter(table))
    assert t.pairs == pairs_of(text) and t.flows == 8


def test_a_flow_arriving_before_the_first_two_is_placed_first() -> None:
    text, _ = table_string([flow(10), flow(20), flow(30), flow(0)])
    assert text == letters_of(flows_at([0, 10, 20, 30])) == "55,e,e,"


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20_000), st.integers(0, 3000), st.floats(0, 900)),
                min_size=1, max_size=LATE_WINDOW - 4),
       st.sampled_from(["classic", "slips"]))
def test_close_order_gives_the_start_order_string(raw: list[tuple[float, int, float]], variant: str) -> None:
    flows = [flow(s, size, d) for s, size, d in raw]
    by_close = sorted(flows, key=lambda f: f.end)
    text, table = table_string(by_close, variant=variant)
    assert table.too_late == 0
    # flows starting at the same instant keep their arrival (close) order
    assert text == letters_of([(f.start, f.bytes, f.dur) for f in by_close], variant)
    assert next(iter(table)).pairs == pairs_of(text)


def test_string_is_capped_to_its_last_characters_and_counts_follow() -> None:
    starts = [i * 2.0 + (i % 7) * 0.4 for i in range(500)]
    ref = letters_of(flows_at(starts))
    text, table = table_string([flow(s) for s in starts], max_chars=100)
    assert len(ref) > 900 and text == ref[-100:]
    assert next(iter(table)).pairs == pairs_of(text)


def test_late_flows_after_a_capped_window_are_still_correct_or_counted() -> None:
    rnd = random.Random(7)
    starts = [i * 10.0 + rnd.uniform(0, 3) for i in range(400)]
    durs = [rnd.choice([0.05, 1.0, 25.0, 200.0]) for _ in starts]  # up to 20 flows close late
    flows = sorted((flow(s, MED, d) for s, d in zip(starts, durs)), key=lambda f: f.end)
    text, table = table_string(flows, max_chars=300)
    assert table.too_late == 0
    assert text == letters_of([(f.start, f.bytes, f.dur) for f in flows])[-300:]
    assert next(iter(table)).pairs == pairs_of(text)


def test_a_flow_older_than_the_recent_window_is_counted_and_skipped() -> None:
    flows = [flow(100.0 + i) for i in range(LATE_WINDOW + 10)]
    text, table = table_string([*flows, flow(50.0)])
    assert table.too_late == 1
    assert text == letters_of([(f.start, f.bytes, f.dur) for f in flows])


def test_reports_and_portless_protocols_get_no_letter() -> None:
    table = LetterTable()
    assert table.add(flow(0, closed_by="active")) is None
    assert table.add(flow(0, proto="icmp", dport=0)) is None
    assert len(table) == 0
    assert table.add(flow(0, proto="udp", dport=53)) is not None


def test_tuples_are_split_by_server_port_and_protocol_but_not_source_port() -> None:
    table = LetterTable()
    for i in range(3):
        f = flow(i * 10.0)
        f.sport = 40000 + i
        table.add(f)
    table.add(flow(0, dport=80))
    table.add(flow(0, proto="udp"))
    assert sorted((t.port, t.proto, t.text) for t in table) == [(80, "tcp", "5"), (443, "tcp", "55,e,"),
                                                                (443, "udp", "5")]


def test_idle_tuples_are_dropped_and_the_table_is_capped() -> None:
    table = LetterTable(idle=3600.0, max_tuples=3)
    for i in range(5):
        table.add(flow(float(i), client=f"10.0.0.{i}"))
    assert len(table) == 3 and table.evicted == 2
    assert {t.client for t in table} == {"10.0.0.2", "10.0.0.3", "10.0.0.4"}
    table.add(flow(3000.0, client="10.0.0.4"))
    assert table.expire(3600.0 + 3.5) == 1  # 10.0.0.2 last ended at 3 s, .3 at 4 s
    assert table.expire(3600.0 + 4.5) == 1
    assert [t.client for t in table] == ["10.0.0.4"]
    assert table.expire(3000.0 + 3601 + 1) == 1 and len(table) == 0


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        LetterTable(variant="modern")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10**12),
                          st.floats(0, 1e9)), max_size=30))
def test_any_flow_times_and_sizes_give_letters_or_are_skipped(raw: list[tuple[float, int, float]]) -> None:
    table = LetterTable(max_chars=200)
    for s, size, d in raw:
        f = flow(s, max(0, size), d)
        table.add(f)
    for t in table:
        assert len(t.text) <= 200 and t.pairs == pairs_of(t.text)


def test_zeros_are_capped_for_absurd_silences() -> None:
    assert letters_of(flows_at([0, 1e12])) == "5" + "0" * 1000 + "5"
