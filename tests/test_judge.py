"""The judge's arithmetic: sums per offender per window, keys counted once, protection, durations."""

from __future__ import annotations

import pytest

from slipsq.allow import AllowList
from slipsq.config import CORE_OPTIONS, Config
from slipsq.judge import Judge
from slipsq.records import CRITICAL, HIGH, LOW, MEDIUM, Evidence


def ev(ts: float, offender: str = "203.0.113.9", level: float = HIGH, conf: float = 0.5, key: str = "",
       may_block: bool = True, detector: str = "test") -> Evidence:
    return Evidence(ts=ts, detector=detector, offender=offender, src_ip="192.168.1.5", dst_ip=offender,
                    dst_port=443, proto="tcp", description="d", threat_level=level, confidence=conf,
                    key=key, may_block=may_block)


def judge(**values: object) -> Judge:
    cfg = Config(CORE_OPTIONS, values)
    return Judge(cfg, AllowList(cfg["allow.ips"], own=["192.168.1.1"]))


def test_scores_add_up_to_the_threshold_then_block() -> None:
    j = judge()
    assert j.add(ev(10)).action == "alert"  # 0.4
    assert j.add(ev(20)).action == "alert"  # 0.8
    d = j.add(ev(30))  # 1.2 >= 1.0
    assert d.action == "block" and d.blocked_ip == "203.0.113.9"
    assert d.score == pytest.approx(1.2)
    assert d.duration == 14400.0
    assert "3 x test" in d.reason
    assert j.is_blocked("203.0.113.9", 31)
    # further evidence while blocked: alert only
    assert j.add(ev(40)).reason.endswith("already blocked")


def test_same_key_counts_once_with_its_best_score() -> None:
    j = judge()
    for t in range(10):
        d = j.add(ev(t, key="k", conf=0.5))
    assert d.action == "alert" and d.score == pytest.approx(0.4)
    d = j.add(ev(11, key="k", conf=1.0))
    assert d.score == pytest.approx(0.8)


def test_windows_do_not_mix() -> None:
    j = judge(**{"judge.window": 100.0})
    j.add(ev(50, conf=1.0))  # 0.8 in window 0
    d = j.add(ev(150, conf=1.0))  # window 1 starts fresh
    assert d.action == "alert" and d.score == pytest.approx(0.8)


def test_evidence_that_may_not_block_never_blocks_alone() -> None:
    j = judge()
    for t in range(20):
        d = j.add(ev(t, level=MEDIUM, conf=1.0, may_block=False))
    assert d.action == "alert" and d.score >= 1.0 and "may block" in d.reason
    assert j.add(ev(30, level=LOW, conf=0.1)).action == "block"


@pytest.mark.parametrize("ip", ["127.0.0.1", "169.254.3.3", "192.168.1.1", "10.1.2.3", "fe80::1", "224.0.0.251"])
def test_protected_addresses_are_never_blocked(ip: str) -> None:
    j = judge(**{"allow.ips": ["10.0.0.0/8"]})
    d = j.add(ev(1, offender=ip, level=CRITICAL, conf=1.0))
    assert d.action == "alert" and d.reason.startswith("not blocked")


def test_blocking_disabled_is_an_ids() -> None:
    d = judge(**{"judge.block": False}).add(ev(1, level=CRITICAL, conf=1.0))
    assert d.action == "alert" and "disabled" in d.reason


def test_repeat_offenders_get_longer_blocks_up_to_the_cap() -> None:
    j = judge(**{"judge.block_duration": 100.0, "judge.max_block_duration": 350.0})
    durations = []
    t = 0.0
    for _ in range(4):
        d = j.add(ev(t, level=CRITICAL, conf=1.0))
        durations.append(d.duration)
        t += 10_000  # after expiry, in a new window
        assert j.expired(t) == ["203.0.113.9"]
    assert durations == [100.0, 200.0, 350.0, 350.0]


def test_forget_drops_block_and_evidence() -> None:
    j = judge()
    j.add(ev(1, conf=1.0))
    j.add(ev(2, conf=1.0))
    assert j.is_blocked("203.0.113.9", 3)
    j.forget("203.0.113.9")
    assert not j.is_blocked("203.0.113.9", 3)
    assert j.add(ev(4, conf=1.0)).action == "alert"  # the old evidence is gone


def test_zero_duration_means_until_unblocked() -> None:
    j = judge(**{"judge.block_duration": 0.0})
    d = j.add(ev(1, level=CRITICAL, conf=1.0))
    assert d.duration == 0.0 and j.is_blocked("203.0.113.9", 1e12) and j.expired(1e12) == []


def test_late_evidence_joins_the_current_window_instead_of_wiping_it() -> None:
    j = judge(**{"judge.window": 100.0})
    j.add(ev(150, conf=1.0, key="a"))  # window 1: 0.8
    d = j.add(ev(90, conf=1.0, key="b"))  # a flow that closed late, from window 0
    assert d.action == "block" and d.score == pytest.approx(1.6)


# --- bounded under floods (issue 12) ----------------------------------------------------------------

def test_offenders_past_the_bound_forget_evidence_never_a_block() -> None:
    j = judge(**{"judge.max_offenders": 3})
    blocked = j.add(ev(0.0, "203.0.113.1", CRITICAL, 1.0))
    assert blocked.action == "block"
    for i in range(2, 50):  # a flood of forged offenders, each with one low finding
        j.add(ev(float(i), f"203.0.113.{i}", LOW, 0.2))
    assert len(j._windows) <= 3 and len(j._times_blocked) <= 3
    assert j.is_blocked("203.0.113.1", 60.0)  # the block is untouched by the bound
    # an early offender's evidence was forgotten: its next finding starts from zero
    d = j.add(ev(60.0, "203.0.113.2", LOW, 0.2))
    assert d.score == pytest.approx(LOW * 0.2)


def test_blocks_past_max_blocks_are_refused_and_said_so() -> None:
    j = judge(**{"judge.max_blocks": 2})
    assert [j.add(ev(0.0, f"203.0.113.{i}", CRITICAL, 1.0)).action for i in (1, 2)] == ["block", "block"]
    d = j.add(ev(1.0, "203.0.113.3", CRITICAL, 1.0))
    assert d.action == "alert" and "judge.max_blocks" in d.reason
    assert j.is_blocked("203.0.113.1", 2.0) and j.is_blocked("203.0.113.2", 2.0)
    assert j.expired(14400.0) == ["203.0.113.1", "203.0.113.2"]  # then room again
    assert j.add(ev(14401.0, "203.0.113.3", CRITICAL, 1.0)).action == "block"


def test_findings_per_window_are_bounded_and_the_score_kept_as_they_change() -> None:
    j = judge(**{"judge.max_findings": 4, "judge.threshold": 100.0})
    for i in range(10):
        d = j.add(ev(float(i), key=f"k{i}", level=HIGH, conf=0.5))
    assert d.score == pytest.approx(4 * 0.4) and len(j._windows["203.0.113.9"].findings) == 4
    d = j.add(ev(11.0, key="k0", level=CRITICAL, conf=1.0))  # a known finding grows: the sum follows
    assert d.score == pytest.approx(3 * 0.4 + 1.0)


def test_expiry_skips_stale_heap_entries() -> None:
    j = judge()
    j.add(ev(0.0, level=CRITICAL, conf=1.0))
    j.forget("203.0.113.9")
    j.restore("203.0.113.9", 50_000.0, 1)  # unblocked, then blocked again for longer
    assert j.expired(20_000.0) == []  # the first block's heap entry is stale
    assert j.expired(50_000.0) == ["203.0.113.9"]


def test_prune_takes_ended_windows_from_the_front() -> None:
    j = judge()
    for i in range(5):
        j.add(ev(float(i), f"203.0.113.{i}", LOW, 0.2))
    j.add(ev(3700.0, "203.0.113.9", LOW, 0.2))
    j.prune(3700.0)
    assert list(j._windows) == ["203.0.113.9"]
