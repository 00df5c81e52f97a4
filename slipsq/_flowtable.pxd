# C declarations of the compiled flow table (slipsq/_flowtable.pyx) for other compiled sources
# (the NFQUEUE source cimports FlowTable and calls feed_ip with the queue's payload pointer).

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef enum:
    N_CLASSES = 6          # timeout classes: tcp new, tcp established, tcp closing, udp, icmp, other
    ACTIVE_LIST = 6        # index of the active-report list among the list heads
    N_LISTS = 7
    CHUNK_BITS = 12        # flow entries are allocated 4096 at a time, never moved
    MAX_EXT = 8            # IPv6 extension headers followed before a packet counts as malformed
    CLASS_LINKS = 0        # FlowEntry.prev/next index of the timeout-class list links
    ACTIVE_LINKS = 1       # ... and of the active-report list links

ctypedef struct Parsed:
    const uint8_t* src
    const uint8_t* dst
    int family
    int proto
    int sport
    int dport
    int tcp_flags
    int ip_len
    int tos
    int frag
    int malformed
    int arp
    Py_ssize_t ip_off
    int payload_len

ctypedef struct FlowEntry:
    double first
    double last
    double active_due
    uint64_t abytes
    uint64_t bbytes
    uint32_t apkts
    uint32_t bpkts
    uint32_t hnext         # hash chain, and the free list when unused
    uint32_t hash
    uint32_t prev[2]       # [CLASS_LINKS]: timeout-class list, ordered by last packet;
    uint32_t next[2]       # [ACTIVE_LINKS]: active-report list, ordered by report due time
    uint8_t a[16]          # the client address (IPv4 uses the first 4 bytes)
    uint8_t b[16]
    uint16_t pa            # client port (ICMP: the first packet's type)
    uint16_t pb            # server port (ICMP: identifier or code)
    uint8_t proto
    uint8_t family
    uint8_t aflags
    uint8_t bflags
    uint8_t atos
    uint8_t btos
    uint8_t cls            # timeout class; 255 when the entry is free
    uint8_t closing        # 0, CLOSE_FIN or CLOSE_RST
    uint8_t seen           # bit 0/1: client/server payload already handed up
    uint8_t icmp

cdef str addr_text(const uint8_t* a, int family)  # an address's text, one str object per address


# header reading shared with the compiled app decoder (_appdecode.pyx)
cdef inline int be16(const uint8_t* p) noexcept nogil:
    return (p[0] << 8) | p[1]


cdef inline bint ipv6_ext(int nxt) noexcept nogil:
    """Hop-by-hop, routing, destination options, AH, fragment: the extension headers followed."""
    return nxt == 0 or nxt == 43 or nxt == 60 or nxt == 51 or nxt == 44


ctypedef struct BlockSlot:
    uint8_t used
    uint8_t family
    uint8_t addr[16]


cdef class FlowTable:
    cdef FlowEntry** chunks
    cdef uint32_t nchunks
    cdef uint32_t cap
    cdef uint32_t count
    cdef uint32_t free_head
    cdef uint32_t* buckets
    cdef uint32_t nbuckets
    cdef uint32_t heads[N_LISTS]
    cdef uint32_t tails[N_LISTS]
    cdef double idle[N_CLASSES]
    cdef double active_timeout
    cdef double emergency_factor
    cdef uint32_t max_flows
    cdef double now
    cdef double next_expire
    cdef uint32_t expire_batch  # flows emitted per expiry pass at most (the rest: next pass)
    cdef bint behind          # the last pass stopped at expire_batch: more are due
    cdef bint ticked          # packet time reached a new second (the engine ticks then too)
    cdef BlockSlot* bslots
    cdef uint32_t bmask
    cdef uint32_t nblocked
    cdef object blocked
    cdef list closed
    cdef list app
    cdef int app_mask         # the app kinds to hand up (bits of slipsq.flowtable.APP_KINDS)
    cdef uint64_t n_packets, n_bytes, n_non_ip, n_malformed, n_fragments, n_dropped
    cdef uint64_t n_closed, n_evicted, n_app, n_arp

    cdef int feed_ip(self, const unsigned char* ip, Py_ssize_t length, double ts) except -1
    cdef int feed_link(self, const unsigned char* buf, Py_ssize_t length, double ts, int linktype) except -1
    cdef int _update(self, const unsigned char* buf, Py_ssize_t length, Parsed* p, double ts) except -1
    cdef uint32_t _alloc(self) except? 0xFFFFFFFF
    cdef int _grow_buckets(self) except -1
    cdef int _resize_buckets(self, uint32_t nb) except -1
    cdef int _shrink(self) except -1
    cdef void _remove(self, uint32_t i) noexcept
    cdef int _expire(self, double now) except -1
    cdef int _evict(self) except -1
    cdef int _emit(self, FlowEntry* e, str closed_by) except -1
    cdef bint _blocked(self, int family, const uint8_t* addr) noexcept
    cdef void _rebuild_blocks(self) except *


cdef class PcapFile:
    cdef object _mm
    cdef const uint8_t[::1] _view
    cdef const uint8_t* base
    cdef Py_ssize_t size
    cdef Py_ssize_t pos
    cdef bint ng
    cdef bint swapped
    cdef bint done
    cdef Py_ssize_t mapped_to
    cdef int populate
    cdef int linktype
    cdef uint32_t snaplen
    cdef double divisor
    cdef int* if_linktype
    cdef double* if_divisor
    cdef double* if_offset
    cdef int n_if
    cdef int if_cap
    cdef readonly str path
    cdef readonly str format
    cdef readonly list linktypes
    cdef readonly uint64_t packets
    cdef readonly uint64_t truncated
    cdef readonly uint64_t corrupt
    cdef readonly double first_ts
    cdef readonly double last_ts

    cdef int _section(self, Py_ssize_t at) noexcept
    cdef int _interface(self, Py_ssize_t at, uint32_t blen) except -1
    cdef void _map_ahead(self) noexcept nogil
