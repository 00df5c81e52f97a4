# C declarations of the compiled flow table (slipsq/_flowtable.pyx) for the other compiled modules:
# the sources cimport FlowTable and call feed_link (sources/_pcap.pyx, a capture's frames) or feed_ip
# (sources/_nfq.pyx, the queue's payload pointer) C to C; the app decoder cimports addr_text.

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcmp

from slipsq._decode cimport Parsed

cdef enum:
    N_CLASSES = 6          # timeout classes: tcp new, tcp established, tcp closing, udp, icmp, other
    ACTIVE_LIST = 6        # index of the active-report list among the list heads
    N_LISTS = 7
    BYPASSED = 254         # FlowEntry.cls of a bypassed entry: on no idle list (its packets pass us by)
    BYPASS_ON = 1
    BYPASS_DONE = 2
    V_DROP = 0             # verdicts of feed_ip/feed_link (slipsq.flowtable ACCEPT, DROP, BYPASS, UNBYPASS)
    V_ACCEPT = 1
    V_BYPASS = 2           # accept, and mark the connection so the kernel forwards the rest itself
    V_UNBYPASS = 3         # accept, and clear that mark: every later packet is queued again
    CHUNK_BITS = 12        # flow entries are allocated 4096 at a time, never moved
    CLASS_LINKS = 0        # FlowEntry.prev/next index of the timeout-class list links
    BYPASS_MAX_WAITS = 128  # packets a ready flow waits for a drained queue before it switches anyway
                           # (at most 255: FlowEntry.bypass_waits is a uint8_t)
    ACTIVE_LINKS = 1       # ... and of the active-report list links

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
    uint8_t bypass         # 0 never, BYPASS_ON now (kernel forwards its packets), BYPASS_DONE since a FIN/RST
    uint8_t bypass_waits   # packets that found the flow ready for bypass but the queue not drained

# a closed flow as the table's record mode ships it (FlowTable.set_records, slipsq/pipeline.py): its
# entry as it was when emitted, and why; flows_of_records makes the Flows (the links and class of
# the copy mean nothing in another process)
ctypedef struct FlowRecord:
    FlowEntry entry
    uint8_t closed_by      # an index into CLOSED_BY (_flowtable.pyx)

# the addresses of one IP packet, as the table's record mode logs them (FlowTable.touched_since)
ctypedef struct SeenPacket:
    uint8_t src[16]
    uint8_t dst[16]
    uint8_t family

cdef str addr_text(const uint8_t* a, int family)  # an address's text, one str object per address

# the bypass gate (FlowTable.gate_bypass): true when the source's queue holds no packet now
ctypedef bint (*bypass_gate_fn)(void* ctx) noexcept


ctypedef struct BlockSlot:
    uint8_t used              # 0 free, 1 an address, 2 a deleted one (probing goes past it)
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
    cdef uint32_t nblocked    # live entries in bslots
    cdef uint32_t btomb       # deleted entries (tombstones) in bslots
    cdef object blocked
    cdef list closed
    cdef list app
    cdef int app_mask         # the app kinds to hand up (bits of slipsq.flowtable.APP_KINDS)
    cdef uint64_t n_packets, n_bytes, n_non_ip, n_malformed, n_fragments, n_dropped
    cdef uint64_t n_closed, n_evicted, n_app, n_arp
    cdef uint32_t bypass_after   # packets each way before a TCP flow is bypassed (0: never)
    cdef uint32_t bypass_max     # bypassed flows open at once at most (they leave the idle lists)
    cdef uint32_t n_bypass_open
    cdef uint64_t n_bypassed
    cdef list held               # flows of bypassed entries: their counts come from conntrack first
    cdef bypass_gate_fn gate_fn  # the bypass gate (NULL: switch at once)
    cdef void* gate_ctx
    cdef object gate_py          # a Python gate (set_bypass_gate), called through gate_fn
    cdef uint64_t n_bypass_waits, n_bypass_forced, n_bypass_late
    cdef FlowRecord* recs        # record mode: closed flows as FlowRecords, not Flows in `closed`
    cdef Py_ssize_t nrecs
    cdef Py_ssize_t recs_cap
    cdef SeenPacket* seen        # the last SEEN_RING IP packets' addresses, a ring; not NULL: record mode
    cdef uint64_t nseen          # IP packets logged in `seen` since record mode began

    cdef int feed_ip(self, const unsigned char* ip, Py_ssize_t length, double ts) except -1
    cdef int feed_link(self, const unsigned char* buf, Py_ssize_t length, double ts, int linktype) except -1
    cdef int _update(self, const unsigned char* buf, Py_ssize_t length, Parsed* p, double ts) except -1
    cdef int _bypass_verdict(self, FlowEntry* e, Parsed* p, int flags) noexcept
    cdef void gate_bypass(self, bypass_gate_fn fn, void* ctx) noexcept
    cdef uint32_t _alloc(self) except? 0xFFFFFFFF
    cdef int _grow_buckets(self) except -1
    cdef int _resize_buckets(self, uint32_t nb) except -1
    cdef int _shrink(self) except -1
    cdef void _remove(self, uint32_t i) noexcept
    cdef int _expire(self, double now) except -1
    cdef int _evict(self) except -1
    cdef int _emit(self, FlowEntry* e, int closed_by) except -1
    cdef bint _blocked(self, int family, const uint8_t* addr) noexcept
    cdef void _rebuild_blocks(self) except *
    cdef void _insert_block(self, bytes packed) noexcept


# --- first-payload predicates, shared by the table (what is handed up) and the app decoder (what a
# payload is): one copy for both compiled modules; twins in slipsq/appdecode.py

cdef inline bint telnet_start(const uint8_t* b, Py_ssize_t k) noexcept nogil:
    """appdecode.telnet_start: IAC, WILL/WONT/DO/DONT and an option below 50, then IAC or a line end."""
    return (k >= 3 and b[0] == 0xFF and 0xFB <= b[1] <= 0xFE and b[2] < 50
            and (k == 3 or b[3] == 0xFF or b[3] == 0x0D or b[3] == 0x0A))


cdef inline bint rdp_start(const uint8_t* b, Py_ssize_t k) noexcept nogil:
    """appdecode.rdp_start: TPKT version 3, then an X.224 Connection Request (0xE0) or Confirm (0xD0)."""
    return k >= 6 and b[0] == 3 and b[1] == 0 and ((b[5] & 0xF0) == 0xE0 or (b[5] & 0xF0) == 0xD0)


cdef inline bint smb_start(const uint8_t* b, Py_ssize_t k) noexcept nogil:
    """appdecode.smb_start: a NetBIOS session header, then SMB1's or SMB2's magic."""
    return k >= 8 and b[0] == 0 and (memcmp(b + 4, b"\xffSMB", 4) == 0 or memcmp(b + 4, b"\xfeSMB", 4) == 0)


cdef inline bint openvpn_start(const uint8_t* b, Py_ssize_t k) noexcept nogil:
    """appdecode.openvpn_start: a length that is the rest of the payload, then a client's hard reset."""
    return k >= 14 and ((<Py_ssize_t>b[0]) << 8 | b[1]) == k - 2 and (b[2] == 0x38 or b[2] == 0x50)
