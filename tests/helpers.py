"""Packet, frame and capture builders shared by all tests (append yours; don't copy them into tests).

Packets are built with dpkt so tests do not share code with the parsers they check. Addresses are
text ("10.0.0.1", "2001:db8::1"); `tcp()`, `udp()`, `icmp()` return IP packets as bytes, and
`eth()`, `sll()`, `sll2()`, `vlan()` wrap them in a link layer. `write_pcap`/`write_pcapng` write
captures the way tcpdump would (any byte order, micro- or nanosecond time, several interfaces).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import dpkt

MAC_A = b"\x02\x00\x00\x00\x00\x01"
MAC_B = b"\x02\x00\x00\x00\x00\x02"
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10

Record = tuple[float, bytes]


def packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed


def ip(src: str, dst: str, proto: int, payload: bytes, *, tos: int = 0, ttl: int = 64, ident: int = 1,
       frag_offset: int = 0, mf: bool = False) -> bytes:
    """An IPv4 or IPv6 packet (chosen by the address family) around a transport payload."""
    if ":" in src:
        p6 = dpkt.ip6.IP6(src=packed(src), dst=packed(dst), nxt=proto, hlim=ttl, fc=tos, data=payload)
        p6.plen = len(payload)
        return bytes(p6)
    p4 = dpkt.ip.IP(src=packed(src), dst=packed(dst), p=proto, ttl=ttl, tos=tos, id=ident, data=payload)
    p4.offset = frag_offset
    p4.mf = int(mf)
    p4.len = 20 + len(payload)
    return bytes(p4)


def tcp(src: str, sport: int, dst: str, dport: int, flags: int = ACK, payload: bytes = b"", *,
        seq: int = 1000, ack: int = 0, tos: int = 0, options: bytes = b"") -> bytes:
    seg = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, opts=options, data=payload)
    seg.off = (20 + len(options)) // 4
    return ip(src, dst, 6, bytes(seg), tos=tos)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"", *, tos: int = 0) -> bytes:
    dgram = dpkt.udp.UDP(sport=sport, dport=dport, data=payload)
    dgram.ulen = 8 + len(payload)
    return ip(src, dst, 17, bytes(dgram), tos=tos)


def icmp(src: str, dst: str, itype: int = 8, code: int = 0, ident: int = 7, seq: int = 1,
         payload: bytes = b"ping") -> bytes:
    """ICMP (IPv4) or ICMPv6 (IPv6 addresses); echo-like types carry `ident` and `seq`."""
    body = struct.pack("!HH", ident, seq) + payload
    msg = struct.pack("!BBH", itype, code, 0) + body
    return ip(src, dst, 58 if ":" in src else 1, msg)


def eth(packet: bytes, ethertype: int | None = None, tags: Sequence[tuple[int, int]] = ()) -> bytes:
    """An Ethernet frame; `tags` are (TPID, VLAN id) outermost first (0x8100 802.1Q, 0x88a8 QinQ)."""
    if ethertype is None:
        ethertype = 0x86DD if packet and packet[0] >> 4 == 6 else 0x0800
    head = MAC_B + MAC_A
    for tpid, vid in tags:
        head += struct.pack("!HH", tpid, vid)
    return head + struct.pack("!H", ethertype) + packet


def vlan(packet: bytes, *vids: int) -> bytes:
    """Ethernet with 802.1Q tags (two or more: the outer one 802.1ad, as QinQ does)."""
    tags = [(0x88A8 if i == 0 and len(vids) > 1 else 0x8100, v) for i, v in enumerate(vids)]
    return eth(packet, tags=tags)


def sll(packet: bytes, ethertype: int = 0x0800) -> bytes:
    """Linux cooked capture v1 (link type 113)."""
    return struct.pack("!HHH8sH", 0, 1, 6, MAC_A + b"\0\0", ethertype) + packet


def sll2(packet: bytes, ethertype: int = 0x0800) -> bytes:
    """Linux cooked capture v2 (link type 276)."""
    return struct.pack("!HHIHBB8s", ethertype, 0, 2, 1, 0, 6, MAC_A + b"\0\0") + packet


def arp(op: int = 1, src_mac: bytes = MAC_A, src_ip: str = "10.0.0.1", dst_ip: str = "10.0.0.2") -> bytes:
    """An Ethernet ARP frame (request by default)."""
    a = dpkt.arp.ARP(op=op, sha=src_mac, spa=packed(src_ip), tha=b"\0" * 6, tpa=packed(dst_ip))
    return eth(bytes(a), 0x0806)


def ipv6_ext(src: str, dst: str, proto: int, payload: bytes, exts: Sequence[int]) -> bytes:
    """IPv6 with extension headers (0, 43, 60: 8 bytes each; 51: AH of 12 bytes; 44: fragment offset 0,
    more fragments set)."""
    chain = [*exts, proto]
    body = b""
    for i, ext in enumerate(exts):
        nxt = chain[i + 1]
        if ext == 44:
            body += struct.pack("!BBHI", nxt, 0, 1, 0x1234)
        elif ext == 51:
            body += struct.pack("!BBHII", nxt, 1, 0, 0x100, 1)
        else:
            body += struct.pack("!BB6s", nxt, 0, b"\x01\x04\0\0\0\0")
    return ip(src, dst, chain[0], body + payload)


def ipv6_fragment(src: str, dst: str, proto: int, payload: bytes, offset: int, more: bool) -> bytes:
    """An IPv6 fragment (offset in 8-byte units)."""
    frag = struct.pack("!BBHI", proto, 0, (offset << 3) | int(more), 0x99)
    return ip(src, dst, 44, frag + payload)


# --- captures -------------------------------------------------------------------------------------

def write_pcap(path: Path, records: Iterable[Record], linktype: int = 1, *, nano: bool = False,
               big_endian: bool = False, snaplen: int = 65535) -> Path:
    """A classic pcap file; records are (timestamp, frame)."""
    e = ">" if big_endian else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    scale = 1_000_000_000 if nano else 1_000_000
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, frame in records:
        sec = int(ts)
        frac = round((ts - sec) * scale)
        data = frame[:snaplen]
        out.append(struct.pack(e + "IIII", sec, frac, len(data), len(frame)) + data)
    path.write_bytes(b"".join(out))
    return path


def pcapng_block(e: str, btype: int, body: bytes) -> bytes:
    """One pcapng block (byte order `e`): type, total length, body padded to 4 bytes, length again."""
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def write_pcapng(path: Path, interfaces: Sequence[tuple[int, int]],
                 records: Iterable[tuple[int, float, bytes]],
                 *, big_endian: bool = False, tsoffset: int = 0) -> Path:
    """A pcapng file. `interfaces` are (link type, if_tsresol: 6 for µs, 9 for ns, 0x80|n for 2^-n);
    records are (interface index, timestamp, frame), written as Enhanced Packet Blocks; a `tsoffset`
    (seconds, if_tsoffset) is written into every interface and is not taken off the records' times."""
    e = ">" if big_endian else "<"
    out = [pcapng_block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))]
    resols = []
    for linktype, tsresol in interfaces:
        opts = struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0"
        if tsoffset:
            opts += struct.pack(e + "HHq", 14, 8, tsoffset)
        opts += struct.pack(e + "HH", 0, 0)
        out.append(pcapng_block(e, 1, struct.pack(e + "HHI", linktype, 0, 65535) + opts))
        resols.append(2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol)
    for iface, ts, frame in records:
        ticks = round(ts * resols[iface])
        head = struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(frame), len(frame))
        out.append(pcapng_block(e, 6, head + frame))
    path.write_bytes(b"".join(out))
    return path


def pcap_bytes_fast(n: int, flows: int = 1000, start: float = 1_700_000_000.0) -> bytes:
    """A large Ethernet/IPv4 pcap packed with struct alone (fast enough for millions of packets):
    `flows` TCP conversations, each SYN, SYN-ACK, data both ways, then ACKs, repeated."""
    recs = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    templates = []
    for i in range(flows):
        c, s = f"10.{(i >> 8) & 255}.{i & 255}.2", f"192.168.{(i >> 8) & 255}.{i & 255}"
        sp = 1024 + i % 60000
        templates.append([
            eth(tcp(c, sp, s, 80, SYN)), eth(tcp(s, 80, c, sp, SYN | ACK)),
            eth(tcp(c, sp, s, 80, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n")),
            eth(tcp(s, 80, c, sp, PSH | ACK, b"x" * 200)), eth(tcp(c, sp, s, 80, ACK)),
        ])
    per = len(templates[0])
    for k in range(n):
        frame = templates[k % flows][(k // flows) % per]
        t = start + k * 1e-5
        sec = int(t)
        recs.append(struct.pack("<IIII", sec, int((t - sec) * 1e6), len(frame), len(frame)) + frame)
    return b"".join(recs)


# --- application payloads -------------------------------------------------------------------------

def dns_query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    msg = dpkt.dns.DNS(id=ident, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)], an=[])
    return bytes(msg)


def dns_response(name: str, answers: Sequence[str], ident: int = 0x1234, rcode: int = 0) -> bytes:
    """A response with one A or AAAA record per answer address."""
    rrs = []
    for a in answers:
        v6 = ":" in a
        rrs.append(dpkt.dns.DNS.RR(name=name, type=28 if v6 else 1, ttl=60, rdata=packed(a)))
    msg = dpkt.dns.DNS(id=ident, qr=1, rcode=rcode, qd=[dpkt.dns.DNS.Q(name=name, type=1)], an=rrs)
    return bytes(msg)


def tls_client_hello(sni: str) -> bytes:
    """A TLS 1.2 ClientHello record with a server_name extension."""
    name = sni.encode()
    sni_ext = struct.pack("!HBH", len(name) + 3, 0, len(name)) + name
    exts = struct.pack("!HH", 0, len(sni_ext)) + sni_ext
    body = (b"\x03\x03" + b"\x11" * 32 + b"\x00" + struct.pack("!H", 2) + b"\x00\x2f" + b"\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(hs)) + hs
