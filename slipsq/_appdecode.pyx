# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of `slipsq.decode.app_events` for the packets the flow table hands up most:
DNS answers.

The rules are those of the readable `decode.app_events`, `decode._l4` and `appdecode.parse_dns` /
`appdecode.dns_name` (read their docstrings), followed line by line: the IP and TCP/UDP headers and
the DNS message are read from the packet's bytes in C, and Python objects are made only for the
event itself (names, answers, the data dict). Addresses get their text from the flow table's cache
(the same str objects as the flows). The rarer kinds (ARP, first TCP payloads: banners, TLS, HTTP)
go to the readable functions. tests/test_appdecode_compiled.py checks that both give equal events
for every input. Nothing here keeps state, and nothing raises on hostile bytes.
"""

from libc.stdint cimport uint8_t

from slipsq._decode cimport MAX_EXT, be16, ipv6_ext
from slipsq._flowtable cimport addr_text

from slipsq.appdecode import payload_events
from slipsq.appdecode import arp_events
from slipsq.flow import AppEvent

cdef enum:
    MAX_NAME = 255     # a name's labels and their length bytes, at most (appdecode.dns_name)


cdef inline bint dns_port(int port) noexcept nogil:
    return port == 53 or port == 5353  # decode.DNS_PORTS


def app_events(bytes ip_packet, double ts):
    """decode.app_events: the events in one handed-up packet (IP header first; ARP otherwise)."""
    cdef const uint8_t* b = <const uint8_t*><const char*>ip_packet
    cdef Py_ssize_t n = len(ip_packet), hl, pos, end, doff, k, step
    cdef int proto, sport, dport, family
    cdef const uint8_t* src
    cdef const uint8_t* dst
    if n == 0:
        return []
    if b[0] >> 4 != 4 and b[0] >> 4 != 6:
        return arp_events(ip_packet, ts)
    # decode._l4
    if b[0] >> 4 == 4:
        if n < 20:
            return []
        hl = (b[0] & 15) * 4
        if hl < 20 or be16(b + 2) < hl or n < hl or be16(b + 6) & 0x1FFF:
            return []
        family, proto, pos = 4, b[9], hl
        src, dst = b + 12, b + 16
        end = n if n < be16(b + 2) else be16(b + 2)
    else:
        if n < 40:
            return []
        family, proto, pos = 6, b[6], 40
        src, dst = b + 8, b + 24
        end = n if n < 40 + be16(b + 4) else 40 + be16(b + 4)
        for k in range(MAX_EXT):
            if not ipv6_ext(proto):
                break
            if pos + 8 > end or (proto == 44 and be16(b + pos + 2) >> 3):
                return []
            step = 8 if proto == 44 else (b[pos + 1] + 2) * 4 if proto == 51 else (b[pos + 1] + 1) * 8
            proto, pos = b[pos], pos + step
    if proto == 6 and end - pos >= 20:
        doff = (b[pos + 12] >> 4) * 4
        if doff < 20:
            return []
        sport, dport = be16(b + pos), be16(b + pos + 2)
        pos += doff
    elif proto == 17 and end - pos >= 8:
        sport, dport = be16(b + pos), be16(b + pos + 2)
        pos += 8
    else:
        return []
    if pos > end:
        pos = end  # a data offset past the end: an empty payload, as a Python slice gives
    proto_name = "tcp" if proto == 6 else "udp"
    if dns_port(sport) or dns_port(dport):
        # appdecode.dns_events
        if proto == 6:  # DNS over TCP: a 2-byte length, then the message
            if end - pos < 2:
                return []
            k = be16(b + pos)
            pos += 2
            if pos + k < end:
                end = pos + k
        data = parse_dns(b + pos, end - pos)
        if data is None:
            return []
        return [AppEvent(ts, "dns", addr_text(src, family), sport, addr_text(dst, family), dport, proto_name,
                         data)]
    if proto == 6 and end > pos:
        return payload_events((ts, addr_text(src, family), sport, addr_text(dst, family), dport, proto_name),
                              ip_packet[pos:end])
    return []


def parse_dns_message(bytes msg):
    """appdecode.parse_dns on a whole message (for tests)."""
    return parse_dns(<const uint8_t*><const char*>msg, len(msg))


cdef object parse_dns(const uint8_t* m, Py_ssize_t n):
    """appdecode.parse_dns: query, qtype, A/AAAA answers, rcode, response; None when unreadable."""
    cdef Py_ssize_t pos, rdlen
    cdef int flags, qdcount, ancount, qtype, rtype, i
    if n < 12:
        return None
    flags, qdcount, ancount = be16(m + 2), be16(m + 4), be16(m + 6)
    if qdcount == 0:
        return None
    query = dns_name(m, n, 12, &pos)
    if query is None or pos + 4 > n:
        return None
    qtype = be16(m + pos)
    pos += 4
    for i in range(min(qdcount - 1, 64)):
        if dns_name(m, n, pos, &pos) is None:
            break
        pos += 4
    answers = []
    for i in range(min(ancount, 256)):
        if dns_name(m, n, pos, &pos) is None or pos + 10 > n:
            break
        rtype, rdlen = be16(m + pos), be16(m + pos + 8)
        pos += 10
        if pos + rdlen > n:
            break
        if (rtype == 1 and rdlen == 4) or (rtype == 28 and rdlen == 16):
            answers.append(addr_text(m + pos, 4 if rdlen == 4 else 6))
        pos += rdlen
    return {"query": query.lower(), "qtype": qtype, "answers": answers, "rcode": flags & 0xF,
            "response": bool(flags & 0x8000)}


cdef str dns_name(const uint8_t* m, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t* after_out):
    """appdecode.dns_name: the name at `pos` (None when unreadable) and, in *after_out, the position
    after it. Pointers must go backwards (no loops)."""
    cdef char out[MAX_NAME + 1]
    cdef Py_ssize_t after = 0, limit = pos, total = 0, used = 0, i
    cdef int length
    while True:
        if pos >= n:
            after_out[0] = pos
            return None
        length = m[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 2 > n or (be16(m + pos) & 0x3FFF) >= limit:
                after_out[0] = pos
                return None
            if not after:
                after = pos + 2
            limit = pos = be16(m + pos) & 0x3FFF
            continue
        if length & 0xC0:
            after_out[0] = pos
            return None
        total += length + 1
        if total > MAX_NAME or pos + 1 + length > n:
            after_out[0] = pos
            return None
        if used:
            out[used] = 46  # "."
            used += 1
        for i in range(length):
            out[used + i] = <char>m[pos + 1 + i]
        used += length
        pos += 1 + length
    after_out[0] = after if after else pos
    return out[:used].decode("utf-8", "replace")
