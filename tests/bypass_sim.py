"""A replay with flow bypass, for the differential test: what the kernel does, simulated per packet.

Replay has no kernel, so this stands in for the two kernel parts of bypass, exactly as they behave:
* the bypass rule: a packet of a connection the table marked (verdict BYPASS) is forwarded without
  reaching the table, unless it carries SYN, FIN or RST (the rule's `--tcp-flags FIN,SYN,RST NONE`)
  or the connection was unmarked since (verdict UNBYPASS);
* conntrack's counters (nf_conntrack_acct): every packet of a TCP connection, queued or not, counted
  per direction by its IP total length, from the connection's first packet on.
When the table holds a bypassed flow, the simulated conntrack answers at once with its counters and
`conntrack.merge` gives the flow back, as `sources/conntrack.Merger` does live, but at once, in the
table's emission order (live, the answer comes a moment later, after whatever the table emitted
meanwhile): so the run can be compared line for line. The table is the readable twin (its `_emit`
is where the answer is put in); the twins' agreement on bypass is tested elsewhere.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import dpkt

from slipsq import runmode
from slipsq.flow import Flow
from slipsq.flowtable import BYPASS, UNBYPASS, FlowTable
from slipsq.sources.conntrack import Counters, merge

FIN_SYN_RST = 0x07
RAW = 101


def _ipv4_tcp(ip: bytes) -> tuple[tuple[Any, ...], int, int] | None:
    """(conntrack key: sorted ends, (saddr, sport) of this packet, total length), TCP flags."""
    if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:
        return None
    ihl = (ip[0] & 15) * 4
    if len(ip) < ihl + 14 or struct.unpack_from("!H", ip, 6)[0] & 0x1FFF:
        return None
    src, dst = ip[12:16], ip[16:20]
    sport, dport = struct.unpack_from("!HH", ip, ihl)
    a, b = (src, sport), (dst, dport)
    key = (min(a, b), max(a, b))
    return (key, a, struct.unpack_from("!H", ip, 2)[0]), ip[ihl + 13], 0


class Conntrack:
    """Per-connection counters: orig is the direction of the connection's first packet."""

    def __init__(self) -> None:
        self.entries: dict[tuple[Any, ...], list[Any]] = {}

    def count(self, key: tuple[Any, ...], sender: tuple[bytes, int], length: int) -> None:
        e = self.entries.get(key)
        if e is None:
            e = self.entries[key] = [sender, 0, 0, 0, 0]
        if sender == e[0]:
            e[1] += 1
            e[2] += length
        else:
            e[3] += 1
            e[4] += length

    def counters(self, flow: Any) -> Counters | None:
        import ipaddress

        a = (ipaddress.ip_address(flow.saddr).packed, flow.sport)
        b = (ipaddress.ip_address(flow.daddr).packed, flow.dport)
        e = self.entries.get((min(a, b), max(a, b)))
        if e is None:
            return None
        return Counters(str(ipaddress.ip_address(e[0][0])), e[0][1], e[1], e[2], e[3], e[4])


class SimTable(FlowTable):
    """The twin whose held flows conntrack answers at once (see the module docstring)."""

    ct: Conntrack

    def _emit(self, e: Any, closed_by: str) -> None:
        super()._emit(e, closed_by)
        for flow in self.pop_held():
            self.merged.append(flow)
            self.put_closed(merge(flow, self.ct.counters(flow)))

    merged: list[Flow]


def ip_packets(path: Path) -> list[tuple[float, bytes]]:
    """(time, IP packet) of every Ethernet IPv4/IPv6 frame of a classic pcap."""
    out = []
    with open(path, "rb") as fh:
        for ts, frame in dpkt.pcap.Reader(fh):
            if len(frame) >= 14 and frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
                out.append((float(ts), frame[14:]))
    return out


def replay(packets: list[tuple[float, bytes]], after: int = 0) -> tuple[list[str], dict[str, int]]:
    """Every command the engine returned (alerts, blocks, flows), as text, in order; and what the
    simulation saw. `after` 0: no bypass (the reference run)."""
    cfg = runmode.load_config(None, {"allow.own_addresses": False})
    engine = runmode.build_engine(cfg, runmode.load_engine_models(None, cfg), runmode.make_allow(cfg),
                                  export_flows=True)
    ct = Conntrack()
    table = SimTable(cfg)
    table.ct, table.merged = ct, []
    table.set_app_kinds(engine.table.app_kinds)
    engine.table = table
    if after:
        table.set_bypass(after, 1 << 20)
    marked: set[tuple[Any, ...]] = set()
    out: list[str] = []
    seen = {"packets": 0, "bypassed_packets": 0}
    last = 0.0
    for ts, ip in packets:
        last = ts
        parsed = _ipv4_tcp(ip) if after else None
        if parsed is not None:
            (key, sender, length), flags, _ = parsed
            ct.count(key, sender, length)
            if key in marked and not flags & FIN_SYN_RST:
                seen["bypassed_packets"] += 1
                continue  # the bypass rule accepted it: slipsq never sees it
        seen["packets"] += 1
        verdict = engine.packet(ip, ts, RAW)
        if parsed is not None:
            if verdict == BYPASS:
                marked.add(parsed[0][0])
            elif verdict == UNBYPASS:
                marked.discard(parsed[0][0])
        out += map(repr, engine.take())
    out += map(repr, engine.advance(last))
    out += map(repr, engine.finish())
    seen["held"] = len(table.merged)
    return out, seen
