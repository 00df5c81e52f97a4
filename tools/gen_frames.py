"""Frames and capture files for slipsq's traffic generator (tools/gencapture.py).

Builds Ethernet frames (ARP, IPv4/IPv6 carrying TCP, UDP, ICMP/ICMPv6) with `struct`, and writes
them to pcap or pcapng files as Ethernet, raw IP (LINKTYPE_RAW) or Linux cooked (SLL) captures.
This is test and benchmark tooling: slipsq never imports it, and it never touches the network.

Checksums are real (IPv4 header, TCP, UDP, ICMP, ICMPv6), so strict decoders accept the packets,
and cheap: the one's-complement sum of 16-bit words is congruent to the bytes read as one big
integer modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF), which `int.from_bytes` computes in C.
Payloads made of repeating filler reuse a cached sum (see `Content`).

Link layer: hosts on private, link-local and unique-local networks get a MAC derived from their
address; every other address sits behind one router MAC, as seen from a LAN or gateway capture.
Frames shorter than 60 bytes sent by the router are zero-padded to 60 (the Ethernet minimum), as
real captures show them, so decoders must trust the IP length rather than the frame length.
"""

from __future__ import annotations

import ipaddress
import os
import random
import struct
from collections.abc import Iterable
from functools import lru_cache
from typing import BinaryIO, ClassVar

ETH_IP4, ETH_IP6, ETH_ARP = 0x0800, 0x86DD, 0x0806
TCP, UDP, ICMP, ICMP6 = 6, 17, 1, 58
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
ROUTER_MAC = bytes.fromhex("020000000001")
BROADCAST_MAC = b"\xff" * 6
_ZEROS = bytes(64)

_IP4 = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHHH")
_ETH = struct.Struct("!6s6sH")
_ETH_IP4_TCP = struct.Struct("!12sHBBHHHBBH4s4sHHIIBBHHH")


def _fold(n: int) -> int:
    """The Internet checksum of data whose big-integer value (summed over pieces) is `n`."""
    c = 0xFFFF - n % 0xFFFF
    return 0 if c == 0xFFFF else c


def word_sum(data: bytes) -> int:
    """A value congruent to the 16-bit word sum of `data` modulo 0xFFFF (odd data padded)."""
    if len(data) & 1:
        data += b"\0"
    return int.from_bytes(data, "big") % 0xFFFF


def checksum(data: bytes) -> int:
    return _fold(word_sum(data))


class Host:
    """One address with what frames need precomputed: packed form, MAC, word sum."""

    __slots__ = ("mac", "packed", "psum", "v6")

    def __init__(self, ip: str) -> None:
        addr = ipaddress.ip_address(ip)
        self.v6 = addr.version == 6
        self.packed = addr.packed
        self.psum = int.from_bytes(self.packed, "big") % 0xFFFF
        self.mac = mac_for(addr)


# the LAN side of a gateway capture; documentation and benchmark ranges count as the Internet
_LOCAL_NETS = [ipaddress.ip_network(n) for n in
               ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "fe80::/10", "fc00::/7")]


def mac_for(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    if addr.is_multicast:
        if addr.version == 4:
            return b"\x01\x00\x5e" + (int(addr) & 0x7FFFFF).to_bytes(3, "big")
        return b"\x33\x33" + addr.packed[-4:]
    if addr.version == 4 and int(addr) & 0xFF == 0xFF:
        return BROADCAST_MAC  # x.x.x.255: the home /24's broadcast (and 255.255.255.255)
    if any(addr in net for net in _LOCAL_NETS):
        return b"\x02\x00" + addr.packed[-4:]
    return ROUTER_MAC


@lru_cache(maxsize=65536)
def host(ip: str) -> Host:
    return Host(ip)


class Path:
    """One direction between two hosts: the Ethernet header and the constant checksum parts."""

    __slots__ = ("dst", "eth", "ipsum", "macs", "pad", "psum", "src", "tos", "ttl", "v6")

    def __init__(self, src: str, dst: str, ttl: int = 64, tos: int = 0) -> None:
        s, d = host(src), host(dst)
        if s.v6 != d.v6:
            raise ValueError(f"cannot mix IPv4 and IPv6 addresses: {src} -> {dst}")
        self.src, self.dst, self.v6, self.ttl, self.tos = s, d, s.v6, ttl, tos
        self.eth = _ETH.pack(d.mac, s.mac, ETH_IP6 if s.v6 else ETH_IP4)
        self.macs = d.mac + s.mac
        self.pad = s.mac == ROUTER_MAC
        # pseudo-header constants (without the protocol and length, added per packet)
        self.psum = s.psum + d.psum
        # IPv4 header constants: version/IHL/TOS, flags DF, TTL (protocol added per packet)
        self.ipsum = (0x4500 | tos) + 0x4000 + (ttl << 8) + s.psum + d.psum

    def ip(self, proto: int, body: bytes, ipid: int) -> bytes:
        """An Ethernet frame carrying `body` (a transport segment whose checksum is already set)."""
        n = len(body)
        if self.v6:
            frame = self.eth + _IP6.pack(0x60000000, n, proto, self.ttl, self.src.packed, self.dst.packed)
            frame += body
        else:
            total = 20 + n
            s = self.ipsum + proto + total + (ipid & 0xFFFF)
            s = (s & 0xFFFF) + (s >> 16)
            s = (s & 0xFFFF) + (s >> 16)
            frame = self.eth + _IP4.pack(0x45, self.tos, total, ipid & 0xFFFF, 0x4000, self.ttl, proto,
                                         ~s & 0xFFFF, self.src.packed, self.dst.packed) + body
        if self.pad and len(frame) < 60:
            frame += _ZEROS[: 60 - len(frame)]
        return frame

    def tcp(self, ipid: int, sport: int, dport: int, seq: int, ack: int, flags: int, payload: bytes = b"",
            psum: int = 0, win: int = 64240, opts: bytes = b"") -> bytes:
        """A TCP segment in a frame; `psum` is `word_sum(payload)` (callers cache it)."""
        # seq and ack are 32-bit: their value is already congruent to the sum of their two words
        if opts or self.v6:
            hlen = 20 + len(opts)
            tlen = hlen + len(payload)
            off = hlen << 2
            n = (self.psum + TCP + tlen + sport + dport + seq + ack + (off << 8 | flags) + win + psum
                 + (int.from_bytes(opts, "big") if opts else 0))
            seg = _TCP.pack(sport, dport, seq, ack, off, flags, win, _fold(n), 0)
            return self.ip(TCP, seg + opts + payload, ipid)
        # IPv4 without options, in one pack: most generated packets go through these lines
        tlen = 20 + len(payload)
        c = 0xFFFF - (self.psum + 0x5006 + tlen + sport + dport + seq + ack + flags + win + psum) % 0xFFFF
        total = 20 + tlen
        ipid &= 0xFFFF
        s = self.ipsum + TCP + total + ipid
        s = (s & 0xFFFF) + (s >> 16)
        s = (s & 0xFFFF) + (s >> 16)
        frame = _ETH_IP4_TCP.pack(self.macs, ETH_IP4, 0x45, self.tos, total, ipid, 0x4000, self.ttl, TCP,
                                  ~s & 0xFFFF, self.src.packed, self.dst.packed, sport, dport, seq, ack, 0x50,
                                  flags, win, 0 if c == 0xFFFF else c, 0)
        if payload:
            return frame + payload
        if self.pad:
            return frame + _ZEROS[:6]  # 54 → 60 bytes, the Ethernet minimum
        return frame

    def udp(self, ipid: int, sport: int, dport: int, payload: bytes, psum: int | None = None) -> bytes:
        ulen = 8 + len(payload)
        if psum is None:
            psum = word_sum(payload)
        c = _fold(self.psum + UDP + ulen + sport + dport + ulen + psum) or 0xFFFF
        return self.ip(UDP, _UDP.pack(sport, dport, ulen, c) + payload, ipid)

    def icmp(self, ipid: int, type_: int, code: int, ident: int, seq: int, payload: bytes) -> bytes:
        n = (type_ << 8 | code) + ident + seq + word_sum(payload)
        if self.v6:
            n += self.psum + ICMP6 + 8 + len(payload)
        msg = _ICMP.pack(type_, code, _fold(n), ident, seq) + payload
        return self.ip(ICMP6 if self.v6 else ICMP, msg, ipid)


def arp_frame(op: int, sender_mac: bytes, sender_ip: str, target_mac: bytes, target_ip: str,
              dst_mac: bytes | None = None) -> bytes:
    """An ARP request (op 1, broadcast) or reply (op 2, unicast), padded to 60 bytes."""
    dst = dst_mac if dst_mac is not None else (BROADCAST_MAC if op == 1 else target_mac)
    body = struct.pack("!HHBBH6s4s6s4s", 1, ETH_IP4, 6, 4, op, sender_mac, host(sender_ip).packed,
                       target_mac, host(target_ip).packed)
    return _ETH.pack(dst, sender_mac, ETH_ARP) + body + _ZEROS[:18]


class Content:
    """A message of `size` bytes: `head` followed by a repeating filler, read in slices.

    Bulk data would cost a checksum over every byte; slices of the filler that start at the same
    phase with the same length are the same bytes, so their word sum is computed once.
    """

    __slots__ = ("fill", "head", "key", "size")
    _cache: ClassVar[dict[tuple[int, int, int], int]] = {}

    def __init__(self, size: int, head: bytes = b"", fill: bytes | None = None) -> None:
        self.head = head[:size] if size else head
        self.size = max(size, len(self.head))
        self.fill = fill if fill is not None else RANDOM_FILL
        self.key = id(self.fill)

    def slice(self, off: int, length: int) -> tuple[bytes, int]:
        """Bytes [off, off+length) of the message, and their word sum."""
        head = self.head
        if off >= len(head):
            fill = self.fill
            p = (off - len(head)) % len(fill)
            key = (self.key, p, length)
            data = fill[p: p + length]
            while len(data) < length:
                data += fill[: length - len(data)]
            s = self._cache.get(key)
            if s is None:
                if len(self._cache) > 200_000:
                    self._cache.clear()
                s = self._cache[key] = word_sum(data)
            return data, s
        data = head[off: off + length]
        if len(data) < length:
            data += Content(self.size - len(head), b"", self.fill).slice(0, length - len(data))[0]
        return data, word_sum(data)


def _tls_records(rng: random.Random) -> bytes:
    """Filler that looks like a stream of TLS 1.2/1.3 application-data records (16 KiB each)."""
    body = rng.randbytes(16384)
    return b"\x17\x03\x03\x40\x00" + body


_rng = random.Random(20240601)
RANDOM_FILL = _rng.randbytes(65536 + 7)  # odd period: slices land on many phases, still a bounded set
TLS_FILL = _tls_records(_rng)


# --- capture files ----------------------------------------------------------------------------------

LINKTYPES = {"ethernet": 1, "raw": 101, "sll": 113}
_PCAP_REC = struct.Struct("<IIII")
_EPB = struct.Struct("<IIIIIII")


class CaptureWriter:
    """Writes Ethernet frames to a pcap or pcapng file as Ethernet, raw IP or Linux SLL records.

    Raw IP cannot carry ARP: those frames are skipped (and counted in `skipped`).
    """

    def __init__(self, fh: BinaryIO, linktype: str = "ethernet", fmt: str = "pcap",
                 snaplen: int = 65535) -> None:
        if linktype not in LINKTYPES:
            raise ValueError(f"unknown link type {linktype!r} (want one of {', '.join(LINKTYPES)})")
        if fmt not in ("pcap", "pcapng"):
            raise ValueError(f"unknown capture format {fmt!r} (want pcap or pcapng)")
        self.fh, self.linktype, self.fmt = fh, linktype, fmt
        self.packets = self.skipped = 0
        self._buf: list[bytes] = []
        lt = LINKTYPES[linktype]
        if fmt == "pcap":
            fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, lt))
        else:
            # a section header, then one interface (if_tsresol defaults to microseconds: no options)
            for kind, body in ((0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)),
                               (1, struct.pack("<HHI", lt, 0, snaplen))):
                fh.write(struct.pack("<II", kind, 12 + len(body)) + body + struct.pack("<I", 12 + len(body)))

    def _convert(self, frame: bytes) -> bytes | None:
        if self.linktype == "ethernet":
            return frame
        etype = frame[12] << 8 | frame[13]
        if self.linktype == "raw":
            if etype == ETH_IP4:
                return frame[14: 14 + (frame[16] << 8 | frame[17])]
            if etype == ETH_IP6:
                return frame[14: 54 + (frame[18] << 8 | frame[19])]
            return None
        dst = frame[0:6]
        pkttype = 1 if dst == BROADCAST_MAC else 2 if dst[0] & 1 else 4 if frame[6:12] == ROUTER_MAC else 0
        return struct.pack("!HHH8sH", pkttype, 1, 6, frame[6:12] + b"\0\0", etype) + frame[14:]

    def write(self, ts: float, frame: bytes) -> bool:
        rec = self._convert(frame) if self.linktype != "ethernet" else frame
        if rec is None:
            self.skipped += 1
            return False
        us = int(ts * 1_000_000 + 0.5)
        n = len(rec)
        if self.fmt == "pcap":
            self._buf.append(_PCAP_REC.pack(us // 1_000_000, us % 1_000_000, n, n))
            self._buf.append(rec)
        else:
            pad = -n & 3
            total = 32 + n + pad
            self._buf.append(_EPB.pack(6, total, 0, us >> 32, us & 0xFFFFFFFF, n, n))
            self._buf.append(rec + _ZEROS[:pad] + struct.pack("<I", total))
        self.packets += 1
        if len(self._buf) >= 16384:
            self.flush()
        return True

    def write_all(self, packets: Iterable[tuple[float, bytes]], limit: int | None = None) -> None:
        """Write every packet (up to `limit` in all); the common case, Ethernet in pcap, without a
        method call per packet."""
        if self.linktype != "ethernet" or self.fmt != "pcap":
            for ts, frame in packets:
                self.write(ts, frame)
                if limit is not None and self.packets >= limit:
                    break
            return
        buf, rec, fh = self._buf, _PCAP_REC.pack, self.fh
        n, stop = self.packets, -1 if limit is None else limit
        for ts, frame in packets:
            if n == stop:
                break
            us = int(ts * 1_000_000 + 0.5)
            size = len(frame)
            buf.append(rec(us // 1_000_000, us % 1_000_000, size, size))
            buf.append(frame)
            n += 1
            if len(buf) >= 32768:
                fh.write(b"".join(buf))
                buf.clear()
        self.packets = n

    def flush(self) -> None:
        self.fh.write(b"".join(self._buf))
        self._buf.clear()


def open_writer(path: str | os.PathLike[str], linktype: str = "ethernet",
                fmt: str | None = None) -> CaptureWriter:
    """A writer on a new file; the format follows the suffix (.pcapng) unless given."""
    if fmt is None:
        fmt = "pcapng" if str(path).endswith(".pcapng") else "pcap"
    return CaptureWriter(open(path, "wb"), linktype, fmt)
