# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled twin of `slipsq.decode.app_events` for the packets the flow table hands up most:
DNS answers.

The rules are those of the readable `decode.app_events`, `decode._l4` and `appdecode.parse_dns` /
`appdecode.dns_name` (read their docstrings), followed line by line: the IP and TCP/UDP headers and
the DNS message are read from the packet's bytes in C, and Python objects are made only for the
event itself (names, answers, the data dict), each built by writing its slots. Addresses get their
text from the flow table's cache (the same str objects as the flows). First TCP payloads (banners,
TLS server names, an HTTP request's line and Host/User-Agent headers: `appdecode.http_request`) and
ARP frames are read here too. tests/test_appdecode_compiled.py checks that both give equal events
for every input. Nothing here keeps state, and nothing raises on hostile bytes.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII, PyUnicode_DecodeLatin1
from libc.stdint cimport uint8_t
from libc.string cimport memchr, memcmp

cdef extern from "string.h":
    void* memmem(const void* haystack, size_t haystacklen, const void* needle, size_t needlelen) nogil

from slipsq._decode cimport MAX_EXT, be16, ipv6_ext
from slipsq._flowslots cimport (E_DADDR, E_DATA, E_DPORT, E_KIND, E_PROTO, E_SADDR, E_SPORT, E_TS, EventSlots,
                                event_slots, slot_put, slots_alloc)
from slipsq._flowtable cimport addr_text, openvpn_start, rdp_start, smb_start, telnet_start

from slipsq.flow import AppEvent

# an AppEvent is built by writing its slots (_flowslots.pxd), not through the dataclass's __init__
cdef EventSlots EV
event_slots(&EV, AppEvent)


cdef object new_event(double ts, str kind, str saddr, int sport, str daddr, int dport, str proto, dict data):
    """AppEvent(ts, kind, saddr, sport, daddr, dport, proto, data)."""
    if not EV.buildable:
        return AppEvent(ts, kind, saddr, sport, daddr, dport, proto, data)
    ev = slots_alloc(AppEvent)
    slot_put(ev, EV.offset[E_TS], ts)
    slot_put(ev, EV.offset[E_KIND], kind)
    slot_put(ev, EV.offset[E_SADDR], saddr)
    slot_put(ev, EV.offset[E_SPORT], sport)
    slot_put(ev, EV.offset[E_DADDR], daddr)
    slot_put(ev, EV.offset[E_DPORT], dport)
    slot_put(ev, EV.offset[E_PROTO], proto)
    slot_put(ev, EV.offset[E_DATA], data)
    return ev

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
        return arp(b, n, ts)
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
        return [new_event(ts, "dns", addr_text(src, family), sport, addr_text(dst, family), dport, proto_name,
                          data)]
    if proto == 6 and end > pos:
        return payload_events(ip_packet, pos, end, ts, addr_text(src, family), sport, addr_text(dst, family),
                              dport)
    return []


cdef const char* HEX = b"0123456789abcdef"


cdef list arp(const uint8_t* b, Py_ssize_t n, double ts):
    """appdecode.arp_events: the event of an Ethernet/IPv4 ARP frame (`b` from the ARP header)."""
    cdef char mac[17]
    cdef int i
    if n < 28 or be16(b) != 1 or be16(b + 2) != 0x0800 or b[4] != 6 or b[5] != 4:
        return []
    for i in range(6):  # bytes.hex(":"): two lower-case digits a byte
        mac[3 * i] = HEX[b[8 + i] >> 4]
        mac[3 * i + 1] = HEX[b[8 + i] & 15]
        if i < 5:
            mac[3 * i + 2] = 58  # ":"
    src_ip, dst_ip = addr_text(b + 14, 4), addr_text(b + 24, 4)
    return [new_event(ts, "arp", src_ip, 0, dst_ip, 0, "arp",
                      {"op": be16(b + 6), "src_mac": mac[:17].decode("ascii"), "src_ip": src_ip, "dst_ip": dst_ip})]


# --- first TCP payloads: appdecode.payload_events, service and tls_sni ---------------------------

cdef bint starts(const uint8_t* p, Py_ssize_t n, const char* prefix, Py_ssize_t k) noexcept:
    return n >= k and memcmp(p, prefix, k) == 0


cdef bint has_upper(const uint8_t* p, Py_ssize_t n, const char* word) noexcept:
    """`word` (4 upper-case ASCII letters) in p[:n].upper(): bytes.upper() changes ASCII only."""
    cdef Py_ssize_t i, j
    cdef uint8_t ch
    for i in range(n - 3):
        for j in range(4):
            ch = p[i + j]
            if ch >= 97 and ch <= 122:
                ch -= 32
            if ch != <uint8_t>word[j]:
                break
        else:
            return True
    return False


cdef bint http_start(const uint8_t* p, Py_ssize_t n) noexcept:
    """appdecode.HTTP_METHODS or b"HTTP/" starts the payload."""
    return (starts(p, n, b"GET ", 4) or starts(p, n, b"POST ", 5) or starts(p, n, b"HEAD ", 5)
            or starts(p, n, b"PUT ", 4) or starts(p, n, b"DELETE ", 7) or starts(p, n, b"OPTIONS ", 8)
            or starts(p, n, b"CONNECT ", 8) or starts(p, n, b"PATCH ", 6) or starts(p, n, b"TRACE ", 6)
            or starts(p, n, b"HTTP/", 5))


cdef str service(const uint8_t* p, Py_ssize_t n):
    """appdecode.service, on a payload of n >= 1 bytes."""
    if starts(p, n, b"SSH-", 4):
        return "ssh"
    if starts(p, n, b"220", 3):
        return "smtp" if has_upper(p, min(n, 200), b"SMTP") or has_upper(p, min(n, 200), b"MAIL") else "ftp"
    if rdp_start(p, n):
        return "rdp"
    if smb_start(p, n):
        return "smb"
    if telnet_start(p, n):
        return "telnet"
    if starts(p, n, b"RFB ", 4):
        return "vnc"
    if http_start(p, n):
        return "http"
    if n >= 3 and p[0] == 0x16 and p[1] == 3:
        return "tls"
    if openvpn_start(p, n):
        return "openvpn"
    return "unknown"


cdef Py_ssize_t extension(const uint8_t* p, Py_ssize_t n, Py_ssize_t wanted, Py_ssize_t* ext_end) noexcept:
    """appdecode._extension, step for step: where extension `wanted` starts (its end of extensions
    in ext_end), or -1."""
    cdef Py_ssize_t pos, end, ext_type, ext_len
    if n < 44 or p[0] != 0x16 or p[5] != 1:
        return -1
    pos = 43
    pos += 1 + p[pos]
    if pos + 2 > n:
        return -1
    pos += 2 + be16(p + pos)
    if pos + 1 > n:
        return -1
    pos += 1 + p[pos]
    if pos + 2 > n:
        return -1
    end = min(n, pos + 2 + be16(p + pos))
    pos += 2
    while pos + 4 <= end:
        ext_type, ext_len = be16(p + pos), be16(p + pos + 2)
        pos += 4
        if ext_type == wanted:
            ext_end[0] = end
            return pos
        pos += ext_len
    return -1


cdef object tls_sni(const uint8_t* p, Py_ssize_t n):
    """appdecode.tls_sni, step for step: the ClientHello's server name, or None."""
    cdef Py_ssize_t end = 0, name_len, i
    cdef Py_ssize_t pos = extension(p, n, 0, &end)
    if pos < 0:
        return None
    if pos + 5 > end or p[pos + 2] != 0:
        return None
    name_len = be16(p + pos + 3)
    if pos + 5 + name_len > end:
        return None
    if name_len == 0 or name_len > MAX_NAME:
        return None
    for i in range(name_len):
        if p[pos + 5 + i] >= 0x80:
            return None
    return PyUnicode_DecodeASCII(<const char*>p + pos + 5, name_len, NULL).lower()


cdef object tls_alpn(const uint8_t* p, Py_ssize_t n):
    """appdecode.tls_alpn, step for step: the first protocol the ClientHello offers, or None."""
    cdef Py_ssize_t end = 0, k, i
    cdef Py_ssize_t pos = extension(p, n, 16, &end)
    if pos < 0 or pos + 3 > end:
        return None
    k = p[pos + 2]
    if k == 0 or pos + 3 + k > end:
        return None
    for i in range(k):
        if not 0x21 <= p[pos + 3 + i] <= 0x7E:
            return None
    return PyUnicode_DecodeASCII(<const char*>p + pos + 3, k, NULL)


cdef inline bint latin1_space(uint8_t c) noexcept:
    """What str.strip() strips of a latin-1 character: \\t \\n \\v \\f \\r, \\x1c-\\x1f, space, \\x85, \\xa0."""
    return (9 <= c <= 13) or (28 <= c <= 32) or c == 0x85 or c == 0xA0


cdef bint header_is(const uint8_t* p, Py_ssize_t n, const char* name, Py_ssize_t k) noexcept:
    """`p[:n].decode("latin-1").strip().lower() == name` for a lowercase ASCII name: no latin-1
    letter lowercases to ASCII, so the test is ASCII case-insensitive after the strip."""
    cdef Py_ssize_t i = 0, j = n, m  # (m untyped was a Python range and int objects: ~1,500 instructions a call)
    while i < j and latin1_space(p[i]):
        i += 1
    while j > i and latin1_space(p[j - 1]):
        j -= 1
    if j - i != k:
        return False
    for m in range(k):
        if (p[i + m] | 0x20 if 65 <= p[i + m] <= 90 else p[i + m]) != <uint8_t>name[m]:
            return False
    return True


cdef inline Py_ssize_t find_byte(const uint8_t* p, Py_ssize_t i, Py_ssize_t end, int c) noexcept:
    """The first j in [i, end) with p[j] == c, else end (memchr: libc's word-at-a-time scan)."""
    if i >= end:
        return end
    cdef const uint8_t* at = <const uint8_t*>memchr(p + i, c, <size_t>(end - i))
    return end if at == NULL else at - p


cdef inline Py_ssize_t line_end_at(const uint8_t* p, Py_ssize_t i, Py_ssize_t end) noexcept:
    """Where the line that starts at i ends: at its CRLF, or at `end`."""
    while True:
        i = find_byte(p, i, end - 1, 13)  # a CR with a byte after it, inside the head
        if i >= end - 1:
            return end
        if p[i + 1] == 10:
            return i
        i += 1


cdef dict http_fields(const uint8_t* p, Py_ssize_t n):
    """appdecode.http_request of p[:n]: the request line's method and URI, the Host (stripped,
    lowered) and User-Agent (stripped) headers, the last of each winning; the lines are found in C
    and only what is kept is decoded."""
    cdef Py_ssize_t end = n, start, colon, sp1, sp2
    # the head ends at the first blank line (the byte scans are libc's memmem and memchr: byte by
    # byte here, a request of 1 kB of headers cost ~12,000 instructions)
    cdef const uint8_t* blank = <const uint8_t*>memmem(p, <size_t>n, b"\r\n\r\n", 4) if n >= 4 else NULL
    if blank != NULL:
        end = blank - p
    cdef Py_ssize_t line_end = line_end_at(p, 0, end)  # the request line
    sp1 = find_byte(p, 0, line_end, 32)
    uri = ""
    if sp1 < line_end:
        sp2 = find_byte(p, sp1 + 1, line_end, 32)
        uri = PyUnicode_DecodeLatin1(<const char*>p + sp1 + 1, sp2 - sp1 - 1, NULL)
    data = {"method": PyUnicode_DecodeLatin1(<const char*>p, sp1, NULL), "uri": uri, "host": "", "user_agent": ""}
    start = line_end + 2
    while start <= end and line_end < end:  # each header line
        line_end = line_end_at(p, start, end)
        colon = find_byte(p, start, line_end, 58)
        if colon < line_end:
            if header_is(p + start, colon - start, "host", 4):
                data["host"] = PyUnicode_DecodeLatin1(<const char*>p + colon + 1, line_end - colon - 1, NULL).strip().lower()
            elif header_is(p + start, colon - start, "user-agent", 10):
                data["user_agent"] = PyUnicode_DecodeLatin1(<const char*>p + colon + 1, line_end - colon - 1, NULL).strip()
        start = line_end + 2
    return data


def http_request_c(bytes payload):
    """http_fields of a whole payload (for the tests that hold it equal to appdecode.http_request)."""
    return http_fields(<const uint8_t*><const char*>payload, len(payload))


cdef list payload_events(bytes packet, Py_ssize_t pos, Py_ssize_t end, double ts, str saddr, int sport,
                         str daddr, int dport):
    """appdecode.payload_events for the payload packet[pos:end] (not empty) of a TCP segment."""
    cdef const uint8_t* p = <const uint8_t*><const char*>packet + pos
    cdef Py_ssize_t n = end - pos
    cdef str svc = service(p, n)
    events = [new_event(ts, "banner", saddr, sport, daddr, dport, "tcp",
                        {"service": svc, "text": PyUnicode_DecodeLatin1(<const char*>p, min(n, 64), NULL)})]
    if svc == "tls":
        sni = tls_sni(p, n)
        if sni is not None:
            events.append(new_event(ts, "tls", saddr, sport, daddr, dport, "tcp", {"sni": sni}))
        else:
            alpn = tls_alpn(p, n)
            if alpn is not None:
                events.append(new_event(ts, "tls", saddr, sport, daddr, dport, "tcp", {"alpn": alpn}))
    elif svc == "http" and not starts(p, n, b"HTTP/", 5):
        events.append(new_event(ts, "http", saddr, sport, daddr, dport, "tcp", http_fields(p, n)))
    elif svc == "openvpn":
        events.append(new_event(ts, "tunnel", saddr, sport, daddr, dport, "tcp", {"protocol": svc}))
    return events


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
        if not skip_name(m, n, pos, &pos):
            break
        pos += 4
    answers = []
    for i in range(min(ancount, 256)):
        if not skip_name(m, n, pos, &pos) or pos + 10 > n:
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
    cdef Py_ssize_t used = walk_name(m, n, pos, after_out, out)
    return None if used < 0 else out[:used].decode("utf-8", "replace")


cdef inline bint skip_name(const uint8_t* m, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t* after_out) noexcept:
    """appdecode.skip_name: whether the name at `pos` nobody reads is readable, and in *after_out the
    position after it (or where it stopped); a pointer ends it (checked to point backwards, not
    followed: O(size) a message)."""
    return walk_name(m, n, pos, after_out, NULL) >= 0


cdef Py_ssize_t walk_name(const uint8_t* m, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t* after_out,
                          char* out) noexcept:
    """appdecode._walk_name: the name's length written in `out` (pointers followed), or with `out`
    NULL 0 and the first pointer ends the name; -1 when unreadable; *after_out the position after it
    (or where it stopped)."""
    cdef Py_ssize_t after = 0, limit = pos, total = 0, used = 0, i
    cdef int length
    while True:
        if pos >= n:
            after_out[0] = pos
            return -1
        length = m[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 2 > n or (be16(m + pos) & 0x3FFF) >= limit:
                after_out[0] = pos
                return -1
            if out == NULL:
                after_out[0] = pos + 2
                return 0
            if not after:
                after = pos + 2
            limit = pos = be16(m + pos) & 0x3FFF
            continue
        if length & 0xC0:
            after_out[0] = pos
            return -1
        total += length + 1
        if total > MAX_NAME or pos + 1 + length > n:
            after_out[0] = pos
            return -1
        if out != NULL:
            if used:
                out[used] = 46  # "."
                used += 1
            for i in range(length):
                out[used + i] = <char>m[pos + 1 + i]
            used += length
        pos += 1 + length
    after_out[0] = after if after else pos
    return used


def tls_server_name(bytes payload):
    """appdecode.tls_sni on a whole payload (for tests)."""
    return tls_sni(<const uint8_t*><const char*>payload, len(payload))


def tls_protocol(bytes payload):
    """appdecode.tls_alpn on a whole payload (for tests)."""
    return tls_alpn(<const uint8_t*><const char*>payload, len(payload))
