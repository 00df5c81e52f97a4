"""False positives of the behavioural detectors (beacon, scans, brute force, ARP, long connections,
threat intelligence) on real normal traffic, and what they find in a real infected host's capture."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgen import my_detectors, read_binetflow, replay_pcap, run

pytestmark = pytest.mark.shared


def test_a_normal_day_blocks_no_one(shared_data: Path) -> None:
    rec, eng = run(my_detectors(), read_binetflow(shared_data / "flows/ctu-normal-2013-10-21.binetflow"))
    assert eng.engine.counters.flows > 2000
    assert rec.blocked_ips == []
    # what remains: long ssh/Jabber/HTTP sessions, reported, never blocking
    assert {a.evidence.detector for a in rec.seen} <= {"longconn"}
    assert not any(a.evidence.may_block for a in rec.seen)


def test_infected_host_capture(shared_data: Path) -> None:
    rec = replay_pcap(shared_data / "pcaps/test7-malicious.pcap", my_detectors())
    # the infected Windows host scans telnet and 8080 on the Internet; nothing else is accused
    assert {a.evidence.offender for a in rec.seen} == {"192.168.2.16"}
    assert rec.blocked_ips == ["192.168.2.16"]
    assert {a.evidence.label for a in rec.seen} == {"horizontal"}


def test_the_c2_down_detectors_on_a_normal_day(shared_data: Path) -> None:
    # reconnection storms, unusual ports, exfiltration, DGA: no alert at all (the file has no DNS, so
    # unusual ports are judged for every client: one note, a 1 s, 176 kB transfer to a bare address)
    from flowgen import config

    from slipsq.detect.dga import DGA
    from slipsq.detect.exfil import Exfil
    from slipsq.detect.reconnect import Reconnect
    from slipsq.detect.unknownport import UnknownPort

    flows = read_binetflow(shared_data / "flows/ctu-normal-2013-10-21.binetflow")
    dets = [Reconnect, UnknownPort, Exfil, DGA]
    rec, _ = run(dets, flows)
    assert rec.seen == []
    rec, _ = run(dets, flows, cfg=config(dets, unknownport__need_dns=False))
    assert rec.blocked_ips == [] and [a.evidence.detector for a in rec.seen] == ["unknownport"]
