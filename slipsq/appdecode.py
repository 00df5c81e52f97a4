"""Application payloads of the packets the flow table hands up: DNS, TLS ClientHello SNI, HTTP
requests and the first bytes of TCP connections ("banners").

`decode.app_events` finds the payload; this module turns it into `AppEvent`s. The parsers are small
and bounded (every length is checked, a compression pointer must point backwards, names stop at
255 bytes) because they run on hostile bytes for every DNS packet and every connection's first
payload; dpkt's object-per-field parsers cost ten times more here, so tests check these against
dpkt instead. Nothing here keeps state or raises.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Iterable

from slipsq.flow import AppEvent

# The kinds of packets a flow table hands up and their bits (both tables use the same bits; see
# `FlowTable.set_app_kinds` in flowtable.py for what each kind is)
APP_KINDS = {"dns": 1, "dns-queries": 2, "banner": 4, "tls": 8, "http": 16, "arp": 32, "payload": 64, "tunnel": 128}
Base = tuple[float, str, int, str, int, str]  # ts, saddr, sport, daddr, dport, proto
HTTP_METHODS = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ", b"CONNECT ", b"PATCH ",
                b"TRACE ")
_U16 = struct.Struct("!H")
_RR = struct.Struct("!HHIH")


_ARP = struct.Struct("!HHBBH6s4s6s4s")  # hrd, pro, hln, pln, op, sha, spa, tha, tpa (dpkt.arp.ARP's fields)


def app_mask(kinds: Iterable[str]) -> int:
    """The bit mask of app kinds; an unknown kind is a programming error in a detector."""
    mask = 0
    for k in kinds:
        bit = APP_KINDS.get(k)
        if bit is None:
            raise ValueError(f"unknown app kind {k!r} (known: {', '.join(APP_KINDS)})")
        mask |= bit
    return mask


def app_kinds_of(mask: int) -> frozenset[str]:
    return frozenset(k for k, bit in APP_KINDS.items() if mask & bit)


_IP_STR: dict[bytes, str] = {}
_V4_EMBEDDING = bytes(10)  # IPv6 addresses starting with 80 zero bits: ::a.b.c.d, ::ffff:a.b.c.d


def ip_str(packed: bytes) -> str:
    """Text of a packed IPv4/IPv6 address, as Python's ipaddress writes it: the one form slipsq uses
    everywhere (flows, alerts, the block store, `slipsq unblock`). libc's inet_ntop (faster) gives
    the same text except for IPv6 addresses that embed an IPv4 one, which it writes dotted; those go
    through ipaddress. The compiled table follows the same rule. Memoized: the same few addresses
    come back in every app packet."""
    text = _IP_STR.get(packed)
    if text is None:
        if len(_IP_STR) >= 65536:  # bounded: a scan of many addresses must not grow it forever
            _IP_STR.clear()
        if len(packed) == 4:
            text = socket.inet_ntop(socket.AF_INET, packed)
        elif packed.startswith(_V4_EMBEDDING):
            text = str(ipaddress.IPv6Address(packed))
        else:
            text = socket.inet_ntop(socket.AF_INET6, packed)
        _IP_STR[packed] = text
    return text


def event(base: Base, kind: str, data: dict[str, object]) -> AppEvent:
    ts, saddr, sport, daddr, dport, proto = base
    return AppEvent(ts, kind, saddr, sport, daddr, dport, proto, data)


# --- DNS -----------------------------------------------------------------------------------------

def dns_events(base: Base, payload: bytes, tcp: bool) -> list[AppEvent]:
    """One "dns" event when the message has a question; answers are its A/AAAA records (those that
    are whole: a response cut short still reports its query)."""
    if tcp:  # DNS over TCP: a 2-byte length, then the message
        if len(payload) < 2:
            return []
        payload = payload[2:2 + _U16.unpack_from(payload)[0]]
    data = parse_dns(payload)
    return [event(base, "dns", data)] if data is not None else []


def parse_dns(msg: bytes) -> dict[str, object] | None:
    n = len(msg)
    if n < 12:
        return None
    _, flags, qdcount, ancount = struct.unpack_from("!HHHH", msg)
    if qdcount == 0:
        return None
    query, pos = dns_name(msg, 12)
    if query is None or pos + 4 > n:
        return None
    (qtype,) = _U16.unpack_from(msg, pos)
    pos += 4
    for _ in range(min(qdcount - 1, 64)):
        readable, pos = skip_name(msg, pos)
        if not readable:
            break
        pos += 4
    answers: list[str] = []
    for _ in range(min(ancount, 256)):
        readable, pos = skip_name(msg, pos)
        if not readable or pos + 10 > n:
            break
        rtype, _rclass, _ttl, rdlen = _RR.unpack_from(msg, pos)
        pos += 10
        if pos + rdlen > n:
            break
        if (rtype == 1 and rdlen == 4) or (rtype == 28 and rdlen == 16):
            answers.append(ip_str(msg[pos:pos + rdlen]))
        pos += rdlen
    return {"query": query.lower(), "qtype": qtype, "answers": answers, "rcode": flags & 0xF,
            "response": bool(flags & 0x8000)}


def dns_name(msg: bytes, pos: int) -> tuple[str | None, int]:
    """(name, position after it) or (None, pos). Pointers must go backwards (no loops)."""
    labels: list[bytes] = []
    readable, after = _walk_name(msg, pos, labels)
    return (b".".join(labels).decode("utf-8", "replace") if readable else None), after


def skip_name(msg: bytes, pos: int) -> tuple[bool, int]:
    """(readable, position after it) of the name at `pos`, for a name nobody reads (an answer's owner,
    a further question); unreadable: (False, where it stopped), as dns_name. A pointer ends it where
    it stands, checked to point backwards but not followed. Following it cost a hop a pointer: a
    crafted answer (256 owners each pointing at the top of a chain of pointers, as many as the packet
    holds) made a 4 kB message ~750,000 hops, ~0.5 ms of the packet loop (a review, 2026-12-07).
    Each name is now walked once: O(size)."""
    return _walk_name(msg, pos, None)


def _walk_name(msg: bytes, pos: int, labels: list[bytes] | None) -> tuple[bool, int]:
    """The walk of dns_name (`labels` gets the name's labels: pointers followed) and skip_name
    (`labels` None: the first pointer ends the name): (readable, position after it, or where it
    stopped)."""
    after = 0
    limit = pos  # a pointer must point before the name that uses it
    total = 0
    n = len(msg)
    while True:
        if pos >= n:
            return False, pos
        length = msg[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 2 > n:
                return False, pos
            ptr = _U16.unpack_from(msg, pos)[0] & 0x3FFF
            if ptr >= limit:
                return False, pos
            if labels is None:
                return True, pos + 2
            if not after:
                after = pos + 2
            limit = pos = ptr
            continue
        if length & 0xC0:
            return False, pos
        total += length + 1
        if total > 255 or pos + 1 + length > n:
            return False, pos
        if labels is not None:
            labels.append(msg[pos + 1:pos + 1 + length])
        pos += 1 + length
    return True, after or pos


# --- TCP payloads --------------------------------------------------------------------------------

def telnet_start(b: bytes) -> bool:
    """A telnet end's first bytes: IAC (0xFF), WILL/WONT/DO/DONT (0xFB-0xFE) and an option code
    below 50, then (when more follows) IAC again or a line end: how telnet servers and clients open.
    A first byte of 0xFF alone is not: an encrypted protocol with no header (Shadowsocks' salt,
    obfs4, MTProto) starts so in 1 connection in 256, and a status reply's length byte can be 0xFF;
    each made a VPN server or a game server "telnet" to the brute-force detector (a hunt, 2026-12-07)."""
    return (len(b) >= 3 and b[0] == 0xFF and 0xFB <= b[1] <= 0xFE and b[2] < 50
            and (len(b) == 3 or b[3] in (0xFF, 0x0D, 0x0A)))


def rdp_start(b: bytes) -> bool:
    """TPKT version 3, then an X.224 Connection Request (0xE0, the client's) or Confirm (0xD0, the
    server's answer)."""
    return len(b) >= 6 and b[0] == 3 and b[1] == 0 and b[5] & 0xF0 in (0xE0, 0xD0)


def smb_start(b: bytes) -> bool:
    """A NetBIOS session header (a zero type byte), then SMB1's or SMB2's magic."""
    return len(b) >= 8 and b[0] == 0 and b[4:8] in (b"\xffSMB", b"\xfeSMB")


def openvpn_start(b: bytes, n: int) -> bool:
    """An OpenVPN client's first packet over TCP, from its first 3 bytes `b` and the payload's length
    `n`: a 2-byte length that is the rest of the payload (one packet: the client waits for the
    server's answer), then the opcode P_CONTROL_HARD_RESET_CLIENT_V2 or _V3 (7 or 10) with key id 0,
    and at least its 8-byte session id and a packet id. These bytes are in clear with tls-auth and
    tls-crypt too. Random bytes match in about 1 payload in 8 million."""
    return n >= 14 and len(b) >= 3 and (b[0] << 8 | b[1]) == n - 2 and b[2] in (0x38, 0x50)


def service(payload: bytes) -> str:
    """A guess at the protocol from a connection's first bytes (either side)."""
    if payload.startswith(b"SSH-"):
        return "ssh"
    if payload.startswith(b"220"):
        head = payload[:200].upper()
        return "smtp" if b"SMTP" in head or b"MAIL" in head else "ftp"
    if rdp_start(payload):
        return "rdp"
    if smb_start(payload):
        return "smb"
    if telnet_start(payload):
        return "telnet"  # IAC option negotiation
    if payload.startswith(b"RFB "):
        return "vnc"  # the server's ProtocolVersion, e.g. "RFB 003.008"
    if payload.startswith(HTTP_METHODS) or payload.startswith(b"HTTP/"):
        return "http"
    if len(payload) >= 3 and payload[0] == 0x16 and payload[1] == 3:
        return "tls"
    if openvpn_start(payload, len(payload)):
        return "openvpn"  # a VPN client opening its tunnel (exfil: that connection's upload is capped)
    return "unknown"


def payload_events(base: Base, payload: bytes) -> list[AppEvent]:
    """A "banner" for a connection's first payload, plus "tls", "http" or "tunnel" when it is one."""
    svc = service(payload)
    events = [event(base, "banner", {"service": svc, "text": payload[:64].decode("latin-1")})]
    if svc == "tls":
        sni = tls_sni(payload)
        if sni is not None:
            events.append(event(base, "tls", {"sni": sni}))
        elif (alpn := tls_alpn(payload)) is not None:  # a hello that names no server, but its protocol
            events.append(event(base, "tls", {"alpn": alpn}))
    elif svc == "http" and not payload.startswith(b"HTTP/"):
        events.append(event(base, "http", http_request(payload)))
    elif svc == "openvpn":
        events.append(event(base, "tunnel", {"protocol": svc}))
    return events


def _extension(p: bytes, wanted: int) -> tuple[int, int] | None:
    """Where extension `wanted` of a TLS ClientHello starts (after its type and length) and where the
    extensions end, or None (not a ClientHello, or cut short before it). Reads only what the first
    segment holds."""
    n = len(p)
    if n < 44 or p[0] != 0x16 or p[5] != 1:  # handshake record, ClientHello
        return None
    pos = 43  # record header 5, handshake header 4, version 2, random 32
    pos += 1 + p[pos]  # session id
    if pos + 2 > n:
        return None
    pos += 2 + _U16.unpack_from(p, pos)[0]  # cipher suites
    if pos + 1 > n:
        return None
    pos += 1 + p[pos]  # compression methods
    if pos + 2 > n:
        return None
    end = min(n, pos + 2 + _U16.unpack_from(p, pos)[0])
    pos += 2
    while pos + 4 <= end:
        ext_type, ext_len = struct.unpack_from("!HH", p, pos)
        pos += 4
        if ext_type == wanted:
            return pos, end
        pos += ext_len
    return None


def tls_alpn(p: bytes) -> str | None:
    """The first protocol a TLS ClientHello offers in its ALPN extension (RFC 7301), or None (no
    ALPN, cut short before its first name, or a name that is empty or not printable ASCII). A client
    that names no server may still name what it talks: Syncthing's "bep/1.0"."""
    found = _extension(p, 16)  # application_layer_protocol_negotiation: list length, then len + name
    if found is None:
        return None
    pos, end = found
    if pos + 3 > end:
        return None
    k = p[pos + 2]
    name = p[pos + 3:pos + 3 + k]
    if k == 0 or pos + 3 + k > end or not all(0x21 <= c <= 0x7E for c in name):
        return None
    return name.decode("ascii")


def tls_sni(p: bytes) -> str | None:
    """The server name of a TLS ClientHello, or None (not a ClientHello, no SNI, cut short before
    it, or no host name: empty, longer than a DNS name's 255 bytes, or not ASCII, as RFC 6066 has it).
    Reads only what the first segment holds. (A name of 1,380 bytes of 0xFF was a string of 2.8 kB,
    kept per client and server by exfil against the 300 B its memory share counts: a review.)"""
    found = _extension(p, 0)
    if found is None:
        return None
    pos, end = found  # server_name: list length, name type 0, name length, name
    if pos + 5 > end or p[pos + 2] != 0:
        return None
    (name_len,) = _U16.unpack_from(p, pos + 3)
    if pos + 5 + name_len > end:
        return None
    name = p[pos + 5:pos + 5 + name_len]
    if not 0 < name_len <= 255 or not name.isascii():
        return None
    return name.decode("ascii").lower()


def http_request(payload: bytes) -> dict[str, object]:
    """Request line and the Host/User-Agent headers from what the first segment holds."""
    head = payload.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    data: dict[str, object] = {"method": parts[0], "uri": parts[1] if len(parts) > 1 else "",
                               "host": "", "user_agent": ""}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip().lower()
        if name == "host":
            data["host"] = value.strip().lower()
        elif name == "user-agent":
            data["user_agent"] = value.strip()
    return data


def arp_events(buf: bytes, ts: float) -> list[AppEvent]:
    """The event of one ARP frame (`buf` from the ARP header): Ethernet/IPv4 ARP only."""
    if len(buf) < 28:
        return []
    hrd, pro, hln, pln, op, sha, spa, _tha, tpa = _ARP.unpack_from(buf)
    if hrd != 1 or pro != 0x0800 or hln != 6 or pln != 4:  # Ethernet / IPv4 only
        return []
    src_ip, dst_ip = ip_str(spa), ip_str(tpa)
    return [AppEvent(ts, "arp", src_ip, 0, dst_ip, 0, "arp",
                     {"op": op, "src_mac": sha.hex(":"), "src_ip": src_ip, "dst_ip": dst_ip})]
