"""Connections to unusual ports without a DNS answer (flows, and packets through the compiled table);
the guards: well-known ports, LAN destinations, DNS-named servers, handshakes without data, P2P
hosts, clients whose DNS is not seen. It is low and never blocks alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgen import T0, config, flow, replay_pcap, run, write_scenario

from slipsq.detect.reconnect import Reconnect
from slipsq.detect.unknownport import UnknownPort
from slipsq.flow import AppEvent, Flow
from tools.gen_sessions import dns_query, tcp_session

HOST, CC, RESOLVER = "192.168.1.66", "203.0.113.50", "192.168.1.1"
EPOCH = 1_717_243_200.0


def answer(ts: float, name: str, ip: str, client: str = HOST) -> AppEvent:
    return AppEvent(ts, "dns", RESOLVER, 53, client, 53000, "udp",
                    {"query": name, "qtype": 1, "answers": [ip], "rcode": 0, "response": True})


SEEN = answer(T0 - 10, "www.example.com", "198.51.100.80")  # the host's DNS crosses us


def conn(ts: float, dst: str = CC, port: int = 5552, src: str = HOST, **kw: object) -> Flow:
    return flow(ts, src, dst, port, **kw)  # type: ignore[arg-type]


def test_a_rat_port_without_dns_alerts_low_and_never_blocks() -> None:
    rec, _ = run([UnknownPort], [conn(T0), conn(T0 + 60), conn(T0 + 120, dbytes=20_000)], [SEEN])
    (a,) = rec.by("unknownport")  # once per (client, server, port) per window
    ev = a.evidence
    assert ev.offender == CC and ev.threat_level == 0.2 and ev.confidence == 0.6 and not ev.may_block
    assert ev.description.startswith(f"connection from {HOST} to unusual port {CC}:5552/tcp without a DNS answer")
    assert rec.blocked_ips == []


def test_it_adds_to_other_evidence_against_the_server() -> None:
    # a storm against the same server (high, may block) plus this low note: the judge adds them up
    storm = [flow(T0 + i * 0.5, HOST, CC, 1604, dur=0.01, sbytes=60, dbytes=40, dpkts=1, state="S_RA",
                  sport=30000 + i) for i in range(60)]
    rec, _ = run([Reconnect, UnknownPort], [*storm, conn(T0 + 40, dbytes=20_000)], [SEEN])
    note = rec.by("unknownport")[0]
    storm_score = max(a.evidence.score for a in rec.by("reconnect") if a.evidence.ts <= note.evidence.ts)
    assert note.decision.score == pytest.approx(storm_score + 0.2 * 0.8)


def test_guards() -> None:
    flows = [
        conn(T0, port=443), conn(T0, port=8080), conn(T0, port=5228),  # well-known and common ports
        conn(T0, dst="192.168.1.40", port=5552),  # a LAN destination
        conn(T0, dst="198.51.100.80", port=5552),  # DNS named it
        conn(T0, sbytes=200, dbytes=200),  # a handshake, no data
        conn(T0, dbytes=0, state="S_RA"),  # refused: the storm detector's case
        conn(T0, src="198.51.100.9", dst="192.168.1.30", port=5552),  # inbound
        conn(T0, port=50123, sport=22), conn(T0, port=50124, sport=5228),  # a flow seen backwards ("<?>")
    ]
    rec, _ = run([UnknownPort], flows, [SEEN])
    assert rec.seen == []


def test_a_host_whose_dns_is_not_seen_is_not_judged() -> None:
    rec, _ = run([UnknownPort], [conn(T0)])  # no DNS answer to HOST ever crossed us
    assert rec.seen == []
    rec, _ = run([UnknownPort], [conn(T0)], cfg=config([UnknownPort], unknownport__need_dns=False))
    assert len(rec.seen) == 1


def test_a_p2p_host_is_reported_only_up_to_max_servers() -> None:
    peers = [conn(T0 + i, dst=f"203.0.{i // 200}.{i % 200 + 1}", port=6881 + i % 50) for i in range(300)]
    rec, _ = run([UnknownPort], peers, [SEEN])
    assert len(rec.seen) == 4  # unknownport.max_servers; then the host is taken for P2P
    rec, _ = run([UnknownPort], [*peers, conn(T0 + 3700, dst=CC)], [SEEN])
    assert rec.seen[-1].evidence.dst_ip == CC  # a new window judges it afresh


def test_state_is_bounded() -> None:
    flows = [conn(T0 + i * 0.001, src=f"10.{i // 250}.0.{i % 250}") for i in range(2000)]
    _, eng = run([UnknownPort], flows, cfg=config([UnknownPort], unknownport__need_dns=False))
    det = next(d for d in eng.engine.detectors if isinstance(d, UnknownPort))
    assert len(det.clients) <= 65_536 and len(det.clients) == 2000


def test_packets_through_the_compiled_table(tmp_path: Path) -> None:
    pcap = write_scenario(
        tmp_path / "rat.pcap",
        dns_query(HOST, RESOLVER, "update.example.com", "198.51.100.80", EPOCH),
        tcp_session(HOST, "198.51.100.80", 41000, 8443, EPOCH + 1, 800, 5000),  # named, common port
        dns_query(HOST, RESOLVER, "files.example.org", "198.51.100.81", EPOCH + 2, sport=53001),
        tcp_session(HOST, "198.51.100.81", 41001, 5552, EPOCH + 3, 800, 5000),  # named: fine
        tcp_session(HOST, CC, 41002, 5552, EPOCH + 5, 900, 12_000),  # no DNS: reported
    )
    rec = replay_pcap(pcap, [UnknownPort])
    assert [(a.evidence.dst_ip, a.evidence.dst_port) for a in rec.seen] == [(CC, 5552)]
    assert rec.seen[0].evidence.confidence == 0.8 and rec.blocked_ips == []
