"""The judge's arithmetic: sums per offender per window, keys counted once, protection, durations."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slipsq.allow import AllowList
from slipsq.config import CORE_OPTIONS, Config
from slipsq.judge import Judge
from slipsq.records import CRITICAL, HIGH, LOW, MEDIUM, Evidence, fmt_score


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
    assert "(test 0.40 + test 0.40 + test 0.40)" in d.reason
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


def test_persistence_is_one_source_reporting_again() -> None:
    """A key may gather several sources (beacon and Markov findings against a server are keyed by the
    service): reports from different devices, minutes apart, are not one finding that persists."""
    def from_(src: str, ts: float) -> Evidence:
        return dataclasses.replace(ev(ts, level=CRITICAL, conf=0.9, key="beacon:203.0.113.9:443/tcp"), src_ip=src)

    j = judge()
    assert j.add(from_("192.168.1.30", 0.0)).score == pytest.approx(0.9)
    d = j.add(from_("192.168.1.31", 300.0))  # another device, 5 minutes later: the same finding, once
    assert (d.action, d.score) == ("alert", pytest.approx(0.9))
    d = j.add(from_("192.168.1.30", 400.0))  # the first device again: now it persists
    assert (d.action, d.score) == ("block", pytest.approx(1.8)) and "x2" in d.reason


def test_a_near_certain_finding_that_keeps_coming_blocks_with_margin() -> None:
    # issue 11: a real HTTPS beacon reported 10x at critical, 0.98-0.996, never reached 1.0
    j = judge()
    confs = [0.98, 0.985, 0.99, 0.996, 0.99, 0.994, 0.996, 0.99, 0.995, 0.996]
    decisions = [j.add(ev(20.0 * i, level=CRITICAL, conf=c, key="beacon:x")) for i, c in enumerate(confs)]
    first_block = next(i for i, d in enumerate(decisions) if d.action == "block")
    assert first_block == 3  # 60 s after the first report: persistent
    d = decisions[first_block]
    assert d.score == pytest.approx(2 * 0.996) and d.score - 1.0 > 0.9
    assert "x2" in d.reason and d.window[0].weight == 2 and d.window[0].reports == 4
    # before that, the printed score says what the decision says
    assert decisions[0].reason == "score 0.98 below threshold 1"
    assert "0.996 below" in judge().add(ev(0, level=CRITICAL, conf=0.996)).reason


def test_one_weak_finding_never_blocks_however_long_it_persists() -> None:
    j = judge()
    for t in range(0, 3600, 30):  # critical x 0.59 (below persist_min), and high x 1.0, for an hour
        d = j.add(ev(float(t), level=CRITICAL, conf=0.59, key="k"))
        assert d.action == "alert"
        d = j.add(ev(float(t), level=HIGH, conf=1.0, key="k2", offender="203.0.113.10"))
        assert d.action == "alert"
    assert d.score == pytest.approx(0.8)


def test_one_report_cannot_persist_and_persistence_needs_time() -> None:
    j = judge()
    for t in range(59):  # a second apart, for 58 s: not yet persistent
        d = j.add(ev(float(t), level=CRITICAL, conf=0.9, key="k"))
    assert d.action == "alert" and d.score == pytest.approx(0.9)
    d = j.add(ev(60.0, level=CRITICAL, conf=0.9, key="k"))
    assert d.action == "block" and d.score == pytest.approx(1.8)


def test_persistence_is_per_window() -> None:
    j = judge(**{"judge.window": 100.0})
    j.add(ev(10, level=CRITICAL, conf=0.8, key="k"))
    d = j.add(ev(110, level=CRITICAL, conf=0.8, key="k"))  # new window: its first report again
    assert d.action == "alert" and d.score == pytest.approx(0.8)


def test_keyless_flood_stays_bounded_and_still_counts() -> None:
    j = judge(**{"judge.threshold": 1000.0})
    for t in range(2000):
        d = j.add(ev(float(t), level=LOW, conf=1.0))
    w = j._windows["203.0.113.9"]
    assert len(w.findings) <= 256 and d.score == pytest.approx(400.0)


@given(st.floats(0, 10, allow_nan=False), st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0]))
def test_a_printed_score_never_contradicts_the_comparison(score: float, threshold: float) -> None:
    assert (float(fmt_score(score, threshold)) >= threshold) == (score >= threshold)


@given(st.lists(st.tuples(st.sampled_from(["block", "forget", "tick"]), st.integers(0, 7),
                          st.floats(1, 500)), max_size=60))
def test_expiry_heap_reports_exactly_what_a_scan_of_every_block_would(ops: list[tuple[str, int, float]]) -> None:
    # expired() pops a heap instead of scanning every block each second; renewed and forgotten
    # blocks leave stale heap entries behind, which must never be reported
    j, model, now = judge(), {}, 0.0
    for op, n, x in ops:
        ip = f"203.0.113.{n}"
        if op == "block":
            j.restore(ip, now + x)
            model[ip] = now + x
        elif op == "forget":
            j.forget(ip)
            model.pop(ip, None)
        else:
            now += x
            want = sorted(i for i, u in model.items() if now >= u)
            assert sorted(j.expired(now)) == want
            for i in want:
                del model[i]
        assert all(j.is_blocked(i, now) == (now < u) for i, u in model.items())
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


def _v6(net: int, host: int, site: int = 0) -> str:
    """An address of 2001:db8:<site>:<net>::/64 (one /48 per site)."""
    return f"2001:db8:{site:x}:{net:x}::{host:x}"


def test_one_ipv6_64_cannot_fill_max_blocks_and_its_newest_block_always_lands() -> None:
    # a scanner hops addresses in its own /64 (it owns 2^64 of them), each hop earning a block: the
    # control, without the bound, shows the attack: max_blocks fill and the C&C that comes next is
    # refused. With it, the /64 holds at most max_blocks_per_64; each new block there lifts the oldest
    def flood(j: Judge) -> list[str]:
        decisions = [j.add(ev(float(i), _v6(1, 1 + i), CRITICAL, 1.0)) for i in range(40)]
        return [d.action for d in decisions]

    control = judge(**{"judge.max_blocks": 16, "judge.max_blocks_per_64": 1_000})
    assert flood(control).count("block") == 16
    refused = control.add(ev(50.0, "203.0.113.66", CRITICAL, 1.0))
    assert refused.action == "alert" and "judge.max_blocks" in refused.reason

    j = judge(**{"judge.max_blocks": 16, "judge.max_blocks_per_64": 4})
    for i in range(40):
        d = j.add(ev(float(i), _v6(1, 1 + i), CRITICAL, 1.0))
        assert d.action == "block"
        assert d.lifted == ((_v6(1, 1 + i - 4),) if i >= 4 else ())  # the /64's oldest
        assert sorted(j.blocked()) == sorted(_v6(1, 1 + k) for k in range(max(0, i - 3), i + 1))
    assert j.add(ev(50.0, "203.0.113.66", CRITICAL, 1.0)).action == "block"  # room for the C&C
    # a C&C in the /64 its own scanner filled first is still blocked: the newest evidence wins
    d = j.add(ev(51.0, _v6(1, 0xC2), CRITICAL, 1.0))
    assert d.action == "block" and d.lifted == (_v6(1, 37),)
    assert len(j.blocked()) == 5


def test_a_48_holds_sixteen_times_a_64_and_lifting_one_makes_room_in_both() -> None:
    j = judge(**{"judge.max_blocks": 1_000, "judge.max_blocks_per_64": 2})
    lifted: list[str] = []
    for i in range(40):  # one address in each of 40 /64s of one /48
        d = j.add(ev(float(i), _v6(i, 1), CRITICAL, 1.0))
        assert d.action == "block"
        lifted += d.lifted
    assert len(j.blocked()) == 32 and lifted == [_v6(i, 1) for i in range(8)]  # 16 x 2 in the /48
    # another /48 of the same owner is another site: not bounded with this one
    assert all(j.add(ev(50.0 + i, _v6(i, 1, site=1), CRITICAL, 1.0)).lifted == () for i in range(10))
    # a /64 at its bound inside a full /48: the /64's oldest goes, which is room in the /48 too
    d = j.add(ev(70.0, _v6(39, 2), CRITICAL, 1.0))
    assert d.lifted == (_v6(8, 1),)  # its /64 had one block: the /48 was full, its oldest goes ...
    j2 = judge(**{"judge.max_blocks": 1_000, "judge.max_blocks_per_64": 2})
    for i in range(16):
        j2.add(ev(float(i), _v6(i, 1), CRITICAL, 1.0))
        j2.add(ev(float(i), _v6(i, 2), CRITICAL, 1.0))
    d = j2.add(ev(20.0, _v6(3, 3), CRITICAL, 1.0))
    assert d.lifted == (_v6(3, 1),) and len(j2.blocked()) == 32  # ... one lift serves both


def test_blocks_an_admin_made_are_never_lifted_and_ipv4_is_not_bounded_by_network() -> None:
    j = judge(**{"judge.max_blocks_per_64": 2})
    for h in (1, 2, 3):
        j.restore(_v6(1, h), float("inf"))  # an admin's (or the store's): not counted, never lifted
    decisions = [j.add(ev(float(i), _v6(1, 10 + i), CRITICAL, 1.0)) for i in range(3)]
    assert [d.lifted for d in decisions] == [(), (), (_v6(1, 10),)]
    assert all(j.is_blocked(_v6(1, h), 10.0) for h in (1, 2, 3))
    # an admin's block of an address the judge had blocked makes it the admin's: never lifted
    j.restore(_v6(1, 11), float("inf"))
    assert [j.add(ev(5.0 + i, _v6(1, 20 + i), CRITICAL, 1.0)).lifted for i in range(2)] == [(), (_v6(1, 12),)]
    assert j.is_blocked(_v6(1, 11), 10.0)
    v4 = [j.add(ev(float(i), f"198.51.100.{i}", CRITICAL, 1.0)) for i in range(1, 20)]
    assert all(d.action == "block" and d.lifted == () for d in v4)


def test_the_network_lists_follow_expiry_unblock_and_reload() -> None:
    j = judge(**{"judge.max_blocks_per_64": 2})
    j.add(ev(0.0, _v6(1, 1), CRITICAL, 1.0))
    j.add(ev(1.0, _v6(1, 2), CRITICAL, 1.0))
    j.forget(_v6(1, 2))  # an admin unblocked it: room in its /64
    assert j.add(ev(2.0, _v6(1, 3), CRITICAL, 1.0)).lifted == ()
    assert sorted(j.expired(1e9)) == sorted([_v6(1, 1), _v6(1, 3)])
    assert j._by_net == {} and j._nets_of == {}  # nothing left behind
    j.add(ev(1e9, _v6(1, 4), CRITICAL, 1.0))
    j.add(ev(1e9, _v6(1, 5), CRITICAL, 1.0))
    reloaded = judge(**{"judge.max_blocks_per_64": 2})
    reloaded.take_state(j)
    assert reloaded.add(ev(1e9 + 1, _v6(1, 6), CRITICAL, 1.0)).lifted == (_v6(1, 4),)


def test_findings_per_window_are_bounded_and_the_score_kept_as_they_change() -> None:
    # the list is bounded (what explain shows); findings past it still add to the score
    j = judge(**{"judge.max_findings": 4, "judge.threshold": 100.0})
    for i in range(10):
        d = j.add(ev(float(i), key=f"k{i}", level=HIGH, conf=0.5))
    assert d.score == pytest.approx(10 * 0.4) and len(j._windows["203.0.113.9"].findings) == 4
    d = j.add(ev(11.0, key="k0", level=CRITICAL, conf=1.0))  # a listed finding grows: the sum follows
    assert d.score == pytest.approx(9 * 0.4 + 1.0)


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


def test_a_block_that_ran_out_and_is_made_again_is_the_newest_never_lifted_by_itself() -> None:
    # found by review: evidence at or after a block's end, before the engine's expiry pass took it
    # out, blocked the address again; its old entry was still the /64's oldest, so the new block
    # lifted itself (the judge said blocked, the table and firewall passed it) or, renewed in place,
    # kept its old rank and went first at the next lift
    j = judge(**{"judge.max_blocks_per_64": 3, "judge.block_duration": 100.0})
    for h in (1, 2, 3):
        j.add(ev(float(h), _v6(1, h), CRITICAL, 1.0))
    d = j.add(ev(101.0, _v6(1, 1), CRITICAL, 1.0))  # its block ended at 101: not expired yet
    assert d.action == "block" and d.lifted == ()
    assert j.is_blocked(_v6(1, 1), 102.0)
    assert j.add(ev(103.0, _v6(1, 4), CRITICAL, 1.0)).lifted == (_v6(1, 2),)  # the oldest now


def test_ipv6_addresses_that_stand_for_ipv4_hosts_are_not_bounded_by_network() -> None:
    # behind NAT64 every IPv4 server is in 64:ff9b::/96: one /64 for the whole IPv4 Internet
    j = judge(**{"judge.max_blocks_per_64": 2})
    for addr in ("64:ff9b::c633:6401", "64:ff9b::c633:6402", "64:ff9b::c633:6403",
                 "64:ff9b:1::c633:6404", "64:ff9b:1::c633:6405", "64:ff9b:1::c633:6406",
                 "2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001:0:4136:e378:8000:63bf:3fff:fdd3",
                 "2001:0:4136:e378:8000:63bf:3fff:fdd4"):  # NAT64 (RFC 6052, RFC 8215), Teredo
        assert j.add(ev(1.0, addr, CRITICAL, 1.0)).lifted == ()
    assert len(j.blocked()) == 9


def test_a_reload_that_lowers_the_bound_brings_a_network_down_to_it() -> None:
    j = judge(**{"judge.max_blocks_per_64": 8})
    for i in range(8):
        j.add(ev(float(i), _v6(1, 1 + i), CRITICAL, 1.0))
    lowered = judge(**{"judge.max_blocks_per_64": 2})
    lowered.take_state(j)
    d = lowered.add(ev(10.0, _v6(1, 100), CRITICAL, 1.0))
    assert d.lifted == tuple(_v6(1, 1 + i) for i in range(7))  # the 7 oldest: room for one more
    assert sorted(lowered.blocked()) == sorted([_v6(1, 8), _v6(1, 100)])


def test_a_scanner_hopping_its_ipv6_64_holds_four_blocks_not_all_of_them(tmp_path: Path) -> None:
    # the whole chain, from packets: 30 addresses of one /64 each scan a LAN host (SYN, answered by
    # RST), each earns a port scan block; with judge.max_blocks_per_64 4, each block past the
    # fourth lifts the oldest: the judge says so (an Unblock by "judge") and the flow table passes
    # the lifted address again
    from slipsq.detect.portscan import PortScan
    from slipsq.engine import Engine
    from slipsq.runmode import Offline
    from slipsq.sources.pcap import replay_capture
    from tests.flowgen import Recorder, config
    from tests.helpers import ACK, RST, SYN, eth, tcp, write_pcap

    victim, records, t = "2001:db8:1::10", [], 1_700_000_000.0
    for host in range(1, 31):
        src = f"2001:db8:bad:1::{host:x}"
        for port in range(1, 101):
            records.append((t, eth(tcp(src, 40000, victim, port, SYN))))
            records.append((t + 0.001, eth(tcp(victim, port, src, 40000, RST | ACK))))
            t += 0.01
    cap = write_pcap(tmp_path / "hop.pcap", records)
    rec = Recorder()
    run = Offline(Engine(config([PortScan], **{"judge.max_blocks_per_64": 4}), detectors=[PortScan]), [rec])
    replay_capture(run, cap)
    run.finish()
    scanners = [f"2001:db8:bad:1::{h:x}" for h in range(1, 31)]
    assert [ip for _, ip, _, _ in rec.blocks] == scanners  # each blocked once, in order
    assert [ip for _, ip, _ in rec.unblocks] == scanners[:26]  # the oldest, one per new block
    assert all("judge.max_blocks_per_64" in why for _, _, why in rec.unblocks)
    table = run.engine.table
    assert [ip for ip in scanners if table.is_blocked(ip)] == scanners[26:]
