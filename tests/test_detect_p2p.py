"""P2P awareness: a host that talks to a swarm is recognised, its chatter with peers never blocks,
and a C&C beacon from the same host (or a scan that looks like a swarm) is still judged."""

from __future__ import annotations

import random

from flowgen import T0, beacon, both_twins, config, flow, run, sort_flows

from slipsq.detect.beacon import Beacon
from slipsq.detect.longconn import LongConnection
from slipsq.detect.p2p import P2P
from slipsq.detect.portscan import PortScan

HOST, C2 = "192.168.1.40", "203.0.113.66"

implementation = both_twins("slipsq.detect._p2p")  # every test on the readable (py) and compiled (c) path


def swarm(n_peers: int = 30, minutes: int = 20, seed: int = 3, host: str = HOST) -> list:  # type: ignore[type-arg]
    """uTP keep-alives every ~61 s to each peer (each its own one-datagram-each-way flow)."""
    rng = random.Random(seed)
    flows = []
    for i in range(n_peers):
        peer, port, t0 = f"85.{i}.{rng.randrange(255)}.7", rng.randrange(10000, 65000), T0 + rng.uniform(0, 60)
        flows += [flow(t0 + k * 61 + rng.uniform(0, 0.3), host, peer, port, "udp", sport=51413, sbytes=74,
                       dbytes=74, dur=0.05) for k in range(minutes)]
    return flows


def test_swarm_keepalives_are_one_low_line_and_block_no_one() -> None:
    rec, _ = run([P2P, Beacon, LongConnection], sort_flows(swarm()))
    assert rec.blocked_ips == []
    p2p = rec.by("p2p")
    assert len(p2p) == 1 and p2p[0].evidence.offender == HOST and not p2p[0].evidence.may_block
    chatter = rec.by("beacon")
    assert len(chatter) == 1 and chatter[0].evidence.threat_level == 0.2
    assert chatter[0].evidence.key.startswith("p2p-chatter:") and not chatter[0].evidence.may_block


def test_without_p2p_awareness_the_same_day_blocks_peers() -> None:
    rec, _ = run([Beacon], sort_flows(swarm()))  # what it was before: every peer a "C&C"
    assert len(rec.blocked_ips) > 10


def test_a_cnc_beacon_from_a_p2p_host_is_still_blocked() -> None:
    cnc = beacon(HOST, C2, 443, 10.0, 60, start=T0 + 30)
    rec, _ = run([P2P, Beacon], sort_flows(swarm(), cnc))
    assert rec.blocked_ips == [C2]


def test_a_beacon_to_a_known_cnc_port_from_a_p2p_host_is_still_blocked() -> None:
    """QakBot's beacon to an address on 2222 from a host that also torrents was "p2p-chatter" (low,
    never blocked; a hunt, 2026-12-07): the widespread families' C&C ports are no swarm's."""
    cnc = beacon(HOST, C2, 2222, 60.0, 40, start=T0 + 30, jitter=0.2)
    rec, _ = run([P2P, Beacon], sort_flows(swarm(minutes=45), cnc))
    assert rec.blocked_ips == [C2]
    assert not any(a.evidence.dst_ip == C2 and a.evidence.key.startswith("p2p-chatter:") for a in rec.by("beacon"))


def test_a_beacon_to_an_unnamed_high_port_from_an_ordinary_host_blocks() -> None:
    rec, _ = run([P2P, Beacon], beacon("192.168.1.41", C2, 40000, 10.0, 60))
    assert rec.blocked_ips == [C2] and rec.by("p2p") == []


def test_a_scan_of_one_high_port_is_not_a_swarm() -> None:
    # answered probes to 50 hosts on the same port: one port, not a swarm's random ports
    probes = [flow(T0 + i, HOST, f"198.51.100.{i}", 5555, dbytes=60) for i in range(50)]
    rec, eng = run([P2P, PortScan], probes)
    assert rec.by("p2p") == [] and not eng.engine.ctx.peers.is_p2p(HOST, T0 + 60)


def test_unanswered_probes_are_no_peers() -> None:
    probes = [flow(T0 + i, HOST, f"198.51.100.{i}", 20000 + i, dbytes=0) for i in range(50)]
    _, eng = run([P2P], probes)
    assert not eng.engine.ctx.peers.is_p2p(HOST, T0 + 60)


def test_inbound_peers_make_a_p2p_host_and_are_peers_on_any_port() -> None:
    inbound = [flow(T0 + i, f"93.1.{i}.9", HOST, 51413, sport=40000 + i * 7, dbytes=300) for i in range(12)]
    _, eng = run([P2P], inbound)
    peers = eng.engine.ctx.peers
    assert peers.is_p2p(HOST, T0 + 20)
    assert peers.is_peer(HOST, "93.1.3.9", 443, T0 + 20, {})  # it connected in: a peer whatever the port
    assert not peers.is_peer(HOST, C2, 443, T0 + 20, {})  # a server on 443 is no peer
    assert not peers.is_p2p(HOST, T0 + 20 + 3601)  # forgotten an hour after the last sign


def test_forged_swarms_stay_within_the_total_and_a_real_swarm_is_still_recognised() -> None:
    """Hosts invented on the LAN, each talking to its own 'peers', fill no more than p2p.max_total_peers;
    the real P2P host, active last, keeps its peers and is still recognised (its chatter never blocks)."""
    cfg = config([P2P, Beacon], p2p__max_total_peers=3000)
    forged = [flow(T0 + i * 0.001, f"10.1.{i // 200}.{i % 200 + 1}", f"77.{j}.{i % 250}.9", 20000 + j, "udp",
                   sbytes=74, dbytes=74, dur=0.01) for i in range(1000) for j in range(20)]
    later = [flow(f.start + 30, f.saddr, f.daddr, f.dport, "udp", sport=51413, sbytes=74, dbytes=74, dur=0.05)
             for f in swarm(minutes=15)]
    rec, eng = run([P2P, Beacon], sort_flows(forged, later), cfg=cfg)
    det = next(d for d in eng.engine.detectors if isinstance(d, P2P))
    assert det.recent.total <= 3000 and det.recent.total == sum(len(m) for m in det.recent.maps.values())
    assert any(a.evidence.offender == HOST for a in rec.by("p2p"))
    assert rec.blocked_ips == []


def test_a_swarm_port_is_a_clients_default_or_one_the_host_listens_on() -> None:
    """Found by a hunt (2026-12-07): an Ethereum staking node's discovery and dials to half-gone
    nodes on 30303 and 9000 were horizontal scans that blocked the node. A port the P2P host listens
    on itself (peers dial it there; its swarm UDP leaves from it) is its swarm's; any other is not."""
    from slipsq.detect.peers import Peers

    p = Peers(memory=3600.0)
    node = "192.168.1.60"
    p.mark(node, T0)
    p.listens(node, 30303, T0)
    assert p.swarm_port(node, 51413, T0) and p.swarm_port(node, 30303, T0 + 100)
    assert not p.swarm_port(node, 37215, T0)  # an IoT worm's port: no peer ever dialled it there
    assert not p.swarm_port(node, 30303, T0 + 7200)  # forgotten after `memory`
    p.listens(node, 8080, T0)
    assert not p.swarm_port(node, 8080, T0)  # a service port is never a swarm's
    assert not p.swarm_port("192.168.1.61", 30303, T0)  # not a P2P host


def test_an_ethereum_staking_node_is_no_scanner() -> None:
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import tempfile

    import detection

    from tools import gen_corpus

    with tempfile.TemporaryDirectory() as d:
        r = detection.run_scenario(gen_corpus.BY_NAME["eth-staking"], Path(d), None)
    assert r.blocked == [], [a["description"] for a in r.blocks]
    scans = [a for a in r.alerts if a["detector"] == "portscan" and "30303/udp" in a["description"]]
    assert scans and all("its swarm lives on this port" in a["description"] for a in scans)
