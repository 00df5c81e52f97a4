"""What the detectors know about peer-to-peer hosts: which local hosts run P2P software (BitTorrent
and the like) and which remote addresses are their peers. The p2p detector fills it from flows;
beacon (and any detector that must not mistake a swarm for a C&C) reads it through ctx.peers.
Data only, bounded, O(1) per question: no I/O, no clock (times are flow times given by the caller).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from slipsq.lru import put

# ports >= 1024 that are services, not P2P listening ports: a beacon to one of these is judged as
# a beacon even from a P2P host (proxies, alternate HTTP(S), XMPP/push, VPN, RDP, common RAT ports).
# The C&C ports of widespread families too (a hunt: QakBot's beacon to an address on 2222 from a host
# that also torrents was "p2p-chatter", low, never blocked): QakBot 2222, 2078, 32100; njRAT 1177,
# 5552; DarkComet 1604; Remcos 2404; Quasar 4782; AsyncRAT 6606, 7707, 8808; Sliver mTLS 8888 is in.
SERVICE_PORTS = frozenset({1080, 1177, 1194, 1604, 1723, 2078, 2222, 2404, 3128, 3389, 4443, 4444, 4782, 5222,
                           5223, 5228, 5552, 5938, 6606, 6667, 7707, 8000, 8008, 8080, 8081, 8088, 8443, 8808,
                           8888, 9001, 9443, 32100})
# the listening ports P2P clients use by default (BitTorrent 6881-6889 and Transmission's 51413, a
# tracker's 6969, eMule's 4662/4672): where a swarm's gone peers pile up
P2P_PORTS = frozenset({*range(6881, 6890), 51413, 6969, 4662, 4672})
MAX_HOSTS = 4096  # local hosts remembered as P2P
MAX_INBOUND = 65_536  # (host, peer) pairs where the peer connected in


class Peers:
    """Local P2P hosts (host -> flow time of the last sign) and peers that connected inbound."""

    def __init__(self, memory: float = 3600.0) -> None:
        self.memory = memory  # a host stays a P2P host this long after the last sign
        self.hosts: OrderedDict[str, float] = OrderedDict()
        self.inbound: OrderedDict[tuple[str, str], float] = OrderedDict()
        # (host, port) -> flow time: a high port the host listens on for its swarm (peers connected in
        # to it, or it sends its swarm UDP from it): an Ethereum node's 30303 and 9000, IPFS's 4001
        self.listening: OrderedDict[tuple[str, int], float] = OrderedDict()

    def mark(self, host: str, ts: float) -> None:
        put(self.hosts, host, ts, MAX_HOSTS)

    def connected_in(self, host: str, peer: str, ts: float) -> None:
        put(self.inbound, (host, peer), ts, MAX_INBOUND)

    def listens(self, host: str, port: int, ts: float) -> None:
        put(self.listening, (host, port), ts, MAX_INBOUND)

    def swarm_port(self, host: str, port: int, now: float) -> bool:
        """`port` is where P2P host `host`'s swarm lives: a P2P client's default port (P2P_PORTS), or
        a high port no service uses that the host itself listens on (its peers dial the same one)."""
        if not self.is_p2p(host, now):
            return False
        if port in P2P_PORTS:
            return True
        since = self.listening.get((host, port))
        return port >= 1024 and port not in SERVICE_PORTS and since is not None and now - since <= self.memory

    def is_p2p(self, host: str, now: float) -> bool:
        since = self.hosts.get(host)
        return since is not None and now - since <= self.memory

    def is_peer(self, host: str, peer: str, port: int, now: float, dns_names: Mapping[str, set[str]]) -> bool:
        """`peer`:`port` looks like a swarm peer of P2P host `host`: the peer connected to the host
        itself, or it listens on a high port that is no known service and no DNS answer named it."""
        if not self.is_p2p(host, now):
            return False
        if (host, peer) in self.inbound:
            return True
        return port >= 1024 and port not in SERVICE_PORTS and peer not in dns_names
