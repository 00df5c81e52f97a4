# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled flow table: bidirectional flows from decoded packets, and what it hands up.

The rules are those of the readable twin `slipsq/flowtable.py` (read its docstring); both must emit
the same flows in the same order and hand up the same packets. Packets are decoded by the inline
functions of `_decode.pxd` (twin: `slipsq/decode.py`), compiled into this module. Flows live in C
structs (allocated 4096 at a time and never moved), found through a chained hash of uint32 indices,
and sit on one LRU list per timeout class plus one list ordered by active-report due time; expiry
reads only the old ends of those lists. Python objects are made only when a flow is emitted or a
packet is handed up for deep parsing.

Also here, because they are the table's: the first-payload classifier (which packets are handed up
is a table rule; twin: `flowtable.first_payload_class`), and the address-text cache, the one place
compiled code turns a packed address into its str (`addr_text`, cimported by `_appdecode` so events
and flows share one str per address). The sources (`sources/_pcap.pyx`, `sources/_nfq.pyx`) call
`feed_link`/`feed_ip` through `_flowtable.pxd`, C to C. This module does no I/O and never calls
Python per packet.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from libc.math cimport INFINITY, floor
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memset

from slipsq._decode cimport Parsed, parse, smin
from slipsq._flowslots cimport (F_CLOSED_BY, F_DADDR, F_DBYTES, F_DIR, F_DPKTS, F_DPORT, F_DTOS, F_END, F_LABEL,
                                F_PROTO, F_SADDR, F_SBYTES, F_SPKTS, F_SPORT, F_START, F_STATE, F_STOS, FlowSlots,
                                flow_alloc, flow_put, flow_slots)

import ipaddress
from dataclasses import fields
from socket import AF_INET, AF_INET6, inet_pton

from slipsq.flow import Flow, proto_name
from slipsq.appdecode import APP_KINDS, app_kinds_of, app_mask

cdef FlowSlots SLOTS  # _emit writes a Flow's slots itself when that makes what Flow(...) makes
flow_slots(&SLOTS, Flow, tuple(f.name for f in fields(Flow)))

cdef extern from "arpa/inet.h" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, unsigned int size)

cdef extern from "sys/socket.h":
    int AF_INET
    int AF_INET6

cdef extern from *:
    """
    #define SQ_NIL 0xFFFFFFFFu
    """
    const uint32_t NIL "SQ_NIL"

cdef enum:
    CHUNK = 1 << CHUNK_BITS
    FREE = 255
    CLOSE_FIN = 1
    CLOSE_RST = 2
    TH_FIN = 0x01
    TH_SYN = 0x02
    TH_RST = 0x04
    TH_PSH = 0x08
    TH_ACK = 0x10
    MAX_FLOWS_CAP = 0x7FFFFFFF  # flows are found by uint32 index; memory runs out long before

cdef str FLAG_LETTERS = "FSRPAUEC"

cdef enum:  # app kind bits: slipsq.flowtable.APP_KINDS (checked at import below)
    APP_DNS = 1
    APP_DNS_ALL = 2
    APP_BANNER = 4
    APP_TLS = 8
    APP_HTTP = 16
    APP_ARP = 32
    APP_PAYLOAD = 64
    APP_TUNNEL = 128
    APP_ALL = 255

if (APP_KINDS != {"dns": APP_DNS, "dns-queries": APP_DNS_ALL, "banner": APP_BANNER, "tls": APP_TLS,
                  "http": APP_HTTP, "arp": APP_ARP, "payload": APP_PAYLOAD, "tunnel": APP_TUNNEL}
        or sum(APP_KINDS.values()) != APP_ALL):
    raise ImportError("slipsq._flowtable is out of date with slipsq.flowtable.APP_KINDS: rebuild it")


# --- what is handed up (mirrors slipsq/flowtable.dns_answer and first_payload_class) -----------------

cdef inline Py_ssize_t dns_header(const uint8_t* buf, Py_ssize_t n, Parsed* p, Py_ssize_t need) noexcept nogil:
    """Where the DNS header starts (after TCP's 2-byte length), or -1 when fewer than `need` bytes
    of it are there."""
    cdef Py_ssize_t end = smin(n, p.ip_off + p.ip_len)
    cdef Py_ssize_t pos = p.ip_off + p.ip_len - p.payload_len + (2 if p.proto == 6 else 0)
    return pos if end - pos >= need else -1


cdef inline bint dns_response(const uint8_t* buf, Py_ssize_t n, Parsed* p) noexcept nogil:
    cdef Py_ssize_t pos = dns_header(buf, n, p, 3)
    return pos >= 0 and (buf[pos + 2] & 0x80) != 0


cdef inline bint dns_answer(const uint8_t* buf, Py_ssize_t n, Parsed* p) noexcept nogil:
    cdef Py_ssize_t pos = dns_header(buf, n, p, 8)
    return pos >= 0 and (buf[pos + 2] & 0x80) != 0 and (
        (buf[pos + 6] | buf[pos + 7]) != 0 or (buf[pos + 3] & 0xF) == 3)


cdef inline bint starts(const uint8_t* b, Py_ssize_t k, const char* s, Py_ssize_t m) noexcept nogil:
    return k >= m and memcmp(b, s, m) == 0


cdef int first_payload_class(const uint8_t* buf, Py_ssize_t n, Parsed* p) noexcept nogil:
    cdef Py_ssize_t pos = p.ip_off + p.ip_len - p.payload_len
    cdef Py_ssize_t k = smin(n, p.ip_off + p.ip_len) - pos
    cdef const uint8_t* b = buf + pos
    if k <= 0:
        return 0
    if starts(b, k, b"SSH-", 4) or starts(b, k, b"220", 3) or starts(b, k, b"RFB ", 4) or telnet_start(b, k):
        return APP_BANNER
    if rdp_start(b, k):
        return APP_BANNER  # TPKT, then an X.224 Connection Request or Confirm: RDP
    if smb_start(b, k):
        return APP_BANNER
    if (starts(b, k, b"GET ", 4) or starts(b, k, b"POST ", 5) or starts(b, k, b"HEAD ", 5)
            or starts(b, k, b"PUT ", 4) or starts(b, k, b"DELETE ", 7) or starts(b, k, b"OPTIONS ", 8)
            or starts(b, k, b"CONNECT ", 8) or starts(b, k, b"PATCH ", 6) or starts(b, k, b"TRACE ", 6)):
        return APP_HTTP
    if k >= 6 and b[0] == 0x16 and b[1] == 3 and b[5] == 1:
        return APP_TLS
    if openvpn_start(b, k):
        return APP_TUNNEL  # an OpenVPN client's hard reset: its server is a VPN's
    return 0


# --- hashing ----------------------------------------------------------------------------------------

cdef inline uint64_t mix64(uint64_t x) noexcept nogil:
    x ^= x >> 33
    x *= <uint64_t>0xFF51AFD7ED558CCDULL
    x ^= x >> 33
    x *= <uint64_t>0xC4CEB9FE1A85EC53ULL
    x ^= x >> 33
    return x


cdef inline uint64_t addr_word(const uint8_t* a, int family) noexcept nogil:
    cdef uint32_t v4
    cdef uint64_t w[2]
    if family == 4:
        memcpy(&v4, a, 4)
        return v4
    memcpy(w, a, 16)
    return w[0] ^ (w[1] * <uint64_t>0x9E3779B97F4A7C15ULL)


cdef inline int addr_words(const uint8_t* a, size_t alen, uint64_t* w) noexcept nogil:
    """An address (alen 4 or 16) as 1 or 2 integers, loaded without a libc call; returns how many."""
    cdef uint32_t v4
    if alen == 4:
        memcpy(&v4, a, 4)
        w[0] = v4
        return 1
    memcpy(w, a, 16)
    return 2


cdef inline bint addr_eq(const uint8_t* x, const uint8_t* y, size_t alen) noexcept nogil:
    """memcmp(x, y, alen) == 0 for an address (alen 4 or 16) as one or two integer compares: the
    length is not known to the compiler at a memcmp call, so each one was a libc call (several per
    packet: the bucket chain, the direction, the block set)."""
    cdef uint64_t x8[2]
    cdef uint64_t y8[2]
    if addr_words(x, alen, x8) == 1:
        addr_words(y, alen, y8)
        return x8[0] == y8[0]
    addr_words(y, alen, y8)
    return x8[0] == y8[0] and x8[1] == y8[1]


cdef inline int icmp_class(int proto, int t) noexcept nogil:
    # echo-like requests and replies share a class; every other type is its own (see flowtable.py)
    if proto == 1:
        if t == 8 or t == 0:
            return 1
        if t == 13 or t == 14:
            return 2
        if t == 15 or t == 16:
            return 3
        if t == 17 or t == 18:
            return 4
    elif t == 128 or t == 129:
        return 1
    return 256 + t


# The flow and block-set hashes are keyed: a random key drawn when this module loads (os.urandom;
# forks share it: a replay's table process and its snapshots hash as the engine's table does). The
# network chooses the addresses and ports, so an unkeyed hash let a sender compute keys that all
# land in one bucket: from one IPv6 /64 (interface IDs for the taking), 80k flows in one chain made
# every packet walk it (500 us a packet) and an expiry pass stall the loop for seconds (a review,
# 2026-12-07). Multilinear hashing (Lemire and Kaser, "Strongly universal string hashing is fast"):
# key0 + sum key_i * chunk_i over fixed 32-bit chunks, mod 2**64, its top 32 bits: strongly universal,
# so without the key no set of flows collides more than chance lets it.
cdef enum:
    FLOW_KEYS = 11   # 4 + 4 address chunks, the ports, protocol and family, and the constant
    BLOCK_KEYS = 6   # 4 address chunks, the family, and the constant

cdef uint64_t FKEY[FLOW_KEYS]
cdef uint64_t BKEY[BLOCK_KEYS]


_KEYS = b""


def _draw_keys(raw=None):
    """New random hash keys (at load), or the given ones (`raw`, as this returned them); returns the
    keys used until now. Only while no table holds flows or blocks: their buckets were placed with the
    old keys (tests show the hash depends on them, then put them back)."""
    global _KEYS
    import os
    cdef int i
    old = _KEYS
    raw = os.urandom(8 * (FLOW_KEYS + BLOCK_KEYS)) if raw is None else bytes(raw)
    if len(raw) != 8 * (FLOW_KEYS + BLOCK_KEYS):
        raise ValueError(f"{8 * (FLOW_KEYS + BLOCK_KEYS)} bytes of keys")
    for i in range(FLOW_KEYS):
        FKEY[i] = int.from_bytes(raw[8 * i:8 * i + 8], "little")
    for i in range(BLOCK_KEYS):
        BKEY[i] = int.from_bytes(raw[8 * (FLOW_KEYS + i):8 * (FLOW_KEYS + i) + 8], "little")
    _KEYS = raw
    return old


_draw_keys()


def _flow_hash_of(bytes src, int sport, bytes dst, int dport, int proto):
    """The flow hash of a packet src:sport -> dst:dport (packed addresses of one family; not ICMP), for
    tests."""
    cdef Parsed p
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError("two packed addresses of one family")
    memset(&p, 0, sizeof(Parsed))
    p.src, p.dst = src, dst
    p.family, p.proto, p.sport, p.dport = (4 if len(src) == 4 else 6), proto, sport, dport
    return flow_hash(&p, False)


cdef inline void addr_chunks(const uint8_t* a, int family, uint32_t* out) noexcept nogil:
    """An address as 4 chunks (IPv4: its 4 bytes, then zeros): a fixed length for the hash."""
    if family == 4:
        memcpy(out, a, 4)
        out[1] = out[2] = out[3] = 0
    else:
        memcpy(out, a, 16)


cdef inline int addr_order(const uint8_t* x, const uint8_t* y, int family) noexcept nogil:
    """A total order on addresses (-1, 0, 1), as integer compares: which end a flow's hash takes first."""
    cdef uint64_t x8[2]
    cdef uint64_t y8[2]
    cdef int n = addr_words(x, 4 if family == 4 else 16, x8)
    addr_words(y, 4 if family == 4 else 16, y8)
    if x8[0] != y8[0] or n == 1:
        return (x8[0] > y8[0]) - (x8[0] < y8[0])
    return (x8[1] > y8[1]) - (x8[1] < y8[1])


cdef inline uint32_t keyed(const uint64_t* key, const uint32_t* c, int n) noexcept nogil:
    """The multilinear hash of the `n` chunks `c` under `key` (n + 1 words, the last the constant)."""
    cdef uint64_t h = key[n]
    cdef int i
    for i in range(n):
        h += key[i] * <uint64_t>c[i]
    return <uint32_t>(h >> 32)


cdef inline uint32_t flow_hash(Parsed* p, bint icmp) noexcept nogil:
    # the same for both directions: the ends are hashed in a fixed order (address, then port)
    cdef uint32_t c[10]
    cdef int order = addr_order(p.src, p.dst, p.family)
    cdef bint swap
    if icmp:
        swap = order > 0
        c[8] = (<uint32_t>icmp_class(p.proto, p.sport) << 16) | (<uint32_t>p.dport & 0xFFFF)
    else:
        swap = order > 0 or (order == 0 and p.sport > p.dport)
        if swap:
            c[8] = (<uint32_t>(p.dport & 0xFFFF) << 16) | <uint32_t>(p.sport & 0xFFFF)
        else:
            c[8] = (<uint32_t>(p.sport & 0xFFFF) << 16) | <uint32_t>(p.dport & 0xFFFF)
    addr_chunks(p.dst if swap else p.src, p.family, c)
    addr_chunks(p.src if swap else p.dst, p.family, c + 4)
    c[9] = <uint32_t>(p.proto & 0xFF) | (<uint32_t>(p.family & 0xFF) << 8) | (<uint32_t>icmp << 16)
    return keyed(FKEY, c, 10)


cdef inline uint32_t block_hash(const uint8_t* a, int family) noexcept nogil:
    """The block set's slot hash of an address (keyed, as flow_hash)."""
    cdef uint32_t c[5]
    addr_chunks(a, family, c)
    c[4] = <uint32_t>family
    return keyed(BKEY, c, 5)


cdef inline uint32_t next_pow2(uint32_t v) noexcept nogil:
    cdef uint32_t n = 1
    while n < v:
        n <<= 1
    return n


# --- emission helpers -------------------------------------------------------------------------------

cdef str addr_str(const uint8_t* a, int family):
    """The address as Python's ipaddress writes it (see appdecode.ip_str): libc's text, except for
    IPv6 addresses starting with 80 zero bits (::a.b.c.d, ::ffff:a.b.c.d), which libc writes dotted."""
    cdef char out[64]
    cdef int i
    if family == 6:
        for i in range(10):
            if a[i]:
                break
        else:
            return str(ipaddress.IPv6Address(PyBytes_FromStringAndSize(<const char*>a, 16)))
    cdef Py_ssize_t n = 0
    if family == 4:  # dotted quad by hand: glibc's inet_ntop goes through sprintf (~1,800 instructions)
        for i in range(4):
            if i:
                out[n] = 46  # "."
                n += 1
            if a[i] >= 100:
                out[n] = 48 + a[i] // 100
                n += 1
            if a[i] >= 10:
                out[n] = 48 + (a[i] // 10) % 10
                n += 1
            out[n] = 48 + a[i] % 10
            n += 1
        return out[:n].decode("ascii")
    inet_ntop(AF_INET6, a, out, 64)
    return out.decode("ascii")


# The text of recently emitted addresses, direct-mapped by address hash: one address gives one str
# object, so the detectors' dicts keyed by addresses hash it once (str caches its hash) and compare
# by identity, and every flow of a busy host shares one string instead of allocating its own.
# It is state, so it lives in this one module (an inline in _decode.pxd would give every module
# its own copy); _appdecode cimports addr_text from here so its events share the flows' strings.
ctypedef struct AddrText:
    uint8_t family
    uint8_t addr[16]
    PyObject* text

cdef enum:
    # 65,536 (was 16,384): on bench/replay.py's 200k-flow capture (36,658 addresses) a lookup missed
    # 32 % of the time with 16,384 slots and 17 % with these (9 % are first sightings); a miss makes
    # a second string of the same address, which every detector's dict then hashes and compares by
    # content. 2 MB of slots (touched as used) and at most one short string a slot.
    ADDR_TEXT_SLOTS = 65536

cdef AddrText ADDR_TEXT[ADDR_TEXT_SLOTS]


cdef str addr_text(const uint8_t* a, int family):
    cdef AddrText* slot = &ADDR_TEXT[mix64(addr_word(a, family)) & (ADDR_TEXT_SLOTS - 1)]
    cdef size_t n = 4 if family == 4 else 16
    if slot.text != NULL and slot.family == family and addr_eq(slot.addr, a, n):
        return <str>slot.text
    text = addr_str(a, family)
    Py_XDECREF(slot.text)
    Py_INCREF(text)
    slot.text = <PyObject*>text
    slot.family = <uint8_t>family
    memcpy(slot.addr, a, n)
    return text


cdef str flags_str(int flags):
    cdef int i
    return "".join([FLAG_LETTERS[i] for i in range(8) if flags & (1 << i)])


def address_text(bytes packed):
    """The text the table gives a packed 4- or 16-byte address (through its cache), for tests."""
    if len(packed) not in (4, 16):
        raise ValueError("an address is 4 or 16 bytes")
    return addr_text(<const uint8_t*><const char*>packed, 4 if len(packed) == 4 else 6)


# TCP states ("<client flags>_<server flags>"), built once per pair of flag sets
cdef list TCP_STATES = [None] * 65536


cdef str tcp_state(int aflags, int bflags):
    cdef int i = (aflags << 8) | bflags
    state = TCP_STATES[i]
    if state is None:
        state = TCP_STATES[i] = flags_str(aflags) + "_" + flags_str(bflags)
    return <str>state


cdef str icmp_state(int proto, int itype, int code, bint answered):
    cdef bint request, reply
    cdef int unreach, timex, redirect
    if proto == 1:
        request = itype == 8 or itype == 13 or itype == 15 or itype == 17
        reply = itype == 0 or itype == 14 or itype == 16 or itype == 18
        unreach, timex, redirect = 3, 11, 5
    else:
        request, reply = itype == 128, itype == 129
        unreach, timex, redirect = 1, 3, 137
    if request:
        return "ECR" if answered else "ECO"
    if reply:
        return "ECR"
    if itype == unreach:
        if proto == 1:
            return {3: "URP", 1: "URH", 0: "URN", 13: "URF"}.get(code, "URO")
        return {4: "URP", 3: "URH", 0: "URN", 1: "URF"}.get(code, "URO")
    if itype == timex:
        return "TXD"
    if itype == redirect:
        return "RED"
    return "CON" if answered else "INT"


cdef dict PROTO_NAMES = {}


cdef str proto_str(int proto):
    name = PROTO_NAMES.get(proto)
    if name is None:
        name = PROTO_NAMES[proto] = proto_name(proto)
    return name


cdef inline FlowEntry* ent(FlowEntry** chunks, uint32_t i) noexcept nogil:
    return &chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]


# Each entry is on two doubly linked lists of indices: its timeout class's (links CLASS_LINKS, list
# e.cls) and the active-report list (links ACTIVE_LINKS, list ACTIVE_LIST). heads/tails are the
# table's arrays; `k` is always a constant, so the compiler makes each call site its own code.

cdef inline void unlink(FlowEntry** chunks, uint32_t* heads, uint32_t* tails, FlowEntry* e, int k,
                        int lst) noexcept nogil:
    """Take `e` out of list `lst`, whose links are e.prev[k]/e.next[k]."""
    if e.prev[k] != NIL:
        ent(chunks, e.prev[k]).next[k] = e.next[k]
    else:
        heads[lst] = e.next[k]
    if e.next[k] != NIL:
        ent(chunks, e.next[k]).prev[k] = e.prev[k]
    else:
        tails[lst] = e.prev[k]


cdef inline void append(FlowEntry** chunks, uint32_t* heads, uint32_t* tails, FlowEntry* e, uint32_t i,
                        int k, int lst) noexcept nogil:
    """Put entry `i` (`e`, not on list `lst`) at the young end of list `lst`, through links `k`."""
    e.next[k] = NIL
    e.prev[k] = tails[lst]
    if e.prev[k] != NIL:
        ent(chunks, e.prev[k]).next[k] = i
    else:
        heads[lst] = i
    tails[lst] = i


cdef inline uint32_t find_entry(FlowEntry** chunks, uint32_t i, Parsed* p, uint32_t h, bint icmp) noexcept nogil:
    """The index of `p`'s flow (either direction) in the bucket chain starting at `i`, or NIL."""
    cdef size_t alen = 4 if p.family == 4 else 16
    cdef int pcls = icmp_class(p.proto, p.sport) if icmp else 0
    cdef FlowEntry* e
    while i != NIL:
        e = ent(chunks, i)
        if e.hash == h and e.proto == p.proto and e.family == p.family:
            if icmp:
                if icmp_class(p.proto, e.pa) == pcls and e.pb == p.dport and (
                        (addr_eq(e.a, p.src, alen) and addr_eq(e.b, p.dst, alen))
                        or (addr_eq(e.a, p.dst, alen) and addr_eq(e.b, p.src, alen))):
                    return i
            elif ((e.pa == p.sport and e.pb == p.dport and addr_eq(e.a, p.src, alen)
                   and addr_eq(e.b, p.dst, alen))
                  or (e.pa == p.dport and e.pb == p.sport and addr_eq(e.a, p.dst, alen)
                      and addr_eq(e.b, p.src, alen))):
                return i
        i = e.hnext
    return NIL


cdef enum:
    SEEN_RING = 1 << 16  # IP packets whose addresses record mode remembers (touched_since)


# why a flow was emitted (Flow.closed_by), by FlowRecord.closed_by
cdef tuple CLOSED_BY = ("fin", "rst", "idle", "active", "evict", "end")
cdef enum:
    BY_FIN = 0
    BY_RST = 1
    BY_IDLE = 2
    BY_ACTIVE = 3
    BY_EVICT = 4
    BY_END = 5


cdef inline int closing_reason(FlowEntry* e) noexcept:
    """closed_by of a closing TCP flow (the twin keeps this string in e.closing)."""
    return BY_FIN if e.closing == CLOSE_FIN else BY_RST


# --- closed flows: the Flow of an entry, in this process or (its record) another ----------------

cdef object flow_of(FlowEntry* e, int by):
    """The Flow of a closed flow's entry: what the table emits (and flows_of_records makes)."""
    cdef str state
    cdef str closed_by = CLOSED_BY[by]
    if e.proto == 6:
        state = tcp_state(e.aflags, e.bflags)
    elif e.icmp:
        state = icmp_state(e.proto, e.pa, e.pb, e.bpkts > 0)
    else:
        state = "CON" if e.apkts and e.bpkts else "INT"
    cdef str direction = "<->" if e.apkts and e.bpkts else "->"
    if not SLOTS.buildable:  # Flow is not (or no longer) a plain slots dataclass
        return Flow(e.first, e.last, proto_str(e.proto), addr_text(e.a, e.family), e.pa, addr_text(e.b, e.family),
                    e.pb, e.apkts, e.bpkts, e.abytes, e.bbytes, state, direction, e.atos, e.btos, "", closed_by)
    # the same Flow, its slots written in place (_flowslots.pxd): no Python __init__ a flow
    f = flow_alloc(&SLOTS)
    flow_put(&SLOTS, f, F_START, e.first)
    flow_put(&SLOTS, f, F_END, e.last)
    flow_put(&SLOTS, f, F_PROTO, proto_str(e.proto))
    flow_put(&SLOTS, f, F_SADDR, addr_text(e.a, e.family))
    flow_put(&SLOTS, f, F_SPORT, e.pa)
    flow_put(&SLOTS, f, F_DADDR, addr_text(e.b, e.family))
    flow_put(&SLOTS, f, F_DPORT, e.pb)
    flow_put(&SLOTS, f, F_SPKTS, e.apkts)
    flow_put(&SLOTS, f, F_DPKTS, e.bpkts)
    flow_put(&SLOTS, f, F_SBYTES, e.abytes)
    flow_put(&SLOTS, f, F_DBYTES, e.bbytes)
    flow_put(&SLOTS, f, F_STATE, state)
    flow_put(&SLOTS, f, F_DIR, direction)
    flow_put(&SLOTS, f, F_STOS, e.atos)
    flow_put(&SLOTS, f, F_DTOS, e.btos)
    flow_put(&SLOTS, f, F_LABEL, "")
    flow_put(&SLOTS, f, F_CLOSED_BY, closed_by)
    return f


RECORD_SIZE = sizeof(FlowRecord)  # bytes of one closed flow in pop_records' output


def flows_of_records(const uint8_t[::1] data):
    """The Flows of the records a table in record mode gave (FlowTable.pop_records), in order: the
    same Flows it would have emitted itself. Records are this build's C structs: they cross between
    processes of one build (slipsq/pipeline.py), never into a file."""
    cdef Py_ssize_t i, n = data.shape[0] // sizeof(FlowRecord)
    cdef FlowRecord rec
    if data.shape[0] % sizeof(FlowRecord):
        raise ValueError(f"{data.shape[0]} bytes are no whole number of {sizeof(FlowRecord)}-byte flow records")
    out = []
    for i in range(n):
        memcpy(&rec, &data[0] + i * sizeof(FlowRecord), sizeof(FlowRecord))  # data may be unaligned
        if rec.closed_by >= len(CLOSED_BY) or (rec.entry.family != 4 and rec.entry.family != 6):
            raise ValueError(f"flow record {i} is not one this build wrote")
        out.append(flow_of(&rec.entry, rec.closed_by))
    return out


# --- the flow table ---------------------------------------------------------------------------------

cdef bytes _packed(str ip):
    """The 4 or 16 bytes of an address's text (inet_pton: 10x cheaper than ipaddress, which mattered
    for a burst of blocks); ValueError for text that is no address."""
    try:
        return inet_pton(AF_INET, ip)
    except OSError:
        pass
    try:
        return inet_pton(AF_INET6, ip)
    except OSError:
        raise ValueError(f"'{ip}' does not appear to be an IPv4 or IPv6 address") from None


cdef bint _py_gate(void* ctx) noexcept:
    """The table's Python gate (set_bypass_gate), called from _bypass_verdict. An exception is
    reported through sys.unraisablehook and counts as a closed gate: the flow waits, at most
    BYPASS_MAX_WAITS packets, as it would behind a busy queue (slipsq.flowtable's _gate_open)."""
    return bool((<FlowTable>ctx).gate_py())


cdef class FlowTable:
    """Bidirectional flows from packets, in C. Same interface and rules as slipsq.flowtable.FlowTable."""

    bytes_per_flow = sizeof(FlowEntry) + 2 * sizeof(uint32_t)  # entry + at most 2 hash buckets

    def __cinit__(self):
        cdef int i
        self.chunks = NULL
        self.buckets = NULL
        self.bslots = NULL
        self.recs = NULL
        self.seen = NULL
        self.nseen = 0
        self.nrecs = self.recs_cap = 0
        self.nchunks = self.cap = self.count = 0
        self.free_head = NIL
        for i in range(N_LISTS):
            self.heads[i] = self.tails[i] = NIL

    def __init__(self, config):
        o = config.section("flowtable")
        for i, k in enumerate(("tcp_new_idle", "tcp_idle", "tcp_closed_linger", "udp_idle", "icmp_idle",
                               "other_idle")):
            self.idle[i] = o[k]
        self.active_timeout = o["active_timeout"]
        self.max_flows = min(o["max_flows"], MAX_FLOWS_CAP)
        self.emergency_factor = o["emergency_factor"]
        self.expire_batch = o["expire_batch"]
        self.behind = False
        self.now = -INFINITY
        self.next_expire = -INFINITY
        self.ticked = False
        self.nbuckets = 4096
        self.buckets = <uint32_t*>PyMem_Malloc(self.nbuckets * sizeof(uint32_t))
        if self.buckets == NULL:
            raise MemoryError()
        memset(self.buckets, 0xFF, self.nbuckets * sizeof(uint32_t))
        self.blocked = set()
        self.nblocked = 0
        self.bmask = 0
        self.btomb = 0
        self.closed = []
        self.app = []
        self.app_mask = APP_ALL
        self.n_packets = self.n_bytes = self.n_non_ip = self.n_malformed = self.n_fragments = 0
        self.n_dropped = self.n_closed = self.n_evicted = self.n_app = self.n_arp = 0
        self.bypass_after = self.bypass_max = self.n_bypass_open = 0
        self.n_bypassed = 0
        self.n_bypass_waits = self.n_bypass_forced = self.n_bypass_late = 0
        self.gate_fn = NULL
        self.gate_ctx = NULL
        self.held = []

    def __dealloc__(self):
        cdef uint32_t c
        if self.chunks != NULL:
            for c in range(self.nchunks):
                PyMem_Free(self.chunks[c])
            PyMem_Free(self.chunks)
        PyMem_Free(self.buckets)
        PyMem_Free(self.bslots)
        PyMem_Free(self.recs)
        PyMem_Free(self.seen)

    # --- packets ---------------------------------------------------------------------------------
    def feed(self, const uint8_t[::1] buf, double ts, int linktype):
        """One captured frame of the given link type: 1 accept, 0 drop (an address is blocked)."""
        cdef uint8_t empty = 0
        cdef Py_ssize_t n = buf.shape[0]
        return self.feed_link(&buf[0] if n else &empty, n, ts, linktype)

    cdef int feed_ip(self, const unsigned char* ip, Py_ssize_t length, double ts) except -1:
        return self.feed_link(ip, length, ts, 101)

    cdef int feed_link(self, const unsigned char* buf, Py_ssize_t n, double ts, int linktype) except -1:
        cdef Parsed p
        cdef SeenPacket* seen
        self.n_packets += 1
        if ts > self.now:
            self.now = ts
        if ts >= self.next_expire:
            self._expire(ts)
            # behind (a mass expiry): the next batch a tenth of a second on, so the engine analyses
            # one batch between packets instead of holding the queue for all of them
            self.next_expire = ts + 0.1 if self.behind else floor(ts) + 1.0
            self.ticked = True
        parse(buf, n, linktype, &p)
        if p.arp:
            self.n_arp += 1
            if self.app_mask & APP_ARP:
                self.n_app += 1
                self.app.append((ts, PyBytes_FromStringAndSize(<const char*>buf + p.ip_off, n - p.ip_off)))
            return 1
        if p.family == 0:
            if p.malformed:
                self.n_malformed += 1
            else:
                self.n_non_ip += 1
            return 1
        if self.seen != NULL:  # record mode: which addresses the packets since a message had
            seen = &self.seen[self.nseen & (SEEN_RING - 1)]
            seen.family = p.family
            memcpy(seen.src, p.src, 4 if p.family == 4 else 16)
            memcpy(seen.dst, p.dst, 4 if p.family == 4 else 16)
            self.nseen += 1
        if self.nblocked and (self._blocked(p.family, p.src) or self._blocked(p.family, p.dst)):
            self.n_dropped += 1
            return 0
        if p.malformed:
            self.n_malformed += 1
            return 1
        if p.frag:
            self.n_fragments += 1
            if p.frag == 2:
                return 1
        self.n_bytes += p.ip_len
        return self._update(buf, n, &p, ts)

    cdef int _update(self, const unsigned char* buf, Py_ssize_t n, Parsed* p, double ts) except -1:
        cdef bint icmp = (p.proto == 1 and p.family == 4) or (p.proto == 58 and p.family == 6)
        cdef uint32_t h = flow_hash(p, icmp)
        cdef size_t alen = 4 if p.family == 4 else 16
        cdef uint32_t i = find_entry(self.chunks, self.buckets[h & (self.nbuckets - 1)], p, h, icmp)
        cdef FlowEntry* e = NULL if i == NIL else ent(self.chunks, i)
        cdef bint fwd, swap, hand_up
        cdef int cls, bit, flags = p.tcp_flags, verdict = V_ACCEPT
        if i != NIL and (e.closing or e.bypass == BYPASS_ON) and p.proto == 6 and flags & (TH_SYN | TH_ACK) == TH_SYN:
            if e.bypass == BYPASS_ON:
                verdict = V_UNBYPASS  # a new connection on a bypassed tuple: queue it from the start
            self._emit(e, closing_reason(e) if e.closing else BY_IDLE)
            self._remove(i)
            i = NIL
        if i == NIL:
            if self.count >= self.max_flows:
                self._evict()
            i = self._alloc()
            e = ent(self.chunks, i)
            swap = p.proto == 6 and flags & (TH_SYN | TH_ACK) == (TH_SYN | TH_ACK)
            memset(e, 0, sizeof(FlowEntry))
            memcpy(e.a, p.dst if swap else p.src, alen)
            memcpy(e.b, p.src if swap else p.dst, alen)
            e.pa = p.dport if swap else p.sport
            e.pb = p.sport if swap else p.dport
            e.proto, e.family, e.icmp, e.hash = p.proto, p.family, icmp, h
            e.first = e.last = ts
            e.cls = FREE
            e.active_due = ts + self.active_timeout
            e.hnext = self.buckets[h & (self.nbuckets - 1)]
            self.buckets[h & (self.nbuckets - 1)] = i
            append(self.chunks, &self.heads[0], &self.tails[0], e, i, ACTIVE_LINKS, ACTIVE_LIST)
            self.count += 1
            if self.count > self.nbuckets:
                self._grow_buckets()
        if icmp:
            fwd = addr_eq(p.src, e.a, alen)
        else:
            fwd = addr_eq(p.src, e.a, alen) and p.sport == e.pa
        if fwd:
            e.apkts += 1
            e.abytes += p.ip_len
            e.aflags |= flags
            if e.apkts == 1:
                e.atos = p.tos
        else:
            e.bpkts += 1
            e.bbytes += p.ip_len
            e.bflags |= flags
            if e.bpkts == 1:
                e.btos = p.tos
        if ts > e.last:
            e.last = ts
        if e.proto == 6:
            if not e.closing:
                if (e.aflags | e.bflags) & TH_RST:
                    e.closing = CLOSE_RST
                elif e.aflags & TH_FIN and e.bflags & TH_FIN:
                    e.closing = CLOSE_FIN
            cls = 2 if e.closing else (1 if e.apkts and e.bpkts else 0)
        else:
            cls = 3 if e.proto == 17 else (4 if icmp else 5)
        if self.bypass_after and e.proto == 6:
            bit = self._bypass_verdict(e, p, flags)
            if bit != V_ACCEPT:
                verdict = bit
        if e.bypass == BYPASS_ON:
            if e.cls < N_CLASSES:  # bypassed just now: off its idle list (see _bypass_verdict)
                unlink(self.chunks, &self.heads[0], &self.tails[0], e, CLASS_LINKS, e.cls)
            e.cls = BYPASSED
        else:
            if e.cls < N_CLASSES:  # move to the young end of its (maybe new) class list
                unlink(self.chunks, &self.heads[0], &self.tails[0], e, CLASS_LINKS, e.cls)
            append(self.chunks, &self.heads[0], &self.tails[0], e, i, CLASS_LINKS, cls)
            e.cls = cls
        if e.proto == 6 or e.proto == 17:
            hand_up = False
            if p.sport == 53 or p.sport == 5353 or p.dport == 53 or p.dport == 5353:
                # on port 53, what travels the way the flow's first packet did is never an answer:
                # from port 53 it began its flow (no query seen), a response toward port 53 the
                # host wrote itself (flowtable.py)
                if not (fwd and ((p.sport == 53 and p.dport != 53) or (
                        (p.sport == 53 or p.dport == 53) and dns_response(buf, n, p)))):
                    hand_up = (self.app_mask & APP_DNS_ALL) != 0 or (
                        (self.app_mask & APP_DNS) != 0 and dns_answer(buf, n, p))
            elif e.proto == 6 and p.payload_len > 0:
                bit = 1 if fwd else 2
                if not e.seen & bit:
                    e.seen |= bit  # the first payload, handed up or not: later ones are not first
                    hand_up = (self.app_mask & APP_PAYLOAD) != 0 or (
                        first_payload_class(buf, n, p) & self.app_mask) != 0
            if hand_up:
                self.n_app += 1
                self.app.append((ts, PyBytes_FromStringAndSize(
                    <const char*>buf + p.ip_off, smin(n - p.ip_off, p.ip_len))))
        return verdict

    cdef int _bypass_verdict(self, FlowEntry* e, Parsed* p, int flags) noexcept:
        """Bypass (slipsq.flowtable.FlowTable._bypass_verdict has the rules and why)."""
        if e.bypass == BYPASS_ON:
            if flags & (TH_FIN | TH_RST | TH_SYN):
                e.bypass = BYPASS_DONE
                self.n_bypass_open -= 1
                return V_UNBYPASS
            self.n_bypass_late += 1  # queued before the kernel saw the mark: the flow's forwarded
            return V_ACCEPT          # packets may have overtaken it (counted here and by conntrack alike)
        if (e.bypass == 0 and not e.closing and not flags & (TH_FIN | TH_RST | TH_SYN)
                and e.apkts >= self.bypass_after and e.bpkts >= self.bypass_after
                and e.seen & 1 and e.aflags & TH_PSH
                and ((e.seen & 2 and e.bflags & TH_PSH) or (not e.seen & 2 and e.apkts >= 4 * self.bypass_after))
                and self.n_bypass_open < self.bypass_max
                and p.sport != 53 and p.sport != 5353 and p.dport != 53 and p.dport != 5353):
            if self.gate_fn != NULL and not self.gate_fn(self.gate_ctx):
                if e.bypass_waits < BYPASS_MAX_WAITS:
                    e.bypass_waits += 1
                    self.n_bypass_waits += 1
                    return V_ACCEPT
                self.n_bypass_forced += 1
            e.bypass = BYPASS_ON
            self.n_bypass_open += 1
            self.n_bypassed += 1
            return V_BYPASS
        return V_ACCEPT

    cdef void gate_bypass(self, bypass_gate_fn fn, void* ctx) noexcept:
        """The NFQUEUE source's gate (C to C; NULL: none): see slipsq.flowtable.FlowTable.set_bypass_gate."""
        self.gate_fn = fn
        self.gate_ctx = ctx
        self.gate_py = None

    cdef uint32_t _alloc(self) except? 0xFFFFFFFF:
        cdef uint32_t i, c
        cdef FlowEntry* chunk
        cdef FlowEntry** chunks
        if self.free_head == NIL:
            chunk = <FlowEntry*>PyMem_Malloc(CHUNK * sizeof(FlowEntry))
            chunks = <FlowEntry**>PyMem_Realloc(self.chunks, (self.nchunks + 1) * sizeof(FlowEntry*))
            if chunk == NULL or chunks == NULL:
                PyMem_Free(chunk)
                if chunks != NULL:
                    self.chunks = chunks
                raise MemoryError()
            self.chunks = chunks
            self.chunks[self.nchunks] = chunk
            c = self.nchunks
            self.nchunks += 1
            self.cap += CHUNK
            for i in range(CHUNK - 1, -1, -1):  # free list in index order
                chunk[i].hnext = self.free_head
                chunk[i].cls = FREE
                self.free_head = (c << CHUNK_BITS) | i
        i = self.free_head
        self.free_head = ent(self.chunks, i).hnext
        return i

    cdef int _grow_buckets(self) except -1:
        return self._resize_buckets(self.nbuckets * 2)

    cdef int _shrink(self) except -1:
        """Give memory back after a mass expiry: when under a quarter of the allocated entries are in
        use, move the used entries of the last chunks into free slots of the first ones (fixing the
        hash chain and both list links that point at each), free those chunks, and halve the
        buckets down to the flow count. O(entries allocated), and only after the table emptied to a
        quarter, so O(1) per flow removed, amortized. Entries move only here, between packets."""
        cdef uint32_t keep, limit, c, i, j = 0, k, lst, nb
        cdef uint32_t* link
        cdef FlowEntry* e
        cdef FlowEntry* d
        cdef FlowEntry** chunks
        cdef long long si
        if self.nchunks <= 1 or <uint64_t>self.count * 4 >= self.cap:
            return 0
        keep = (2 * self.count + CHUNK - 1) >> CHUNK_BITS
        if keep < 1:
            keep = 1
        limit = keep << CHUNK_BITS
        for i in range(limit, self.cap):
            e = ent(self.chunks, i)
            if e.cls == FREE:
                continue
            while ent(self.chunks, j).cls != FREE:  # the next free slot below limit (there are enough:
                j += 1                              # count <= limit / 2)
            d = ent(self.chunks, j)
            memcpy(d, e, sizeof(FlowEntry))
            link = &self.buckets[e.hash & (self.nbuckets - 1)]
            while link[0] != i:
                link = &ent(self.chunks, link[0]).hnext
            link[0] = j
            for k in range(2):
                if k == CLASS_LINKS and d.cls >= N_CLASSES:
                    continue  # bypassed: on no class list
                lst = d.cls if k == CLASS_LINKS else ACTIVE_LIST
                if d.prev[k] != NIL:
                    ent(self.chunks, d.prev[k]).next[k] = j
                else:
                    self.heads[lst] = j
                if d.next[k] != NIL:
                    ent(self.chunks, d.next[k]).prev[k] = j
                else:
                    self.tails[lst] = j
            e.cls = FREE
            j += 1
        for c in range(keep, self.nchunks):
            PyMem_Free(self.chunks[c])
        chunks = <FlowEntry**>PyMem_Realloc(self.chunks, keep * sizeof(FlowEntry*))
        if chunks != NULL:
            self.chunks = chunks
        self.nchunks, self.cap = keep, limit
        self.free_head = NIL
        for si in range(<long long>limit - 1, -1, -1):  # the free list again, in index order
            e = ent(self.chunks, <uint32_t>si)
            if e.cls == FREE:
                e.hnext = self.free_head
                self.free_head = <uint32_t>si
        nb = self.nbuckets
        while nb > 4096 and nb // 2 >= self.count:
            nb //= 2
        if nb != self.nbuckets:
            self._resize_buckets(nb)
        return 0

    cdef int _resize_buckets(self, uint32_t nb) except -1:
        cdef uint32_t i
        cdef uint32_t* b = <uint32_t*>PyMem_Malloc(nb * sizeof(uint32_t))
        cdef FlowEntry* e
        if b == NULL:
            raise MemoryError()
        memset(b, 0xFF, nb * sizeof(uint32_t))
        i = self.heads[ACTIVE_LIST]  # every open flow is on the active list
        while i != NIL:
            e = ent(self.chunks, i)
            e.hnext = b[e.hash & (nb - 1)]
            b[e.hash & (nb - 1)] = i
            i = e.next[ACTIVE_LINKS]
        PyMem_Free(self.buckets)
        self.buckets = b
        self.nbuckets = nb
        return 0

    cdef void _remove(self, uint32_t i) noexcept:
        cdef FlowEntry* e = ent(self.chunks, i)
        cdef uint32_t* link = &self.buckets[e.hash & (self.nbuckets - 1)]
        while link[0] != i:
            link = &ent(self.chunks, link[0]).hnext
        link[0] = e.hnext
        if e.bypass == BYPASS_ON:
            self.n_bypass_open -= 1
        if e.cls < N_CLASSES:
            unlink(self.chunks, &self.heads[0], &self.tails[0], e, CLASS_LINKS, e.cls)
        unlink(self.chunks, &self.heads[0], &self.tails[0], e, ACTIVE_LINKS, ACTIVE_LIST)
        e.cls = FREE
        e.hnext = self.free_head
        self.free_head = i
        self.count -= 1

    # --- time ------------------------------------------------------------------------------------
    @property
    def expiry_behind(self):
        """True when the last expiry pass stopped at flowtable.expire_batch with more flows due."""
        return self.behind

    def expire(self, double now):
        """Emit what has timed out at `now` (idle, closing linger, active reports), at most
        flowtable.expire_batch flows; the rest on the next call (or packet, a tenth of a second on)."""
        if now > self.now:
            self.now = now
        self._expire(now)

    cdef int _expire(self, double now) except -1:
        cdef int c, best
        cdef double factor, due, best_due
        cdef uint32_t i, emitted = 0
        cdef FlowEntry* e
        # decided once per pass: an emergency pass runs until the emergency timeouts are met
        factor = self.emergency_factor if <uint64_t>self.count * 10 > <uint64_t>self.max_flows * 9 else 1.0
        self.behind = False
        while True:
            best = -1
            best_due = INFINITY
            for c in range(N_CLASSES):
                i = self.heads[c]
                if i != NIL:
                    due = ent(self.chunks, i).last + self.idle[c] * factor
                    if due < best_due:
                        best, best_due = c, due
            i = self.heads[ACTIVE_LIST]
            if i != NIL and ent(self.chunks, i).active_due < best_due:
                best, best_due = ACTIVE_LIST, ent(self.chunks, i).active_due
            if best < 0 or best_due > now:
                self._shrink()
                return 0
            if emitted >= self.expire_batch:
                self.behind = True
                return 0
            emitted += 1
            i = self.heads[best]
            e = ent(self.chunks, i)
            if best == ACTIVE_LIST:
                self._emit(e, BY_ACTIVE)
                e.active_due = now + self.active_timeout
                if e.next[ACTIVE_LINKS] != NIL:  # move to the end of the active list
                    unlink(self.chunks, &self.heads[0], &self.tails[0], e, ACTIVE_LINKS, ACTIVE_LIST)
                    append(self.chunks, &self.heads[0], &self.tails[0], e, i, ACTIVE_LINKS, ACTIVE_LIST)
            else:
                self._emit(e, closing_reason(e) if e.closing else BY_IDLE)
                self._remove(i)

    def close_all(self, double now):
        """End of input: emit every open flow ("end"; lingering closed ones keep "fin"/"rst")."""
        cdef uint32_t i
        cdef FlowEntry* e
        if now > self.now:
            self.now = now
        while self.heads[ACTIVE_LIST] != NIL:
            i = self.heads[ACTIVE_LIST]
            e = ent(self.chunks, i)
            self._emit(e, closing_reason(e) if e.closing else BY_END)
            self._remove(i)

    cdef int _evict(self) except -1:
        cdef int c
        cdef uint32_t i, best = NIL
        for c in range(N_CLASSES):
            i = self.heads[c]
            if i != NIL and (best == NIL or ent(self.chunks, i).last < ent(self.chunks, best).last):
                best = i
        if best != NIL:
            self.n_evicted += 1
            self._emit(ent(self.chunks, best), BY_EVICT)
            self._remove(best)
        return 0

    cdef int _emit(self, FlowEntry* e, int closed_by) except -1:
        cdef FlowRecord* grown
        cdef Py_ssize_t cap
        if closed_by != BY_ACTIVE:
            self.n_closed += 1
        if self.seen == NULL:  # not in record mode
            (self.held if e.bypass else self.closed).append(flow_of(e, closed_by))
            return 0
        if self.nrecs == self.recs_cap:
            cap = 2 * self.recs_cap if self.recs_cap else 256
            grown = <FlowRecord*>PyMem_Realloc(self.recs, cap * sizeof(FlowRecord))
            if grown == NULL:
                raise MemoryError()
            self.recs, self.recs_cap = grown, cap
        self.recs[self.nrecs].entry = e[0]
        self.recs[self.nrecs].closed_by = closed_by
        self.nrecs += 1
        return 0

    # --- results ---------------------------------------------------------------------------------
    @property
    def pending(self):
        return bool(self.closed) or bool(self.app) or self.nrecs > 0

    def pop_closed(self):
        out, self.closed = self.closed, []
        return out

    def pop_app(self):
        out, self.app = self.app, []
        return out

    def set_records(self, bint on):
        """Record mode (slipsq/pipeline.py): closed flows are kept as C records for pop_records, not
        made into Flows, and the addresses of the last SEEN_RING IP packets are logged for
        touched_since. Not with bypass: a bypassed flow's record would skip its hold for conntrack."""
        if on and self.bypass_after:
            raise ValueError("record mode and flow bypass do not go together")
        if on and self.seen == NULL:
            self.seen = <SeenPacket*>PyMem_Malloc(SEEN_RING * sizeof(SeenPacket))
            if self.seen == NULL:
                raise MemoryError()
        elif not on:
            PyMem_Free(self.seen)
            self.seen = NULL

    @property
    def seen_count(self):
        """IP packets logged since record mode began (the position touched_since counts from)."""
        return self.nseen

    def touched_since(self, uint64_t since, addresses):
        """Whether an IP packet logged after position `since` (a seen_count) had one of `addresses`
        (texts) as its source or destination: the packets a block or unblock of them would have
        changed. True also when those packets are no longer all in the log (more than SEEN_RING)."""
        cdef uint64_t i
        cdef SeenPacket* e
        cdef Py_ssize_t k, m
        cdef size_t n
        cdef uint8_t wanted[64][16]
        cdef int fam[64]
        if self.seen == NULL or self.nseen - since > SEEN_RING or since > self.nseen:
            return True
        packed = [_packed(ip) for ip in addresses]
        if len(packed) > 64:
            return True  # a burst of commands: not worth a scan
        m = len(packed)
        for k in range(m):
            fam[k] = 4 if len(packed[k]) == 4 else 6
            memset(wanted[k], 0, 16)
            memcpy(wanted[k], <const char*>packed[k], len(packed[k]))
        for i in range(since, self.nseen):
            e = &self.seen[i & (SEEN_RING - 1)]
            n = 4 if e.family == 4 else 16
            for k in range(m):
                if fam[k] == e.family and (addr_eq(e.src, wanted[k], n) or addr_eq(e.dst, wanted[k], n)):
                    return True
        return False

    def pop_records(self):
        """The closed flows since the last call, as bytes of FlowRecords (flows_of_records reads them)."""
        out = PyBytes_FromStringAndSize(<const char*>self.recs, self.nrecs * sizeof(FlowRecord))
        self.nrecs = 0
        return out

    def set_bypass(self, int after, int max_open):
        """Bypass TCP flows after `after` packets each way (0: never), at most `max_open` at once."""
        if after > 0 and self.seen != NULL:
            raise ValueError("record mode and flow bypass do not go together")
        self.bypass_after = max(0, after)
        self.bypass_max = max(0, max_open)

    @property
    def bypass_gated(self):
        """Whether a gate holds ready flows back (slipsq.flowtable.FlowTable.bypass_gated)."""
        return self.gate_fn != NULL

    def set_bypass_gate(self, gate):
        """A Python gate (slipsq.flowtable.FlowTable.set_bypass_gate; None: none), for tests and a
        Python source; the NFQUEUE source sets its C gate with gate_bypass."""
        if gate is None:
            self.gate_bypass(NULL, NULL)
        else:
            self.gate_bypass(_py_gate, <void*>self)
            self.gate_py = gate

    def pop_held(self):
        out, self.held = self.held, []
        return out

    def put_closed(self, flow):
        """A held flow, its counts merged: analysed like any closed flow from now on."""
        self.closed.append(flow)

    def end_bypassed(self, str saddr, int sport, str daddr, int dport):
        """Forget the bypassed TCP flow of this connection without emitting it: conntrack showed it
        silent for an idle timeout, and the merger hands its last report back as the idle close
        (slipsq.flowtable.FlowTable.end_bypassed). True when such a flow was open."""
        cdef bytes a = _packed(saddr), b = _packed(daddr)
        if len(a) != len(b):
            return False
        cdef Parsed p
        memset(&p, 0, sizeof(Parsed))
        p.src, p.dst = a, b
        p.family, p.proto, p.sport, p.dport = (4 if len(a) == 4 else 6), 6, sport, dport
        cdef uint32_t h = flow_hash(&p, False)
        cdef uint32_t i = find_entry(self.chunks, self.buckets[h & (self.nbuckets - 1)], &p, h, False)
        if i == NIL or ent(self.chunks, i).bypass != BYPASS_ON:
            return False
        self.n_closed += 1
        self._remove(i)
        return True

    def set_app_kinds(self, kinds):
        """Hand up from now on only the app packets of these kinds (slipsq.flowtable.APP_KINDS)."""
        self.app_mask = app_mask(kinds)

    @property
    def app_kinds(self):
        return app_kinds_of(self.app_mask)

    def stats(self):
        return {"packets": self.n_packets, "bytes": self.n_bytes, "non_ip": self.n_non_ip,
                "malformed": self.n_malformed, "fragments": self.n_fragments, "dropped": self.n_dropped,
                "flows_open": self.count, "flows_closed": self.n_closed, "evicted": self.n_evicted,
                "app_packets": self.n_app, "arp": self.n_arp, "bypassed": self.n_bypassed,
                "bypass_waits": self.n_bypass_waits, "bypass_forced": self.n_bypass_forced,
                "bypass_late": self.n_bypass_late}

    def hash_report(self):
        """The longest bucket chain and the longest block-set probe run now: what one lookup may walk
        (for tests and tools; O(buckets + slots))."""
        cdef uint32_t b, i, n, longest = 0, run = 0, probe = 0
        for b in range(self.nbuckets):
            n, i = 0, self.buckets[b]
            while i != NIL:
                n += 1
                i = ent(self.chunks, i).hnext
            longest = max(longest, n)
        if self.bslots != NULL:
            for b in range(2 * (self.bmask + 1)):  # twice round: a run may wrap past the end
                run = run + 1 if self.bslots[b & self.bmask].used else 0
                probe = max(probe, run)
        return {"longest_chain": longest, "longest_block_run": min(probe, self.bmask + 1)}

    def memory(self):
        """Bytes held for flows now: entry chunks and hash buckets."""
        return self.cap * sizeof(FlowEntry) + self.nbuckets * sizeof(uint32_t)

    # --- blocked addresses -----------------------------------------------------------------------
    def block(self, str ip):
        """Drop `ip`'s packets from now on. O(1): an insert into the open-addressing set (a rebuild
        only when it grows past half full), so a burst of 1,000 blocks costs 1,000 inserts."""
        packed = _packed(ip)
        if packed in self.blocked:
            return
        self.blocked.add(packed)
        if self.bslots == NULL or 2 * (self.nblocked + self.btomb + 1) > self.bmask + 1:
            self._rebuild_blocks()
        else:
            self._insert_block(packed)

    def unblock(self, str ip):
        """Pass `ip`'s packets again. O(1): its slot becomes a tombstone (rebuilt away when they
        pile up)."""
        packed = _packed(ip)
        if packed not in self.blocked:
            return
        self.blocked.discard(packed)
        cdef const uint8_t* a = packed
        cdef int fam = 4 if len(packed) == 4 else 6
        cdef uint32_t j = block_hash(a, fam) & self.bmask
        while self.bslots[j].used:
            if (self.bslots[j].used == 1 and self.bslots[j].family == fam
                    and memcmp(self.bslots[j].addr, a, len(packed)) == 0):
                self.bslots[j].used = 2
                self.nblocked -= 1
                self.btomb += 1
                break
            j = (j + 1) & self.bmask
        if 4 * self.btomb > self.bmask + 1:
            self._rebuild_blocks()

    def is_blocked(self, str ip):
        return _packed(ip) in self.blocked

    cdef void _insert_block(self, bytes packed) noexcept:
        cdef const uint8_t* a = packed
        cdef int fam = 4 if len(packed) == 4 else 6
        cdef uint32_t j = block_hash(a, fam) & self.bmask
        while self.bslots[j].used == 1:
            j = (j + 1) & self.bmask
        if self.bslots[j].used == 2:
            self.btomb -= 1
        self.bslots[j].used = 1
        self.bslots[j].family = fam
        memcpy(self.bslots[j].addr, a, len(packed))
        self.nblocked += 1

    cdef void _rebuild_blocks(self) except *:
        # an open-addressing set, rebuilt at a quarter full when it grows (amortised O(1) per block)
        # or when tombstones pile up; lookups are per packet
        cdef uint32_t size = next_pow2(<uint32_t>(4 * len(self.blocked) + 4))
        cdef BlockSlot* slots = <BlockSlot*>PyMem_Malloc(size * sizeof(BlockSlot))
        if slots == NULL:
            raise MemoryError()
        memset(slots, 0, size * sizeof(BlockSlot))
        PyMem_Free(self.bslots)
        self.bslots = slots
        self.bmask = size - 1
        self.nblocked = 0
        self.btomb = 0
        for packed in self.blocked:
            self._insert_block(packed)

    cdef bint _blocked(self, int family, const uint8_t* addr) noexcept:
        cdef uint32_t j = block_hash(addr, family) & self.bmask
        cdef size_t alen = 4 if family == 4 else 16
        while self.bslots[j].used:
            if (self.bslots[j].used == 1 and self.bslots[j].family == family
                    and addr_eq(self.bslots[j].addr, addr, alen)):
                return True
            j = (j + 1) & self.bmask
        return False
