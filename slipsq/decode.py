"""Packet decoding with dpkt: the readable reference for the compiled parser, and deep parsing.

`parse(buf, linktype)` walks the link layer, the IP header and the fixed transport header and
returns a small `Packet` summary; the pure-Python flow table uses it, and the compiled parser in
`_decode.pxd` must return exactly the same fields for every input (a differential test checks it).
`app_events(ip_packet, ts)` deep-parses the few packets the flow table hands up (the kinds the
detectors ask for: DNS answers, first TCP payloads that look like a login banner, HTTP or a TLS
ClientHello, ARP; see `FlowTable.set_app_kinds`) into `AppEvent`s. Neither keeps state; neither
may raise on hostile bytes.

The rules both parsers follow:
* Link types: Ethernet (802.1Q/802.1ad tags, stacked), raw IP (101, 12, 14: version nibble), Linux
  SLL and SLL2, IPv4 (228), IPv6 (229). A truncated link header or IP header of the wrong version is
  malformed; an EtherType that is neither IP nor ARP is non-IP; an unknown link type is non-IP.
* The fixed IP header (20/40 bytes) captured gives family and addresses. Malformed beyond that:
  IPv4 IHL < 5, total length < IHL*4, options not captured; IPv6 extension headers (hop-by-hop,
  routing, destination options, AH, fragment) running past the captured bytes or the payload length,
  or more than 8 of them; a transport header not captured or longer than the IP payload (TCP 20
  bytes and a data offset >= 5 that fits the IP payload, UDP 8, ICMP 4, ICMP with an identifier 8).
  An IPv6 source or destination that is IPv4-mapped (::ffff:0:0/96, which RFC 4291 keeps off the
  wire) is malformed too: slipsq writes such an address as the IPv4 address it carries, so a packet
  forged "from ::ffff:10.0.0.2" became evidence against the IPv4 host, and blocked it.
* `ip_len` is the IP total length (IPv6: 40 + payload length), never the captured length.
* Fragments: `frag` 1 for a first fragment (offset 0: parsed with its ports), 2 for a later one
  (no transport header: sport = dport = 0, proto from the IP header).
* ICMP/ICMPv6: sport = type, dport = the identifier for echo/timestamp/info/mask types, else the code.
* ARP: `arp` True and `ip_off` is where the ARP header starts.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TypeVar

import dpkt

from slipsq.appdecode import arp_events, dns_events, ip_str, payload_events
from slipsq.flow import AppEvent
from slipsq.linktypes import ETHERNET, IPV4, IPV6, LINUX_SLL, LINUX_SLL2, RAW_TYPES

VLAN_TYPES = frozenset((0x8100, 0x88A8, 0x9100))
IPV6_EXT = frozenset((0, 43, 60, 51, 44))
V4_MAPPED = bytes(10) + b"\xff\xff"  # the first 12 bytes of ::ffff:a.b.c.d
MAX_EXT = 8
# ICMP types whose bytes 4-6 are an identifier (echo, timestamp, information, address mask)
ICMP4_ID_TYPES = frozenset((0, 8, 13, 14, 15, 16, 17, 18))
ICMP6_ID_TYPES = frozenset((128, 129))
DNS_PORTS = frozenset((53, 5353))


@dataclass(slots=True)
class Packet:
    """The fixed-header summary of one packet (see the module docstring for the rules)."""

    family: int = 0          # 4, 6, or 0 when no IP header was found
    src: bytes = b""         # packed address (4 or 16 bytes)
    dst: bytes = b""
    proto: int = 0
    sport: int = 0
    dport: int = 0
    tcp_flags: int = 0
    ip_len: int = 0
    tos: int = 0
    frag: int = 0            # 0 not a fragment, 1 first fragment, 2 later fragment
    malformed: bool = False
    arp: bool = False
    ip_off: int = 0          # where the IP (or ARP) header starts in the buffer
    payload_len: int = 0     # TCP/UDP payload length from the IP lengths


def _link(buf: bytes, linktype: int) -> tuple[int, int]:
    """(offset of the network header, EtherType or a code): 0x0800/0x86dd/0x0806, -1 raw IP,
    -2 malformed, 0 non-IP."""
    if linktype in RAW_TYPES:
        return 0, -1
    if linktype == IPV4:
        return 0, 0x0800
    if linktype == IPV6:
        return 0, 0x86DD
    if linktype == ETHERNET:
        off, etype_at = 14, 12
    elif linktype == LINUX_SLL:
        off, etype_at = 16, 14
    elif linktype == LINUX_SLL2:
        off, etype_at = 20, 0
    else:
        return 0, 0
    if len(buf) < off:
        return 0, -2
    (etype,) = struct.unpack_from("!H", buf, etype_at)
    while etype in VLAN_TYPES:  # a tag is 2 bytes of TCI then the next EtherType
        if len(buf) < off + 4:
            return 0, -2
        (etype,) = struct.unpack_from("!H", buf, off + 2)
        off += 4
    return off, etype


H = TypeVar("H", bound=dpkt.Packet)


def _hdr(cls: type[H], buf: bytes, pos: int) -> H:
    """The fixed header fields of a dpkt class at `pos` (dpkt's own unpack would also decode the
    payload with its rules; the rules here are ours)."""
    obj = cls()
    dpkt.Packet.unpack(obj, buf[pos:pos + cls.__hdr_len__])
    return obj


def parse(buf: bytes, linktype: int) -> Packet:
    """The fixed-header summary of a captured frame of the given link type."""
    p = Packet()
    off, etype = _link(buf, linktype)
    if etype == -2:
        p.malformed = True
        return p
    if etype == 0x0806:
        p.arp, p.ip_off = True, off
        return p
    if etype == -1:
        if len(buf) <= off:
            p.malformed = True
            return p
        version = buf[off] >> 4
        etype = 0x0800 if version == 4 else 0x86DD if version == 6 else -2
        if etype == -2:
            p.malformed = True
            return p
    p.ip_off = off
    if etype == 0x0800:
        _ipv4(p, buf, off)
    elif etype == 0x86DD:
        _ipv6(p, buf, off)
    return p


def _ipv4(p: Packet, buf: bytes, off: int) -> None:
    if len(buf) < off + 20 or buf[off] >> 4 != 4:
        p.malformed = True
        return
    ip = _hdr(dpkt.ip.IP, buf, off)
    p.family, p.src, p.dst, p.proto, p.tos, p.ip_len = 4, ip.src, ip.dst, ip.p, ip.tos, ip.len
    hl = ip.hl * 4
    if hl < 20 or ip.len < hl or len(buf) < off + hl:
        p.malformed = True
        return
    if ip.offset:
        p.frag = 2
        return
    if ip.mf:
        p.frag = 1
    end = min(len(buf), off + ip.len)
    _transport(p, buf, off + hl, end, ip.len - hl)


def _ipv6(p: Packet, buf: bytes, off: int) -> None:
    if len(buf) < off + 40 or buf[off] >> 4 != 6:
        p.malformed = True
        return
    ip6 = _hdr(dpkt.ip6.IP6, buf, off)
    p.family, p.src, p.dst, p.tos, p.ip_len = 6, ip6.src, ip6.dst, ip6.fc, 40 + ip6.plen
    if ip6.src[:12] == V4_MAPPED or ip6.dst[:12] == V4_MAPPED:
        p.malformed = True
        return
    end = min(len(buf), off + 40 + ip6.plen)
    nxt, pos, count = ip6.nxt, off + 40, 0
    while nxt in IPV6_EXT:
        count += 1
        if count > MAX_EXT or pos + 8 > end:
            p.proto, p.malformed = nxt, True
            return
        if nxt == 44:
            frag = _hdr(dpkt.ip6.IP6FragmentHeader, buf, pos)
            nxt, pos = frag.nxt, pos + 8
            if frag.frag_off:
                p.proto, p.frag = nxt, 2
                return
            p.frag = 1
            continue
        ext_len = (buf[pos + 1] + 2) * 4 if nxt == 51 else (buf[pos + 1] + 1) * 8
        nxt, pos = buf[pos], pos + ext_len
        if pos > end:
            p.proto, p.malformed = nxt, True
            return
    p.proto = nxt
    _transport(p, buf, pos, end, p.ip_len - (pos - off))


def _transport(p: Packet, buf: bytes, pos: int, end: int, l4_len: int) -> None:
    """Ports, flags and payload length; `end` bounds the captured bytes, `l4_len` the IP payload."""
    avail = min(end - pos, l4_len)
    proto = p.proto
    if proto == 6:
        if avail < 20:
            p.malformed = True
            return
        tcp = _hdr(dpkt.tcp.TCP, buf, pos)
        doff = tcp.off * 4
        if doff < 20 or doff > l4_len:
            p.malformed = True
            return
        p.sport, p.dport, p.tcp_flags, p.payload_len = tcp.sport, tcp.dport, tcp.flags, l4_len - doff
    elif proto == 17:
        if avail < 8:
            p.malformed = True
            return
        udp = _hdr(dpkt.udp.UDP, buf, pos)
        p.sport, p.dport, p.payload_len = udp.sport, udp.dport, l4_len - 8
    elif (proto == 1 and p.family == 4) or (proto == 58 and p.family == 6):
        id_types = ICMP4_ID_TYPES if proto == 1 else ICMP6_ID_TYPES
        if avail < 4:
            p.malformed = True
            return
        icmp = _hdr(dpkt.icmp.ICMP, buf, pos)
        p.sport = icmp.type
        if icmp.type in id_types:
            if avail < 8:
                p.malformed = True
                return
            (p.dport,) = struct.unpack_from("!H", buf, pos + 4)
        else:
            p.dport = icmp.code


# --- deep parsing of the packets the flow table hands up -----------------------------------------

def app_events(ip_packet: bytes, ts: float) -> list[AppEvent]:
    """Events in one handed-up packet: bytes from the IP header (or, for ARP, the ARP header).
    The IP and TCP/UDP headers are read with struct, the payloads by `slipsq.appdecode` (this runs
    for every handed-up packet: dpkt's object per layer costs more than the rest of the pipeline)."""
    if not ip_packet:
        return []
    version = ip_packet[0] >> 4
    if version not in (4, 6):
        return arp_events(ip_packet, ts)
    l4 = _l4(ip_packet)
    if l4 is None:
        return []
    src, dst, proto, sport, dport, payload = l4
    base = (ts, ip_str(src), sport, ip_str(dst), dport, proto)
    if sport in DNS_PORTS or dport in DNS_PORTS:
        return dns_events(base, payload, proto == "tcp")
    if proto == "tcp" and payload:
        return payload_events(base, payload)
    return []


def _l4(buf: bytes) -> tuple[bytes, bytes, str, int, int, bytes] | None:
    """(src, dst, "tcp"/"udp", sport, dport, payload) of an unfragmented (or first-fragment) TCP or
    UDP packet, by the rules of `parse`; None for anything else."""
    n = len(buf)
    if buf[0] >> 4 == 4:
        if n < 20:
            return None
        hl = (buf[0] & 15) * 4
        (ip_len,), (frag,) = struct.unpack_from("!H", buf, 2), struct.unpack_from("!H", buf, 6)
        if hl < 20 or ip_len < hl or n < hl or frag & 0x1FFF:
            return None
        proto, src, dst, pos, end = buf[9], buf[12:16], buf[16:20], hl, min(n, ip_len)
    else:
        if n < 40:
            return None
        (plen,) = struct.unpack_from("!H", buf, 4)
        proto, src, dst, pos, end = buf[6], buf[8:24], buf[24:40], 40, min(n, 40 + plen)
        for _ in range(MAX_EXT):
            if proto not in IPV6_EXT:
                break
            if pos + 8 > end or (proto == 44 and struct.unpack_from("!H", buf, pos + 2)[0] >> 3):
                return None
            step = 8 if proto == 44 else (buf[pos + 1] + 2) * 4 if proto == 51 else (buf[pos + 1] + 1) * 8
            proto, pos = buf[pos], pos + step
    if proto == 6 and end - pos >= 20:
        doff = (buf[pos + 12] >> 4) * 4
        if doff < 20:
            return None
        sport, dport = struct.unpack_from("!HH", buf, pos)
        return src, dst, "tcp", sport, dport, buf[pos + doff:end]
    if proto == 17 and end - pos >= 8:
        sport, dport = struct.unpack_from("!HH", buf, pos)
        return src, dst, "udp", sport, dport, buf[pos + 8:end]
    return None
