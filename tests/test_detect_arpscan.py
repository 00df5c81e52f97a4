"""ARP scan detector: a who-has sweep in a generated capture, through the real decoder and flow table."""

from __future__ import annotations

from pathlib import Path

from flowgen import DATA, T0, config, my_detectors, replay_pcap, run
from helpers import arp, write_pcap

from slipsq.detect.arpscan import ArpScan
from slipsq.flow import AppEvent

MAC = "02:00:00:00:00:01"


def who_has(ts: float, src_ip: str, dst_ip: str, mac: str = MAC, op: int = 1) -> AppEvent:
    return AppEvent(ts, "arp", src_ip, 0, dst_ip, 0, "arp",
                    {"op": op, "src_mac": mac, "src_ip": src_ip, "dst_ip": dst_ip})


def test_sweep_of_a_subnet_is_reported_low_and_blocks_no_one() -> None:
    """Fing's "Scan network" and LocalSend's discovery sweep the /24 like this (both blocked the phone
    they ran on, 2026-12-07): by default a sweep is a low finding that never blocks."""
    events = [who_has(T0 + i * 0.05, "192.168.1.66", f"192.168.1.{i}") for i in range(1, 255)]
    rec, _ = run([ArpScan], events=events)
    alerts = rec.by("arpscan")
    assert alerts[0].evidence.description.startswith("ARP scan from 192.168.1.66 (02:00:00:00:00:01): "
                                                     "who-has for 20 addresses")
    assert {a.evidence.threat_level for a in alerts} == {0.2}
    assert not any(a.evidence.may_block for a in alerts)
    assert "arpscan.may_block" in alerts[-1].evidence.description
    assert rec.blocked_ips == []
    assert len(alerts) <= 5


def test_a_sweep_repeated_every_two_minutes_is_reported_once_a_window() -> None:
    """Home Assistant's Nmap Tracker sweeps the /24 every 120 s: each sweep was a new burst with five
    reports of its own, 150 alerts an hour of the same finding. A burst in the window of the sender's
    last report is reported only past that report; the next window reports afresh."""
    sweeps = [who_has(T0 + k * 120 + i * 0.004, "192.168.1.5", f"192.168.1.{i}") for k in range(45)
              for i in range(1, 255) if i != 5]
    rec, _ = run([ArpScan], events=sweeps)
    per_window: dict[int, int] = {}
    for a in rec.by("arpscan"):
        per_window[int(a.evidence.ts // 3600)] = per_window.get(int(a.evidence.ts // 3600), 0) + 1
    assert len(per_window) == 2 and all(1 <= n <= 5 for n in per_window.values()), per_window
    bigger = [who_has(T0 + 1000 + i * 0.004, "192.168.1.5", f"192.168.{2 + i // 250}.{1 + i % 250}")
              for i in range(600)]  # a wider sweep in the same window: past the last report
    rec, _ = run([ArpScan], events=sorted(sweeps[:254 * 5] + bigger, key=lambda e: e.ts))
    late = [a.evidence.description for a in rec.by("arpscan") if a.evidence.ts > T0 + 1000]
    assert late and "who-has for 400 addresses" in late[0]  # twice the last report (200)


def test_with_may_block_a_sweep_of_a_subnet_blocks_the_sender() -> None:
    events = [who_has(T0 + i * 0.05, "192.168.1.66", f"192.168.1.{i}") for i in range(1, 255)]
    rec, _ = run([ArpScan], events=events, cfg=config([ArpScan], **{"arpscan.may_block": True}))
    alerts = rec.by("arpscan")
    assert alerts[-1].evidence.threat_level == 1.0
    assert rec.blocked_ips == ["192.168.1.66"]


def test_slow_or_repeated_requests_are_normal() -> None:
    slow = [who_has(T0 + i * 4.0, "192.168.1.5", f"192.168.1.{i}") for i in range(1, 60)]  # 15 a minute
    chatty = [who_has(T0 + i * 0.5, "192.168.1.6", f"192.168.1.{1 + i % 5}") for i in range(500)]
    gratuitous = [who_has(T0 + i, f"192.168.1.{100 + i}", f"192.168.1.{100 + i}",
                          mac=f"02:00:00:00:01:{i:02x}") for i in range(50)]
    replies = [who_has(T0 + i * 0.01, "192.168.1.7", f"192.168.1.{i}", op=2) for i in range(1, 200)]
    rec, _ = run([ArpScan], events=sorted(slow + chatty + gratuitous + replies, key=lambda e: e.ts))
    assert rec.by("arpscan") == []


def test_probes_from_zero_address_never_block() -> None:
    events = [who_has(T0 + i * 0.05, "0.0.0.0", f"10.0.0.{i}") for i in range(1, 255)]
    rec, _ = run([ArpScan], events=events)
    assert rec.by("arpscan") and not any(a.evidence.may_block for a in rec.by("arpscan"))
    assert rec.blocked_ips == []


def test_thresholds_are_configurable() -> None:
    cfg = config([ArpScan], **{"arpscan.min_targets": 5, "arpscan.period": 10.0})
    events = [who_has(T0 + i, "192.168.1.66", f"192.168.1.{i}") for i in range(1, 7)]
    rec, _ = run([ArpScan], events=events, cfg=cfg)
    assert rec.by("arpscan")


def test_arp_sweep_in_a_generated_capture(tmp_path: Path) -> None:
    frames = [(T0 + i * 0.02, arp(1, src_ip="10.1.1.66", dst_ip=f"10.1.1.{i}")) for i in range(1, 255)]
    rec = replay_pcap(write_pcap(tmp_path / "arpscan.pcap", frames), [ArpScan],
                      cfg=config([ArpScan], **{"arpscan.may_block": True}))
    assert rec.blocked_ips == ["10.1.1.66"]


def test_arp_scan_capture_end_to_end() -> None:
    rec = replay_pcap(DATA / "arp-scan.pcap", my_detectors())
    assert rec.blocked_ips == []  # reported, not blocked (arpscan.may_block)
    assert {a.evidence.offender for a in rec.seen} == {"192.168.1.99"}
    cfg = config(my_detectors(), **{"arpscan.may_block": True})
    assert replay_pcap(DATA / "arp-scan.pcap", my_detectors(), cfg=cfg).blocked_ips == ["192.168.1.99"]


def test_a_flood_of_forged_senders_stays_within_the_total_and_a_real_sweep_is_still_seen() -> None:
    cfg = config([ArpScan], arpscan__max_total_targets=5000, arpscan__may_block=True)
    flood = [who_has(T0 + i * 1e-4, f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}", f"10.99.{j}.{i % 250}",
                     mac=f"02:00:00:{i // 65536 % 256:02x}:{i // 256 % 256:02x}:{i % 256:02x}")
             for i in range(2000) for j in range(10)]
    sweep = [who_has(T0 + 2.5 + i * 0.01, "192.168.1.66", f"192.168.1.{i}") for i in range(1, 255)]
    rec, eng = run([ArpScan], events=flood + sweep, cfg=cfg)
    det = next(d for d in eng.engine.detectors if isinstance(d, ArpScan))
    assert det.targets.total <= 5000 and det.targets.total == sum(len(m) for m in det.targets.maps.values())
    assert "192.168.1.66" in rec.blocked_ips
