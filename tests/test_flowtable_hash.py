"""The compiled flow table's hashes are keyed: keys a sender computes cannot pile into one bucket.

A review (2026-12-07) inverted the old unkeyed hash: from one IPv6 /64, interface IDs that give every
SYN the same 32-bit flow hash. 40k such flows made every packet walk a 40k-long chain (194 us a
packet, 0.2 us with random addresses) and the expiry pass that removed them stall the packet loop
for 2.9 s; 65k blocked addresses crafted the same way made every innocent packet probe a 65k-slot
run of the block set (46 us a packet). The same crafted keys now spread as random ones do.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from slipsq.runmode import load_config

_flowtable = pytest.importorskip("slipsq._flowtable")

M = (1 << 64) - 1
C1, C2, K = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x9E3779B97F4A7C15
iC1, iC2, iK = pow(C1, -1, 1 << 64), pow(C2, -1, 1 << 64), pow(K, -1, 1 << 64)
PREFIX = bytes.fromhex("20010db800010002")  # the sender's /64
SERVER = bytes.fromhex("20010db8ffff00000000000000000001")
SPORT, DPORT, TCP = 40000, 443, 6


def _unmix(x: int) -> int:
    """The inverse of the old hash's mixer (murmur3's finalizer): what made it invertible."""
    x ^= x >> 33
    x = (x * iC2) & M
    x ^= x >> 33
    x = (x * iC1) & M
    return x ^ (x >> 33)


def _mix(x: int) -> int:
    x ^= x >> 33
    x = (x * C1) & M
    x ^= x >> 33
    x = (x * C2) & M
    return x ^ (x >> 33)


def _word(a: bytes) -> int:
    w0, w1 = struct.unpack("<QQ", a)
    return w0 ^ ((w1 * K) & M)


def crafted_sources(n: int) -> list[bytes]:
    """Sources in PREFIX whose SYN to SERVER:443 had one and the same old flow hash."""
    target = _mix(_word(SERVER) ^ (DPORT << 40))
    w0 = struct.unpack("<Q", PREFIX)[0]
    out = []
    for k in range(1, n + 1):
        h = _unmix((k << 32) | 0x1234) ^ (TCP << 56)
        a = _unmix((h - target) & M)
        out.append(PREFIX + struct.pack("<Q", (((a ^ (SPORT << 40)) ^ w0) * iK) & M))
    return out


def crafted_blocks(n: int) -> list[str]:
    """Addresses in PREFIX that all started probing the old block set at one slot."""
    w0 = struct.unpack("<Q", PREFIX)[0]
    return [str(ipaddress.IPv6Address(PREFIX + struct.pack("<Q", ((_unmix((k << 32) | 0x77) ^ w0) * iK) & M)))
            for k in range(1, n + 1)]


def syn6(src: bytes) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", SPORT, DPORT, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
    return struct.pack("!IHBB", 6 << 28, len(tcp), TCP, 64) + src + SERVER + tcp


def test_the_crafted_sources_did_collide_under_the_old_hash() -> None:
    """The flood below is the real one: under the old hash every crafted flow had one hash."""
    def old(src: bytes) -> int:
        h = (_mix(_word(src) ^ (SPORT << 40)) + _mix(_word(SERVER) ^ (DPORT << 40))) & M
        return _mix(h ^ (TCP << 56)) & 0xFFFFFFFF
    assert {old(s) for s in crafted_sources(500)} == {0x1234}


def test_flows_a_sender_crafted_to_collide_spread_over_the_buckets() -> None:
    table = _flowtable.FlowTable(load_config(None))
    for src in crafted_sources(20_000):
        table.feed(syn6(src), 1000.0, 101)
    assert table.stats()["flows_open"] == 20_000
    assert table.hash_report()["longest_chain"] <= 16  # 20,000 in one chain under the old hash
    # and both directions of a flow still meet in one entry
    src = crafted_sources(1)[0]
    back = struct.pack("!HHIIBBHHH", DPORT, SPORT, 9, 2, 5 << 4, 0x12, 65535, 0, 0)
    table.feed(struct.pack("!IHBB", 6 << 28, len(back), TCP, 64) + SERVER + src + back, 1000.1, 101)
    assert table.stats()["flows_open"] == 20_000


def test_blocked_addresses_a_sender_crafted_to_cluster_spread_over_the_set() -> None:
    table = _flowtable.FlowTable(load_config(None))
    for ip in crafted_blocks(8_000):
        table.block(ip)
    assert table.hash_report()["longest_block_run"] <= 64  # 8,000 in one run under the old hash
    assert all(table.is_blocked(ip) for ip in crafted_blocks(50))


def test_the_hash_is_the_same_both_ways_and_depends_on_a_random_key() -> None:
    """New keys, new hashes: what keeps a sender from computing them."""
    src, v4a, v4b = crafted_sources(1)[0], bytes([192, 168, 1, 10]), bytes([198, 51, 100, 7])
    h = _flowtable._flow_hash_of(src, SPORT, SERVER, DPORT, TCP)
    assert h == _flowtable._flow_hash_of(SERVER, DPORT, src, SPORT, TCP)
    assert (_flowtable._flow_hash_of(v4a, 5000, v4b, 5000, 17)
            == _flowtable._flow_hash_of(v4b, 5000, v4a, 5000, 17))
    before = [_flowtable._flow_hash_of(s, SPORT, SERVER, DPORT, TCP) for s in crafted_sources(8)]
    old = _flowtable._draw_keys()  # (no table holds flows while the keys differ)
    try:
        assert [_flowtable._flow_hash_of(s, SPORT, SERVER, DPORT, TCP) for s in crafted_sources(8)] != before
    finally:
        _flowtable._draw_keys(old)
    assert [_flowtable._flow_hash_of(s, SPORT, SERVER, DPORT, TCP) for s in crafted_sources(8)] == before
