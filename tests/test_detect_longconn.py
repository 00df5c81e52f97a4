"""Long connection detector: reported once per connection, never a block, only to non-local hosts."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgen import T0, config, flow, read_binetflow, run

from slipsq.detect.longconn import LongConnection

HOST, REMOTE = "192.168.1.20", "198.51.100.80"


def test_report_then_close_is_one_evidence_and_never_blocks() -> None:
    report1 = flow(T0, HOST, REMOTE, 4444, dur=1800, closed_by="active")
    report2 = flow(T0, HOST, REMOTE, 4444, dur=2100, closed_by="active")
    closed = flow(T0, HOST, REMOTE, 4444, dur=7200)
    others = [flow(T0 + 10 + i, HOST, REMOTE, 4444, dur=1600, sport=41000 + i) for i in range(8)]
    rec, _ = run([LongConnection], [report1, report2, closed, *others])
    alerts = rec.by("longconn")
    assert len(alerts) == 9  # once per connection
    first = alerts[0].evidence
    assert first.offender == REMOTE and not first.may_block and first.score == 0.2
    assert "30 min (still open)" in first.description
    assert rec.blocked_ips == []
    assert max(a.decision.score for a in alerts) == 0.2  # one key per remote service: counted once


def test_short_local_and_allowed_connections_are_quiet() -> None:
    flows = [flow(T0, HOST, REMOTE, 443, dur=1499),  # just under 25 min
             flow(T0, HOST, "192.168.1.1", 22, dur=9000),  # local
             flow(T0, HOST, "203.0.113.7", 443, dur=9000)]  # allow-listed
    cfg = config([LongConnection], **{"allow.ips": ["203.0.113.0/24"]})
    rec, _ = run([LongConnection], flows, cfg=cfg)
    assert rec.by("longconn") == []


def test_threshold_is_configurable() -> None:
    cfg = config([LongConnection], **{"longconn.min_duration": 60.0})
    rec, _ = run([LongConnection], [flow(T0, HOST, REMOTE, 443, dur=61)], cfg=cfg)
    assert len(rec.by("longconn")) == 1


@pytest.mark.shared
def test_normal_day_long_connections_never_block(shared_data: Path) -> None:
    rec, _ = run([LongConnection], read_binetflow(shared_data / "flows/ctu-normal-2013-10-21.binetflow"))
    assert rec.blocked_ips == []
    alerts = rec.by("longconn")
    # the CTU user keeps ssh, Jabber and HTTP(S) sessions open for hours: 7 connections, each once
    assert 1 <= len(alerts) <= 10 and not any(a.evidence.may_block for a in alerts)


def test_consecutive_records_of_one_connection_are_one_and_udp_is_off_by_default() -> None:
    hourly = [flow(T0 + h * 3600, HOST, REMOTE, 5222, dur=3600, sport=50000) for h in range(4)]  # Argus style
    again = flow(T0 + 5 * 3600, HOST, REMOTE, 5222, dur=2000, sport=50000)  # port reused after a pause
    ntp = flow(T0, HOST, REMOTE, 123, "udp", dur=3600)
    rec, _ = run([LongConnection], [*hourly, again, ntp])
    assert [int((a.evidence.ts - T0) // 3600) for a in rec.by("longconn")] == [1, 5]
    cfg = config([LongConnection], **{"longconn.protocols": ["tcp", "udp"]})
    rec, _ = run([LongConnection], [ntp], cfg=cfg)
    assert len(rec.by("longconn")) == 1
