# The compiled packet decoder: fixed headers (link, IP, TCP/UDP/ICMP) into a `Parsed` C struct.
#
# Its readable twin is `slipsq/decode.py` (`decode.parse`, `_ipv4`, `_ipv6`, `_transport`): the rules
# are in that module's docstring, and these functions follow it line by line (tests/test_decode.py
# checks both give the same fields for every input, through `_decode.parse_packet`).
#
# Everything here is `cdef inline ... noexcept nogil` and lives in this .pxd, so each compiled module
# that cimports it (the flow table, the app decoder) gets the code compiled into its own C: a packet is
# decoded with no call across modules, no Python object and no state. Anything with state (the address
# text cache) or with a rule of the flow table's (what is handed up) belongs in `_flowtable.pyx`.

from libc.stdint cimport uint8_t
from libc.string cimport memset

cdef enum:
    MAX_EXT = 8            # IPv6 extension headers followed before a packet counts as malformed


ctypedef struct Parsed:
    const uint8_t* src     # packed addresses, pointing into the packet (4 or 16 bytes)
    const uint8_t* dst
    int family             # 4, 6, or 0 when no IP header was found
    int proto
    int sport
    int dport
    int tcp_flags
    int ip_len             # the IP total length (IPv6: 40 + payload length), never the captured length
    int tos
    int frag               # 1: first fragment, 2: a later one
    int malformed
    int arp
    Py_ssize_t ip_off      # where the IP (or ARP) header starts
    int payload_len


cdef inline int be16(const uint8_t* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline bint ipv6_ext(int nxt) noexcept nogil:
    """Hop-by-hop, routing, destination options, AH, fragment: the extension headers followed."""
    return nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51 or nxt == 44


cdef inline Py_ssize_t smin(Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    return a if a < b else b


cdef inline bint icmp_id_type(int proto, int t) noexcept nogil:
    if proto == 1:
        return t == 0 or t == 8 or (13 <= t <= 18)
    return t == 128 or t == 129


cdef inline void parse_transport(Parsed* p, const uint8_t* buf, Py_ssize_t pos, Py_ssize_t end,
                                 Py_ssize_t l4_len) noexcept nogil:
    cdef Py_ssize_t avail = smin(end - pos, l4_len)
    cdef int proto = p.proto, doff
    if proto == 6:
        if avail < 20:
            p.malformed = 1
            return
        doff = (buf[pos + 12] >> 4) * 4
        if doff < 20 or doff > l4_len:
            p.malformed = 1
            return
        p.sport = be16(buf + pos)
        p.dport = be16(buf + pos + 2)
        p.tcp_flags = be16(buf + pos + 12) & 0x1FF
        p.payload_len = <int>(l4_len - doff)
    elif proto == 17:
        if avail < 8:
            p.malformed = 1
            return
        p.sport = be16(buf + pos)
        p.dport = be16(buf + pos + 2)
        p.payload_len = <int>(l4_len - 8)
    elif (proto == 1 and p.family == 4) or (proto == 58 and p.family == 6):
        if avail < 4:
            p.malformed = 1
            return
        p.sport = buf[pos]
        if icmp_id_type(proto, buf[pos]):
            if avail < 8:
                p.malformed = 1
                return
            p.dport = be16(buf + pos + 4)
        else:
            p.dport = buf[pos + 1]


cdef inline void parse_ipv4(Parsed* p, const uint8_t* buf, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    cdef int hl, fo
    if n < off + 20 or buf[off] >> 4 != 4:
        p.malformed = 1
        return
    p.family = 4
    p.src = buf + off + 12
    p.dst = buf + off + 16
    p.proto = buf[off + 9]
    p.tos = buf[off + 1]
    p.ip_len = be16(buf + off + 2)
    hl = (buf[off] & 15) * 4
    if hl < 20 or p.ip_len < hl or n < off + hl:
        p.malformed = 1
        return
    fo = be16(buf + off + 6)
    if fo & 0x1FFF:
        p.frag = 2
        return
    if fo & 0x2000:
        p.frag = 1
    parse_transport(p, buf, off + hl, smin(n, off + p.ip_len), p.ip_len - hl)


cdef inline bint v4_mapped(const uint8_t* a) noexcept nogil:
    """::ffff:0:0/96 (ten zero bytes, then 0xff 0xff)."""
    cdef int i
    for i in range(10):
        if a[i]:
            return False
    return a[10] == 0xFF and a[11] == 0xFF


cdef inline void parse_ipv6(Parsed* p, const uint8_t* buf, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    cdef Py_ssize_t end, pos
    cdef int nxt, count = 0
    if n < off + 40 or buf[off] >> 4 != 6:
        p.malformed = 1
        return
    p.family = 6
    p.src = buf + off + 8
    p.dst = buf + off + 24
    p.tos = ((buf[off] & 15) << 4) | (buf[off + 1] >> 4)
    p.ip_len = 40 + be16(buf + off + 4)
    if v4_mapped(p.src) or v4_mapped(p.dst):
        p.malformed = 1
        return
    end = smin(n, off + p.ip_len)
    nxt = buf[off + 6]
    pos = off + 40
    while ipv6_ext(nxt):
        count += 1
        if count > MAX_EXT or pos + 8 > end:
            p.proto = nxt
            p.malformed = 1
            return
        if nxt == 44:
            nxt = buf[pos]
            if be16(buf + pos + 2) >> 3:
                p.proto = nxt
                p.frag = 2
                return
            pos += 8
            p.frag = 1
            continue
        if nxt == 51:
            nxt, pos = buf[pos], pos + (buf[pos + 1] + 2) * 4
        else:
            nxt, pos = buf[pos], pos + (buf[pos + 1] + 1) * 8
        if pos > end:
            p.proto = nxt
            p.malformed = 1
            return
    p.proto = nxt
    parse_transport(p, buf, pos, end, p.ip_len - (pos - off))


cdef inline void parse(const uint8_t* buf, Py_ssize_t n, int linktype, Parsed* p) noexcept nogil:
    cdef Py_ssize_t off = 0, at = 0
    cdef int etype, version
    memset(p, 0, sizeof(Parsed))
    # link types by number, as named in slipsq.decode: raw IP 101/12/14, IPV4 228, IPV6 229,
    # ETHERNET 1, LINUX_SLL 113, LINUX_SLL2 276
    if linktype == 101 or linktype == 12 or linktype == 14:
        etype = -1
    elif linktype == 228:
        etype = 0x0800
    elif linktype == 229:
        etype = 0x86DD
    else:
        if linktype == 1:
            off, at = 14, 12
        elif linktype == 113:
            off, at = 16, 14
        elif linktype == 276:
            off, at = 20, 0
        else:
            return  # unknown link type: non-IP
        if n < off:
            p.malformed = 1
            return
        etype = be16(buf + at)
        while etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:
            if n < off + 4:
                p.malformed = 1
                return
            etype = be16(buf + off + 2)
            off += 4
    if etype == 0x0806:
        p.arp = 1
        p.ip_off = off
        return
    if etype == -1:
        if n <= off:
            p.malformed = 1
            return
        version = buf[off] >> 4
        if version == 4:
            etype = 0x0800
        elif version == 6:
            etype = 0x86DD
        else:
            p.malformed = 1
            return
    p.ip_off = off
    if etype == 0x0800:
        parse_ipv4(p, buf, n, off)
    elif etype == 0x86DD:
        parse_ipv6(p, buf, n, off)
