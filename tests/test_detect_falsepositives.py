"""False positives of the behavioural detectors (beacon, scans, brute force, ARP, long connections,
threat intelligence) on real normal traffic, and what they find in a real infected host's capture."""

from __future__ import annotations

import pytest
from flowgen import my_detectors, read_binetflow, replay_pcap, run

pytestmark = pytest.mark.shared


def test_a_normal_day_blocks_no_one(shared_data) -> None:  # type: ignore[no-untyped-def]
    rec, eng = run(my_detectors(), read_binetflow(shared_data / "flows/ctu-normal-2013-10-21.binetflow"))
    assert eng.engine.counters.flows > 2000
    assert rec.blocked_ips == []
    # what remains: long ssh/Jabber/HTTP sessions, reported, never blocking
    assert {a.evidence.detector for a in rec.seen} <= {"longconn"}
    assert not any(a.evidence.may_block for a in rec.seen)


def test_infected_host_capture(shared_data) -> None:  # type: ignore[no-untyped-def]
    rec = replay_pcap(shared_data / "pcaps/test7-malicious.pcap", my_detectors())
    # the infected Windows host scans telnet and 8080 on the Internet; nothing else is accused
    assert {a.evidence.offender for a in rec.seen} == {"192.168.2.16"}
    assert rec.blocked_ips == ["192.168.2.16"]
    assert {a.evidence.label for a in rec.seen} == {"horizontal"}
