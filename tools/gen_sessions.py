"""Protocol sessions for slipsq's traffic generator: generators of (time, Ethernet frame), in time order.

Each function is one conversation: a TCP session (handshake, data both ways in MSS segments with
ACKs, FIN or RST teardown), a UDP exchange, a DNS query, TLS with a real ClientHello (SNI), HTTP
with a real GET, SSH with the server banner first, ICMP echo, ARP who-has. They compose by
merging in time order (gencapture.merge). Test and benchmark tooling; never imported by slipsq.

Timing model: the capture point sits next to the client (a LAN or gateway capture). A client
packet's answer shows up one `rtt` later; the client answers what it receives at once.
"""

from __future__ import annotations

import random
import struct
from collections import deque
from collections.abc import Iterator, Sequence

import dpkt

from tools.gen_frames import (
    ACK,
    FIN,
    PSH,
    RANDOM_FILL,
    RST,
    SYN,
    TLS_FILL,
    Content,
    Path,
    arp_frame,
    host,
)

Packet = tuple[float, bytes]
# one message of a session: who sends it ("c" or "s"), its bytes, and an optional pause before it
Message = tuple[str, Content] | tuple[str, Content, float]

_SYN_OPTS = b"\x02\x04\x05\xb4\x04\x02\x01\x03\x03\x07\x01\x01"  # MSS 1460, SACK ok, wscale 7, NOP NOP
_TINY = 0.0001  # the client's own reaction time


def _rng(rng: random.Random | None) -> random.Random:
    return rng if rng is not None else random.Random(0)


def tcp_packet_count(messages: Sequence[Message], close: str = "fin", mss: int = 1460) -> int:
    """Exactly how many packets `tcp_session` yields for these messages (for packet budgets)."""
    n = 3 + {"fin": 3, "rst": 1, "none": 0}[close]
    for m in messages:
        seg = -(-m[1].size // mss)
        n += seg + (seg + 1) // 2
    return n


def tcp_session(client: str, server: str, sport: int, dport: int, start: float,
                request_bytes: int = 300, response_bytes: int = 2000, rtt: float = 0.03, *,
                messages: Sequence[Message] | None = None, close: str = "fin", closer: str = "client",
                mss: int = 1460, rate: float = 2.5e6, server_ttl: int = 52,
                rng: random.Random | None = None) -> Iterator[Packet]:
    """A full TCP conversation. `messages` (default: one request, one response of the given sizes)
    are sent in order; each is cut into `mss` segments, the receiver ACKs every second segment and
    the last. close: "fin" (FIN both ways, last ACK), "rst" (the closer resets), "none" (left open).
    """
    if close not in ("fin", "rst", "none"):
        raise ValueError(f"close must be fin, rst or none, not {close!r}")
    rng = _rng(rng)
    if messages is None:
        messages = [("c", Content(request_bytes)), ("s", Content(response_bytes))]
    c2s, s2c = Path(client, server), Path(server, client, ttl=server_ttl)
    cid, sid = rng.randrange(1, 60000), rng.randrange(1, 60000)
    cseq, sseq = rng.getrandbits(32), rng.getrandbits(32)
    t = start
    yield t, c2s.tcp(cid, sport, dport, cseq, 0, SYN, opts=_SYN_OPTS)
    t += rtt
    yield t, s2c.tcp(sid, dport, sport, sseq, (cseq + 1) & 0xFFFFFFFF, SYN | ACK, win=65160, opts=_SYN_OPTS)
    t += _TINY
    cseq, sseq = (cseq + 1) & 0xFFFFFFFF, (sseq + 1) & 0xFFFFFFFF
    cid, sid = cid + 1, sid + 1
    yield t, c2s.tcp(cid, sport, dport, cseq, sseq, ACK)
    gap = max(mss / rate, 3 * _TINY)
    last_dir = "c"
    tseg, first = t, True  # tseg: when the previous message's last segment went (t: the last packet)
    for m in messages:
        who, content = m[0], m[1]
        pause = m[2] if len(m) > 2 else 0.0  # type: ignore[misc]
        if content.size <= 0:
            continue
        if first:
            t += (rtt if who == "s" else 0.0) + pause
        elif who == last_dir:
            t = max(tseg + gap, t) + pause
        elif who == "s":  # the server answers what reached it: one rtt after the client's last segment
            t = max(tseg + rtt, t) + pause
        else:
            t += _TINY + pause
        if who == "c":
            tx, rx, ack_delay, txport, rxport = c2s, s2c, rtt, sport, dport
        else:
            tx, rx, ack_delay, txport, rxport = s2c, c2s, _TINY, dport, sport
        seq, ack = (cseq, sseq) if who == "c" else (sseq, cseq)
        txid, rxid = (cid, sid) if who == "c" else (sid, cid)
        acks: deque[tuple[float, int]] = deque()
        nseg = -(-content.size // mss)
        off = 0
        for i in range(nseg):
            while acks and acks[0][0] <= t:
                at, aseq = acks.popleft()
                rxid += 1
                yield at, rx.tcp(rxid, rxport, txport, ack, aseq, ACK)
            n = min(mss, content.size - off)
            data, dsum = content.slice(off, n)
            txid += 1
            last = i == nseg - 1
            yield t, tx.tcp(txid, txport, rxport, (seq + off) & 0xFFFFFFFF, ack, ACK | (PSH if last else 0),
                            data, dsum)
            off += n
            if i & 1 or last:
                acks.append((t + ack_delay, (seq + off) & 0xFFFFFFFF))
            if last:
                tseg = t
            else:
                t += gap
        for at, aseq in acks:
            rxid += 1
            yield at, rx.tcp(rxid, rxport, txport, ack, aseq, ACK)
            t = max(t, at)
        if who == "c":
            cseq, cid, sid = (cseq + off) & 0xFFFFFFFF, txid, rxid
        else:
            sseq, sid, cid = (sseq + off) & 0xFFFFFFFF, txid, rxid
        last_dir, first = who, False
    if close == "none":
        return
    if closer == "client":
        a, b, aport, bport, aseq, bseq, aid, bid, back = c2s, s2c, sport, dport, cseq, sseq, cid, sid, rtt
    else:
        a, b, aport, bport, aseq, bseq, aid, bid, back = s2c, c2s, dport, sport, sseq, cseq, sid, cid, _TINY
    t += 0.0005 if closer == "client" else rtt / 2
    if close == "rst":
        yield t, a.tcp(aid + 1, aport, bport, aseq, bseq, RST | ACK, win=0)
        return
    yield t, a.tcp(aid + 1, aport, bport, aseq, bseq, FIN | ACK)
    t += back
    yield t, b.tcp(bid + 1, bport, aport, bseq, (aseq + 1) & 0xFFFFFFFF, FIN | ACK)
    t += rtt if closer == "server" else _TINY
    yield t, a.tcp(aid + 2, aport, bport, (aseq + 1) & 0xFFFFFFFF, (bseq + 1) & 0xFFFFFFFF, ACK)


def tcp_probe(attacker: str, target: str, sport: int, dport: int, start: float, state: str = "closed",
              rtt: float = 0.01, rng: random.Random | None = None) -> Iterator[Packet]:
    """One SYN-scan probe: SYN; then SYN/ACK + the scanner's RST (open), RST/ACK (closed) or nothing
    (filtered)."""
    rng = _rng(rng)
    a2t, t2a = Path(attacker, target), Path(target, attacker, ttl=60)
    seq = rng.getrandbits(32)
    yield start, a2t.tcp(rng.randrange(1, 65535), sport, dport, seq, 0, SYN, win=1024,
                         opts=b"\x02\x04\x05\xb4")
    if state == "open":
        yield start + rtt, t2a.tcp(0, dport, sport, rng.getrandbits(32), (seq + 1) & 0xFFFFFFFF, SYN | ACK,
                                   win=65160, opts=b"\x02\x04\x05\xb4")
        yield start + rtt + _TINY, a2t.tcp(rng.randrange(1, 65535), sport, dport, (seq + 1) & 0xFFFFFFFF, 0,
                                           RST, win=0)
    elif state == "closed":
        yield start + rtt, t2a.tcp(0, dport, sport, 0, (seq + 1) & 0xFFFFFFFF, RST | ACK, win=0)


def udp_exchange(client: str, server: str, sport: int, dport: int, start: float,
                 messages: Sequence[tuple[str, bytes]] = (("c", b"\0" * 64), ("s", b"\0" * 64)),
                 rtt: float = 0.02, interval: float = 0.02, server_ttl: int = 52,
                 rng: random.Random | None = None) -> Iterator[Packet]:
    """Datagrams both ways: a reply comes one `rtt` after a request, same-side messages `interval` apart."""
    rng = _rng(rng)
    c2s, s2c = Path(client, server), Path(server, client, ttl=server_ttl)
    cid, sid = rng.randrange(1, 60000), rng.randrange(1, 60000)
    t, last = start, ""
    for i, (who, payload) in enumerate(messages):
        if i:
            t += interval if who == last else (rtt if who == "s" else _TINY)
        if who == "c":
            cid += 1
            yield t, c2s.udp(cid & 0xFFFF, sport, dport, payload)
        else:
            sid += 1
            yield t, s2c.udp(sid & 0xFFFF, dport, sport, payload)
        last = who


def udp_stream(client: str, server: str, sport: int, dport: int, start: float, packets: int,
               size: int = 1200, interval: float = 0.02,
               rng: random.Random | None = None) -> Iterator[Packet]:
    """A steady two-way UDP stream (a call, a QUIC download): `packets` datagrams, mostly server→client."""
    rng = _rng(rng)
    c2s, s2c = Path(client, server), Path(server, client, ttl=52)
    big, small = Content(size), Content(60)
    payload, psum = big.slice(rng.randrange(0, 4096), size)
    ack, asum = small.slice(rng.randrange(0, 4096), 60)
    t = start
    for i in range(packets):
        if i % 4 == 0:
            yield t, c2s.udp(i & 0xFFFF, sport, dport, ack, asum)
        else:
            yield t, s2c.udp(i & 0xFFFF, dport, sport, payload, psum)
        t += interval


# --- application payloads ----------------------------------------------------------------------------

def dns_message(name: str, qid: int, answer_ip: str | None = None, response: bool = False,
                qtype: int = dpkt.dns.DNS_A, ttl: int = 300, txt: bytes | None = None) -> bytes:
    """A DNS query, or its response (NXDOMAIN when `answer_ip` is None; with `txt`, a TXT answer)."""
    msg = dpkt.dns.DNS(id=qid, qd=[dpkt.dns.DNS.Q(name=name, type=qtype)])
    if response:
        msg.op = dpkt.dns.DNS_QR | dpkt.dns.DNS_RD | dpkt.dns.DNS_RA
        if txt is not None:
            msg.an = [dpkt.dns.DNS.RR(name=name, type=dpkt.dns.DNS_TXT, ttl=0, rdata=bytes([len(txt)]) + txt)]
        elif answer_ip is None:
            msg.rcode = dpkt.dns.DNS_RCODE_NXDOMAIN
        else:
            rr_type = dpkt.dns.DNS_AAAA if ":" in answer_ip else dpkt.dns.DNS_A
            msg.an = [dpkt.dns.DNS.RR(name=name, type=rr_type, ttl=ttl, rdata=host(answer_ip).packed)]
    else:
        msg.op = dpkt.dns.DNS_RD
    return bytes(msg)


def client_hello(sni: str, rng: random.Random, alpn: tuple[str, ...] = ("h2", "http/1.1")) -> bytes:
    """A TLS 1.3 ClientHello record (as browsers send it) whose server_name is `sni` (""): none, as Go's
    crypto/tls sends when its config names no server, e.g. Syncthing's) offering the `alpn` protocols."""
    def ext(kind: int, body: bytes) -> bytes:
        return struct.pack("!HH", kind, len(body)) + body

    name = sni.encode("idna")
    protocols = b"".join(bytes([len(p)]) + p.encode() for p in alpn)
    exts = b"".join((
        ext(0, struct.pack("!HBH", len(name) + 3, 0, len(name)) + name) if name else b"",
        ext(23, b""), ext(65281, b"\0"),
        ext(10, bytes.fromhex("0008001d001700180019")),
        ext(11, b"\x01\x00"),
        ext(16, struct.pack("!H", len(protocols)) + protocols),
        ext(13, bytes.fromhex("001004030804040105030805050108060601")),
        ext(43, bytes.fromhex("0403040303")),
        ext(45, b"\x01\x01"),
        ext(51, struct.pack("!HHH", 36, 0x001D, 32) + rng.randbytes(32)),
    ))
    suites = bytes.fromhex("130113021303c02bc02fc02cc030cca9cca8c013c014009c009d002f0035")
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32)
            + struct.pack("!H", len(suites)) + suites + b"\x01\x00" + struct.pack("!H", len(exts)) + exts)
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, 0x0301, len(hs)) + hs


def server_hello(rng: random.Random) -> bytes:
    """A TLS 1.3 ServerHello record plus ChangeCipherSpec; the encrypted rest follows as filler."""
    exts = struct.pack("!HHH", 43, 2, 0x0304) + struct.pack("!HHHH", 51, 36, 0x001D, 32) + rng.randbytes(32)
    body = (b"\x03\x03" + rng.randbytes(32) + b"\x20" + rng.randbytes(32) + b"\x13\x01\x00"
            + struct.pack("!H", len(exts)) + exts)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, 0x0303, len(hs)) + hs + b"\x14\x03\x03\x00\x01\x01"


def tls_messages(sni: str, request_bytes: int, response_bytes: int, rng: random.Random,
                 certificate_bytes: int = 2800) -> list[Message]:
    hello = client_hello(sni, rng)
    sh = server_hello(rng)
    return [("c", Content(len(hello), hello)),
            ("s", Content(len(sh) + certificate_bytes, sh, TLS_FILL)),
            # ChangeCipherSpec + Finished, then the request, in one flight
            ("c", Content(80 + request_bytes, b"\x14\x03\x03\x00\x01\x01", TLS_FILL)),
            ("s", Content(response_bytes, b"", TLS_FILL))]


def tls_session(client: str, server: str, sni: str, start: float, request_bytes: int = 400,
                response_bytes: int = 1500, *, sport: int = 50000, port: int = 443, rtt: float = 0.03,
                close: str = "fin", certificate_bytes: int = 2800, rng: random.Random | None = None,
                **kw: object) -> Iterator[Packet]:
    """HTTPS: the ClientHello (with SNI) is the client's first payload; the server's first flight is
    a ServerHello then `certificate_bytes` of encrypted handshake (small when a session is resumed)."""
    rng = _rng(rng)
    msgs = tls_messages(sni, request_bytes, response_bytes, rng, certificate_bytes)
    return tcp_session(client, server, sport, port, start, rtt=rtt, messages=msgs, close=close, rng=rng,
                       **kw)  # type: ignore[arg-type]


def http_messages(host_name: str, path: str, response_bytes: int, status: str = "200 OK",
                  user_agent: str = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
                  ) -> list[Message]:
    req = (f"GET {path} HTTP/1.1\r\nHost: {host_name}\r\nUser-Agent: {user_agent}\r\n"
           "Accept: */*\r\nConnection: close\r\n\r\n").encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n" \
           f"Content-Length: {response_bytes}\r\nConnection: close\r\n\r\n"
    resp = head.encode()
    return [("c", Content(len(req), req)), ("s", Content(len(resp) + response_bytes, resp, RANDOM_FILL))]


def http_session(client: str, server: str, host_name: str, start: float, path: str = "/",
                 response_bytes: int = 5000, *, sport: int = 50000, port: int = 80, rtt: float = 0.03,
                 status: str = "200 OK", rng: random.Random | None = None, **kw: object) -> Iterator[Packet]:
    """Plain HTTP: a real GET with Host, a response with headers; the server closes."""
    msgs = http_messages(host_name, path, response_bytes, status)
    return tcp_session(client, server, sport, port, start, rtt=rtt, messages=msgs, closer="server",
                       rng=rng, **kw)  # type: ignore[arg-type]


SSH_SERVER_BANNER = b"SSH-2.0-OpenSSH_9.2\r\n"


def ssh_messages(auth_attempts: int = 1, success: bool = False, data_bytes: int = 0) -> list[Message]:
    msgs: list[Message] = [
        ("s", Content(len(SSH_SERVER_BANNER), SSH_SERVER_BANNER)),
        ("c", Content(32, b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3\r\n")),
        ("c", Content(1536, b"\x00\x00\x05\xfc\x06\x14")),  # KEXINIT
        ("s", Content(1080, b"\x00\x00\x04\x34\x05\x14")),
        ("c", Content(48)), ("s", Content(564)), ("c", Content(16 + 44)), ("s", Content(44)),
    ]
    for _ in range(auth_attempts):
        msgs += [("c", Content(100), 0.4), ("s", Content(52))]  # password typed / tried, failure
    if success and data_bytes:
        msgs += [("c", Content(max(36, data_bytes // 10))), ("s", Content(data_bytes))]
    return msgs


def ssh_session(client: str, server: str, start: float, *, port: int = 22, sport: int = 50000,
                auth_attempts: int = 1, success: bool = False, data_bytes: int = 0, rtt: float = 0.03,
                rng: random.Random | None = None, **kw: object) -> Iterator[Packet]:
    """SSH: the server's banner `SSH-2.0-OpenSSH_9.2` comes first; after failed logins the server closes."""
    msgs = ssh_messages(auth_attempts, success, data_bytes)
    return tcp_session(client, server, sport, port, start, rtt=rtt, messages=msgs,
                       closer="client" if success else "server", rng=rng, **kw)  # type: ignore[arg-type]


def dns_query(client: str, resolver: str, name: str, answer_ip: str | None, start: float, *,
              sport: int = 53000, qid: int | None = None, rtt: float = 0.015,
              rng: random.Random | None = None, txt: bytes | None = None) -> Iterator[Packet]:
    """One DNS lookup over UDP 53 (A, or AAAA when the answer is IPv6; NXDOMAIN when answer_ip is None;
    with `txt`, a TXT lookup answered with that text)."""
    rng = _rng(rng)
    qid = rng.randrange(65536) if qid is None else qid
    qtype = dpkt.dns.DNS_AAAA if answer_ip and ":" in answer_ip else dpkt.dns.DNS_A
    if txt is not None:
        qtype = dpkt.dns.DNS_TXT
    q = dns_message(name, qid, qtype=qtype)
    r = dns_message(name, qid, answer_ip, response=True, qtype=qtype, txt=txt)
    return udp_exchange(client, resolver, sport, 53, start, (("c", q), ("s", r)), rtt=rtt, server_ttl=64,
                        rng=rng)


def icmp_echo(src: str, dst: str, start: float, count: int = 1, interval: float = 1.0, *, ident: int = 1,
              reply: bool = True, rtt: float = 0.02, size: int = 56) -> Iterator[Packet]:
    """Echo requests (ping; ICMPv6 for IPv6 addresses) and, if `reply`, their replies."""
    out, back = Path(src, dst), Path(dst, src, ttl=57)
    req, rep = (128, 129) if out.v6 else (8, 0)
    payload = RANDOM_FILL[:size]
    for i in range(count):
        t = start + i * interval
        yield t, out.icmp(i + 1, req, 0, ident, i + 1, payload)
        if reply:
            yield t + rtt, back.icmp(i + 1, rep, 0, ident, i + 1, payload)


def arp_who_has(src_ip: str, target_ip: str, start: float, *, reply: bool = True,
                src_mac: bytes | None = None, rtt: float = 0.0005) -> Iterator[Packet]:
    """"Who has target_ip? Tell src_ip" (broadcast), and the target's reply when it is alive."""
    smac = src_mac or host(src_ip).mac
    yield start, arp_frame(1, smac, src_ip, b"\0" * 6, target_ip)
    if reply:
        yield start + rtt, arp_frame(2, host(target_ip).mac, target_ip, smac, src_ip)


__all__ = ["arp_who_has", "client_hello", "dns_message", "dns_query", "http_session", "icmp_echo",
           "ssh_session", "tcp_packet_count", "tcp_probe", "tcp_session", "tls_session", "udp_exchange",
           "udp_stream"]
