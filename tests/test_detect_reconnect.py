"""Reconnection storms: one host hammering one server:port that refuses or ignores it (flows, and
packets through the compiled table); the guards: a few retries, a server in use, a forged storm,
a LAN printer, an inbound storm, a client that is not ours. Every test runs on the readable twins
(reconnect.Intake, inuse.ServersInUse) and on the compiled ones (_reconnect.Intake, _portscan.Servers)."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgen import T0, both_twins, config, flow, replay_pcap, run, write_scenario

from slipsq.detect.portscan import PortScan
from slipsq.detect.reconnect import Reconnect
from slipsq.flow import Flow
from tools.gen_scenarios import reconnection_storm
from tools.gen_sessions import tls_session

implementation = both_twins("slipsq.detect._reconnect")  # the intake and servers in use: readable (py), compiled (c)

HOST, CC = "192.168.1.66", "203.0.113.50"
EPOCH = 1_717_243_200.0  # 2024-06-01 12:00 UTC, an hour boundary


def storm(n: int, src: str = HOST, dst: str = CC, port: int = 1604, state: str = "S_RA", start: float = T0,
          step: float = 0.66) -> list[Flow]:
    return [flow(start + i * step, src, dst, port, dur=0.03, sbytes=60, dbytes=40 if "R" in state else 0,
                 dpkts=1 if "R" in state else 0, state=state, sport=40000 + i, closed_by="rst")
            for i in range(n)]


def test_a_sustained_rejected_storm_blocks_the_server() -> None:
    rec, _ = run([Reconnect], storm(720))
    alerts = rec.by("reconnect")
    assert rec.blocked_ips == [CC]
    first = alerts[0].evidence
    assert first.description.startswith(f"reconnection storm from {HOST} to {CC}:1604/tcp: 10 connections "
                                         "rejected or unanswered in 6s, one every 0.7s")
    assert first.threat_level == 0.5 and first.confidence == 0.525 and first.offender == CC
    blocking = next(a for a in alerts if a.decision.action == "block").evidence
    assert blocking.threat_level == 1.0 and blocking.confidence == 1.0
    assert blocking.ts - T0 == pytest.approx(199 * 0.66)  # the 200th attempt, ~2 minutes in
    assert len(alerts) <= 10  # first, doublings and threat rises only
    assert {a.evidence.key for a in alerts} == {f"reconnect:{CC}:1604/tcp"}  # against the server: no client


def test_a_scan_repeated_on_a_schedule_is_no_storm_on_every_port() -> None:
    """Home Assistant's Nmap Tracker looks over the top 100 ports of each LAN host every 120 s: after
    ten rounds every closed port of the gateway was a storm, 383 alerts in 25 minutes. A client that
    failed on SCAN_PORTS ports of one local server in the window is scanning it: its storms there are
    said only from 5 T on, and a late flow of the last window counts in the current one. Toward the
    Internet every port's storm counts (a red team's and a review's): a RAT cycling through ten ports
    of its refusing C&C, or four behind ten decoy SYNs, still blocks."""
    gw = "192.168.1.1"
    rounds = [f for k in range(30) for p in range(1, 101)
              for f in storm(1, dst=gw, port=p, start=T0 + k * 120 + p * 0.002)]
    ordered = sorted(rounds, key=lambda f: f.start)
    rec, _ = run([Reconnect], ordered)
    assert rec.by("reconnect") == []
    late = [f for i, f in enumerate(ordered) for f in ([f] if i % 9 or i < 1000 else [ordered[i - 900], f])]
    rec, _ = run([Reconnect], late)  # a flow of an earlier round now and then, as the idle timer emits them
    assert rec.by("reconnect") == []
    ports = (80, 443, 447, 449, 4443, 4444, 5555, 8080, 8443, 9001)
    rotating = [f for k in range(45) for i, p in enumerate(ports) for f in storm(1, port=p, start=T0 + k * 80 + i * 8)]
    rec, _ = run([Reconnect], sorted(rotating, key=lambda f: f.start))
    assert rec.blocked_ips == [CC] and len({a.evidence.dst_port for a in rec.by("reconnect")}) == 10
    decoys = [f for p in range(2000, 2010) for f in storm(1, port=p, start=T0 + p * 0.001)]
    four = [f for k in range(20) for i, p in enumerate((443, 8443, 8080, 4444))
            for f in storm(1, port=p, start=T0 + 60 + k * 120 + i * 30)]
    rec, _ = run([Reconnect], sorted(decoys + four, key=lambda f: f.start))
    assert rec.blocked_ips == [CC]


def test_unanswered_syns_count_too() -> None:
    rec, _ = run([Reconnect], storm(250, state="S_"))
    assert rec.blocked_ips == [CC]


def test_a_marginal_storm_alerts_only() -> None:
    rec, _ = run([Reconnect], storm(60))  # 60 refusals in 40 s: high x 0.65 = 0.52
    assert rec.by("reconnect") and rec.blocked_ips == []


def test_a_few_retries_say_nothing() -> None:
    rec, _ = run([Reconnect], storm(9, step=5.0))
    assert rec.seen == []


def test_a_server_in_use_is_never_blocked_on_a_storm() -> None:
    # another host of ours uses the server (answered, HTTPS): a storm against it (maybe forged) alerts only
    used = flow(T0 - 100, "192.168.1.10", CC, 443, dur=20)
    rec, _ = run([Reconnect], [used, *storm(300, start=T0)])
    alerts = rec.by("reconnect")
    assert alerts and rec.blocked_ips == []
    assert not any(a.evidence.may_block for a in alerts)
    assert "served local hosts in the last 86400s" in alerts[-1].evidence.description


def test_an_outage_of_a_service_in_use_never_blocks_it() -> None:
    """A camera's vendor broker answers, then refuses for 2 h while the camera retries every 10 s: its last
    answer is over the judge's hour old when the storm is judged, and it was blocked for 4 h once
    (2026-12-07). A day's memory covers the outage; a server that answered nobody for longer is fair game."""
    cam = "192.168.1.31"
    session = flow(T0 - 1800, cam, CC, 8883, dur=1800)
    retries = storm(720, src=cam, port=8883, start=T0 + 10, step=10.0)
    rec, _ = run([Reconnect], [session, *retries])
    alerts = rec.by("reconnect")
    assert alerts and rec.blocked_ips == [] and not any(a.evidence.may_block for a in alerts)
    cfg = config([Reconnect], reconnect__outage_memory=3600.0)  # the old memory: the judge window
    rec, _ = run([Reconnect], [session, *retries], cfg=cfg)
    assert rec.blocked_ips == [CC]


def test_in_use_is_shared_with_portscan() -> None:
    # one table: a server portscan learned about is in use for the storm detector too (and vice versa)
    used = flow(T0 - 100, "192.168.1.10", CC, 443, dur=20)
    rec, eng = run([PortScan, Reconnect], [used, *storm(300, start=T0)])
    assert rec.blocked_ips == []
    assert eng.engine.ctx.servers.in_use(CC, T0, 3600)


def test_lan_printer_and_inbound_storms() -> None:
    printer = storm(400, dst="192.168.1.40", port=9100)
    rec, _ = run([Reconnect], printer)
    assert rec.by("reconnect") and rec.blocked_ips == []  # reported, both ends private
    assert "both ends local" in rec.by("reconnect")[-1].evidence.description
    inbound = storm(400, src="198.51.100.9", dst="192.168.1.30", port=23)
    rec, _ = run([Reconnect], inbound)
    assert rec.seen == []  # an outside client hammering us is portscan's/bruteforce's business


def test_a_client_that_is_not_ours_never_blocks() -> None:
    rec, _ = run([Reconnect], storm(400, src="198.51.100.9", dst="203.0.113.7"))
    assert rec.by("reconnect") and rec.blocked_ips == []


def test_dns_ports_and_udp_are_skipped() -> None:
    rec, _ = run([Reconnect], storm(400, port=53))
    assert rec.seen == []
    udp = [flow(T0 + i, HOST, CC, 1604, "udp", sbytes=60, dbytes=0, sport=40000 + i) for i in range(300)]
    rec, _ = run([Reconnect], udp)
    assert rec.seen == []


def test_counts_start_afresh_each_window() -> None:
    # 150 in the last minutes of an hour, 150 in the next: never 200 in one window
    flows = storm(150, start=T0 + 3600 - 150 * 0.66 - 1) + storm(150, start=T0 + 3601)
    rec, _ = run([Reconnect], flows)
    assert rec.by("reconnect") and rec.blocked_ips == []


def test_client_option_blocks_the_infected_host() -> None:
    rec, _ = run([Reconnect], storm(300), cfg=config([Reconnect], reconnect__block="client"))
    assert rec.blocked_ips == [HOST]


def test_state_is_bounded() -> None:
    flows = [flow(T0 + i * 0.001, HOST, f"203.0.{i // 250}.{i % 250}", 1604, sbytes=60, dbytes=0, state="S_")
             for i in range(3000)]
    _, eng = run([Reconnect], flows, cfg=config([Reconnect], reconnect__max_tuples=1000))
    det = next(d for d in eng.engine.detectors if isinstance(d, Reconnect))
    assert len(det.storms) == 1000


# --- packets, through the compiled flow table ---------------------------------------------------------

def test_the_real_case_in_packets_blocks(tmp_path: Path) -> None:
    # ~720 connections in 8 minutes, every one SYN -> RST/ACK (the RAT of issue 11)
    pcap = write_scenario(tmp_path / "storm.pcap", reconnection_storm(HOST, CC, 1604, start=EPOCH))
    rec = replay_pcap(pcap, [Reconnect])
    assert rec.blocked_ips == [CC]
    first_block = next(a for a in rec.by("reconnect") if a.decision.action == "block")
    assert first_block.evidence.ts - EPOCH < 150


def test_filtered_storm_in_packets_blocks(tmp_path: Path) -> None:
    pcap = write_scenario(tmp_path / "silent.pcap", reconnection_storm(HOST, CC, 8000, start=EPOCH, count=250,
                                                                       interval=1.0, answer="filtered"))
    assert replay_pcap(pcap, [Reconnect]).blocked_ips == [CC]


def test_forged_storm_at_a_server_in_use_in_packets(tmp_path: Path) -> None:
    # the laptop browses the server; then SYNs "from" a local host hammer its closed port 81
    pcap = write_scenario(tmp_path / "forged.pcap",
                          tls_session("192.168.1.10", CC, "bank.example.com", EPOCH, 500, 40_000, sport=50000),
                          reconnection_storm(HOST, CC, 81, start=EPOCH + 30, count=400, interval=0.2))
    rec = replay_pcap(pcap, [PortScan, Reconnect])
    assert rec.by("reconnect") and rec.blocked_ips == []


def test_a_service_briefly_down_in_packets(tmp_path: Path) -> None:
    pcap = write_scenario(tmp_path / "retry.pcap", reconnection_storm(HOST, CC, 8443, start=EPOCH, count=6,
                                                                      interval=4.0))
    assert replay_pcap(pcap, [Reconnect]).seen == []
