# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled per-flow path of the Stratosphere detector: behavioral letters and Markov matching.

The rules are those of the readable twins `slipsq/detect/stratosphere/letters.py` (LetterTable, TupleLetters) and
`slipsq/detect/stratosphere/markov.py` (Chain.matches); read their docstrings. Both sides must give the same strings, the
same transition counts (in the same order: the log-probability of a string is summed in that order,
so the distances are equal to the last bit) and the same matches; tests/test_letters_compiled.py
checks it. Here a tuple's recent flows, its string and its transition counts live in C arrays, and a
Chain reads its position lists and log-probabilities from C arrays indexed by character codes. A
Chain is built in C from the model's letters by the twin's own one-pass arithmetic (the same terms
summed in the same order), so both hold the very same numbers.

`PerFlow.on_flow` is what the engine calls per closed flow when compiled: the twin of
StratosphereDetector.on_flow (letter, length test, first matching chain), returning to the
detector's Python only on a match, when the evidence is built there.

This module computes letters and distances; it never decides anything and never does I/O.
"""

cimport cython
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.math cimport INFINITY, isfinite, log
from libc.stdint cimport int32_t, uint8_t, uint16_t
from libc.string cimport memcpy, memmove, memset

from dataclasses import fields

from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.stratosphere import markov as _markov
from slipsq.detect.stratosphere.letters import LATE_WINDOW as _LATE_WINDOW, MAX_ZEROS as _MAX_ZEROS, VARIANTS
from slipsq.flow import Flow

from slipsq._gckeys cimport untrack_key
from slipsq._tupleindex cimport TupleIndex, ix_add, ix_find, ix_free, ix_get, ix_remove, key_hash
from slipsq._flowslots cimport (F_CLOSED_BY, F_DADDR, F_DBYTES, F_DPORT, F_END, F_PROTO, F_SADDR, F_SBYTES,
                                F_START, NFLOW_FIELDS, FlowSlots, flow_direct, flow_field, flow_slots)

cdef enum:
    NCODES = 128  # characters are 7-bit ASCII (the letters alphabet); a pair code is a << 7 | b
    NPAIRS = 16384
    PIECE_MAX = 1003  # MAX_ZEROS zeros + letter + symbol (+1 spare)

cdef int LATE = _LATE_WINDOW
cdef int MAXZ = _MAX_ZEROS
cdef double LOG_PENALTY = _markov.LOG_PENALTY
cdef double ABSENT = 1.0  # log-probabilities are <= 0: 1.0 marks "no such transition"
cdef const char* ROW_NO_DATA = b"123456789"
cdef const char* ROW_STRONG = b"abcdefghi"
cdef const char* ROW_WEAK = b"ABCDEFGHI"
cdef const char* ROW_WEAK_NOT = b"rstuvwxyz"
cdef const char* ROW_STRONG_NOT = b"RSTUVWXYZ"


# --- reading a Flow ------------------------------------------------------------------------------
# its fields straight from their slots (slipsq/_flowslots.pxd): nine a flow, ~200 instructions each
# through getattr, the largest part of `add` once
cdef tuple FLOW_NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, FLOW_NAMES)


def direct_fields() -> tuple:
    """The Flow fields read straight from their slot (the others go through getattr; for the tests)."""
    return tuple(FLOW_NAMES[k] for k in range(NFLOW_FIELDS) if SLOTS.offset[k] >= 0)


cdef inline object _field(object flow, bint direct, int k):
    """flow.<FLOW_NAMES[k]>; direct: flow_direct(&SLOTS, flow)."""
    return flow_field(&SLOTS, flow, direct, k, FLOW_NAMES)


cdef struct Pair:
    uint16_t code
    int32_t count


cdef inline int column(double size, double dur) noexcept:
    # size as a double: any int a flow file gives converts (the classes end at 1100 bytes)
    cdef int s = 0 if size <= 250 else 1 if size <= 1100 else 2
    cdef int d = 0 if dur <= 0.1 else 1 if dur <= 10.0 else 2
    return 3 * s + d


cdef int c_piece(double t1, bint has_t1, double t2, bint has_t2, int col, bint symbol, char* out) noexcept:
    """letters.piece into out; its length."""
    cdef const char* r
    cdef double lo, hi, td, h
    cdef int k = 0, z, j
    if not has_t2:
        out[0] = ROW_NO_DATA[col]
        return 1
    if not has_t1:
        r = ROW_NO_DATA
    else:
        if t1 <= t2:
            lo = t1
            hi = t2
        else:
            lo = t2
            hi = t1
        td = 1.0 if lo == 0 else hi / lo
        if td <= 1.05:
            r = ROW_STRONG
        elif td <= 1.3:
            r = ROW_WEAK
        elif td <= 5.0:
            r = ROW_WEAK_NOT
        else:
            r = ROW_STRONG_NOT
    if t2 >= 3600.0:
        h = t2 / 3600.0
        z = MAXZ if h >= MAXZ else <int>h
        for j in range(z):
            out[j] = 48  # '0'
        k = z
    out[k] = r[col]
    k += 1
    if symbol:
        if t2 <= 5.0:
            out[k] = 46  # '.'
            k += 1
        elif t2 <= 60.0:
            out[k] = 44  # ','
            k += 1
        elif t2 <= 300.0:
            out[k] = 43  # '+'
            k += 1
        elif t2 <= 3600.0:
            out[k] = 42  # '*'
            k += 1
    return k


@cython.no_gc
cdef class TupleLetters:
    """One 4-tuple (see letters.TupleLetters): recent flows, string and transition counts in C arrays.

    Outside the cycle collector: its object fields hold a key tuple of addresses and numbers, a
    label and the last alert's (window, label, confidence), never itself, so it can be in no cycle;
    a replay makes one per new 4-tuple (about one per flow), and each young collection walked them
    all again. Its LRU links (LetterTable) are borrowed pointers, not references, for the same reason.

    The arrays start in the object itself (room for 2 flows, 16 characters, 4 pairs) and move to
    the heap only when they outgrow it: most tuples see one flow, and three mallocs and frees for
    each cost more than the rest of its making."""

    cdef public object key
    cdef public long flows, dropped
    cdef public double first_seen, last_seen
    cdef public str label
    cdef public object alerted
    cdef double* _starts  # recent flows in start order; _cols and _plens live in the same block
    cdef uint8_t* _cols
    cdef uint16_t* _plens
    cdef int n, cap
    cdef char* _text
    cdef int tlen, tcap
    cdef Pair* _pairs  # in the order a dict would keep them (first insertion first)
    cdef int npairs, pcap
    cdef PyObject* _prev  # LetterTable's LRU links (borrowed: its index holds the reference)
    cdef PyObject* _next
    cdef double _flows0[3]  # the first block: 2 starts, 2 plens, 2 cols (22 bytes)
    cdef char _text0[16]
    cdef Pair _pairs0[4]

    def __init__(self, object key, double start, int col) -> None:
        self._setup(key, start, col)

    cdef void _setup(self, object key, double start, int col) noexcept:
        """The tuple of its first flow (LetterTable makes it with __new__ and this: no argument parsing)."""
        self.key = key
        self.cap = 2
        self._starts = self._flows0
        self._plens = <uint16_t*>(self._starts + self.cap)
        self._cols = <uint8_t*>(self._plens + self.cap)
        self.tcap = 16
        self._text = self._text0
        self.pcap = 4
        self._pairs = self._pairs0
        self._starts[0] = start
        self._cols[0] = col
        self._plens[0] = 1
        self.n = 1
        self._text[0] = ROW_NO_DATA[col]
        self.tlen = 1
        self.npairs = 0
        self.flows = 1
        self.dropped = 0
        self.first_seen = start
        self.last_seen = 0.0
        self.label = ""
        self.alerted = None

    def __dealloc__(self) -> None:
        if self._starts != self._flows0:
            PyMem_Free(self._starts)
        if self._text != self._text0:
            PyMem_Free(self._text)
        if self._pairs != self._pairs0:
            PyMem_Free(self._pairs)

    # --- read-only views (reports and tests; not per flow) -----------------------------------------
    @property
    def text(self) -> str:
        return self._text[:self.tlen].decode("ascii")

    @property
    def length(self) -> int:
        return self.tlen

    @property
    def pairs(self) -> dict:
        cdef int k
        return {chr(self._pairs[k].code >> 7) + chr(self._pairs[k].code & 127): self._pairs[k].count
                for k in range(self.npairs)}

    @property
    def starts(self) -> list:
        return [self._starts[k] for k in range(self.n)]

    @property
    def cols(self) -> list:
        return [self._cols[k] for k in range(self.n)]

    @property
    def plens(self) -> list:
        return [self._plens[k] for k in range(self.n)]

    @property
    def client(self) -> str:
        return self.key[0]

    @property
    def server(self) -> str:
        return self.key[1]

    @property
    def port(self) -> int:
        return self.key[2]

    @property
    def proto(self) -> str:
        return self.key[3]

    # --- storage ----------------------------------------------------------------------------------
    cdef int _grow_flows(self, int need) except -1:
        if need <= self.cap:
            return 0
        cdef int cap = self.cap * 2
        while cap < need:
            cap *= 2
        cdef double* st = <double*>PyMem_Malloc(cap * (sizeof(double) + sizeof(uint16_t) + 1))
        if st == NULL:
            raise MemoryError()
        cdef uint16_t* pl = <uint16_t*>(st + cap)
        cdef uint8_t* co = <uint8_t*>(pl + cap)
        memcpy(st, self._starts, self.n * sizeof(double))
        memcpy(pl, self._plens, self.n * sizeof(uint16_t))
        memcpy(co, self._cols, self.n)
        if self._starts != self._flows0:
            PyMem_Free(self._starts)
        self._starts, self._plens, self._cols, self.cap = st, pl, co, cap
        return 0

    cdef int _grow_text(self, int need) except -1:
        if need <= self.tcap:
            return 0
        cdef int cap = self.tcap * 2
        while cap < need:
            cap *= 2
        cdef char* t
        if self._text == self._text0:
            t = <char*>PyMem_Malloc(cap)
            if t != NULL:
                memcpy(t, self._text0, self.tlen)
        else:
            t = <char*>PyMem_Realloc(self._text, cap)
        if t == NULL:
            raise MemoryError()
        self._text, self.tcap = t, cap
        return 0

    cdef int _bump(self, int code, int delta) except -1:
        """pairs[code] += delta, dropping it at 0 (dict semantics: a new pair goes last)."""
        cdef int k
        cdef Pair* p = self._pairs
        for k in range(self.npairs):
            if p[k].code == code:
                p[k].count += delta
                if p[k].count == 0:
                    memmove(p + k, p + k + 1, (self.npairs - k - 1) * sizeof(Pair))
                    self.npairs -= 1
                return 0
        if delta == 0:
            return 0
        if self.npairs == self.pcap:
            if p == self._pairs0:
                p = <Pair*>PyMem_Malloc(2 * self.pcap * sizeof(Pair))
                if p != NULL:
                    memcpy(p, self._pairs0, self.npairs * sizeof(Pair))
            else:
                p = <Pair*>PyMem_Realloc(self._pairs, 2 * self.pcap * sizeof(Pair))
            if p == NULL:
                raise MemoryError()
            self._pairs = p
            self.pcap *= 2
        p[self.npairs].code = code
        p[self.npairs].count = delta
        self.npairs += 1
        return 0

    cdef int _count(self, const char* s, int n, int delta) except -1:
        cdef int k
        for k in range(n - 1):
            self._bump((<uint8_t>s[k] & 127) << 7 | (<uint8_t>s[k + 1] & 127), delta)
        return 0

    cdef int _count_between(self, int off_i, const char* mid, int mlen, int off_j, int delta) except -1:
        """_count of text[off_i - 1] + mid + text[off_j] (each end only when the text has it)."""
        cdef char buf[3 * PIECE_MAX + 2]
        cdef int ls = 0
        if off_i >= 1:
            buf[0] = self._text[off_i - 1]
            ls = 1
        memcpy(buf + ls, mid, mlen)
        ls += mlen
        if off_j < self.tlen:
            buf[ls] = self._text[off_j]
            ls += 1
        return self._count(buf, ls, delta)

    cdef int _trim(self, int max_chars) except -1:
        """Let go the oldest flows beyond the recent window and the first characters beyond max_chars."""
        cdef int k = self.n - LATE, cut = self.tlen - max_chars
        if k > 0:  # keep the last LATE flows
            memmove(self._starts, self._starts + k, LATE * sizeof(double))
            memmove(self._cols, self._cols + k, LATE)
            memmove(self._plens, self._plens + k, LATE * sizeof(uint16_t))
            self.n = LATE
            self.dropped += k
        if cut > 0:
            self._count(self._text, cut + 1, -1)
            memmove(self._text, self._text + cut, self.tlen - cut)
            self.tlen -= cut
        return 0

    cdef int _piece_at(self, int i, bint slips, char* out) noexcept:
        cdef long nth = self.dropped + i
        cdef double* st = self._starts
        cdef double t2 = st[i] - st[i - 1] if nth >= 1 else 0.0
        cdef double t1 = st[i - 1] - st[i - 2] if nth >= 2 else 0.0
        return c_piece(t1, nth >= 2, t2, nth >= 1, self._cols[i], not (slips and nth == 1), out)

    # --- placing a flow ---------------------------------------------------------------------------
    def add(self, double start, int col, str variant, int max_chars) -> bool:
        """Place one flow; False when it starts too early to be placed (see letters.TupleLetters.add)."""
        return self._add(start, col, variant == "slips", max_chars)

    cdef bint _add(self, double start, int col, bint slips, int max_chars) except -1:
        cdef int n = self.n, plen, k  # n >= 1: a tuple is made with its first flow
        cdef char p[PIECE_MAX]
        if start < self._starts[n - 1]:
            return self._insert(start, col, slips, max_chars)
        self._grow_flows(n + 1)
        self._starts[n] = start
        self._cols[n] = col
        self.n = n + 1
        plen = self._piece_at(n, slips, p)
        self._plens[n] = plen
        self._grow_text(self.tlen + plen)
        memcpy(self._text + self.tlen, p, plen)
        k = 1 if self.tlen else 0  # the new transitions: from the string's last character through the piece
        self._count(self._text + self.tlen - k, plen + k, 1)
        self.tlen += plen
        self.flows += 1
        self._trim(max_chars)
        return True

    cdef bint _insert(self, double start, int col, bint slips, int max_chars) except -1:
        cdef int n = self.n, i, lo, hi, mid, k, tail = 0, nnew, old_end, off_i, off_j, mlen
        cdef char midbuf[3 * PIECE_MAX]
        cdef int plen_new[3]
        # bisect_right over the recent starts
        lo, hi = 0, n
        while lo < hi:
            mid = (lo + hi) // 2
            if start < self._starts[mid]:
                hi = mid
            else:
                lo = mid + 1
        i = lo
        for k in range(i, n):
            tail += self._plens[k]
        if (self.dropped and i < 2) or tail > self.tlen:
            return False
        self._grow_flows(n + 1)
        memmove(self._starts + i + 1, self._starts + i, (n - i) * sizeof(double))
        memmove(self._cols + i + 1, self._cols + i, n - i)
        self._starts[i] = start
        self._cols[i] = col
        nnew = min(i + 3, n + 1) - i
        mlen = 0
        for k in range(nnew):
            plen_new[k] = self._piece_at(i + k, slips, midbuf + mlen)
            mlen += plen_new[k]
        old_end = min(i + 2, n)
        off_i = self.tlen - tail
        off_j = off_i
        for k in range(i, old_end):
            off_j += self._plens[k]
        # the transitions of the old pieces go, those of the recomputed ones come
        self._count_between(off_i, self._text + off_i, off_j - off_i, off_j, -1)
        self._count_between(off_i, midbuf, mlen, off_j, 1)
        # text = text[:off_i] + mid + text[off_j:]
        self._grow_text(self.tlen - (off_j - off_i) + mlen)
        memmove(self._text + off_i + mlen, self._text + off_j, self.tlen - off_j)
        memcpy(self._text + off_i, midbuf, mlen)
        self.tlen += mlen - (off_j - off_i)
        # plens[i:old_end] = the new lengths (one more entry than before)
        memmove(self._plens + i + nnew, self._plens + old_end, (n - old_end) * sizeof(uint16_t))
        for k in range(nnew):
            self._plens[i + k] = plen_new[k]
        self.n = n + 1
        self.flows += 1
        self._trim(max_chars)
        return True


cdef class LetterTable:
    """Every live 4-tuple, least recently active first (see letters.LetterTable).

    The twin's OrderedDict is a dict (key -> tuple) and a doubly linked list through the tuples.
    Here the tuples are found through a TupleIndex (slipsq/_tupleindex.pxd) keyed by the flow's
    four fields themselves: a flow of a tuple already here builds no key tuple and hashes no tuple,
    and a new tuple's key is made once, for the tuple to keep. The LRU order is a doubly linked
    list through the tuples (borrowed pointers: the index owns them), so move-to-end and
    drop-oldest are a few pointer writes. Every removal goes through _pop_front, which unlinks before the index lets go."""

    cdef public str variant
    cdef public int max_chars
    cdef public double idle
    cdef public int max_tuples
    cdef public long too_late, expired, evicted
    cdef TupleIndex _index  # key -> TupleLetters (slipsq/_tupleindex.pxd): it holds them
    cdef PyObject* _head  # least recently active
    cdef PyObject* _tail  # most recently active
    cdef bint slips

    def __init__(self, str variant="classic", int max_chars=4096, double idle=21600.0,
                 int max_tuples=100_000) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"letters variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
        self.variant = variant
        self.slips = variant == "slips"
        self.max_chars = max(2, max_chars)
        self.idle = idle
        self.max_tuples = max(1, max_tuples)
        ix_free(&self._index)
        self._head = self._tail = NULL
        self.too_late = 0
        self.expired = 0
        self.evicted = 0

    # --- the LRU list ------------------------------------------------------------------------------
    cdef inline void _unlink(self, TupleLetters t) noexcept:
        if t._prev == NULL:
            self._head = t._next
        else:
            (<TupleLetters>t._prev)._next = t._next
        if t._next == NULL:
            self._tail = t._prev
        else:
            (<TupleLetters>t._next)._prev = t._prev
        t._prev = t._next = NULL

    cdef inline void _append(self, TupleLetters t) noexcept:
        t._prev = self._tail
        t._next = NULL
        if self._tail == NULL:
            self._head = <PyObject*>t
        else:
            (<TupleLetters>self._tail)._next = <PyObject*>t
        self._tail = <PyObject*>t

    def __dealloc__(self):
        ix_free(&self._index)

    cdef int _pop_front(self) except -1:
        cdef TupleLetters t = <TupleLetters>self._head  # a reference: alive until unlinked and let go
        self._unlink(t)
        ix_remove(&self._index, t, t.key)
        return 0

    # --- placing a flow ---------------------------------------------------------------------------
    def add(self, flow: object) -> TupleLetters | None:
        """Give the flow its letter; the tuple it changed, or None when the flow gets no letter."""
        cdef bint udp
        return self._add(flow, &udp)

    cdef TupleLetters _add(self, object flow, bint* udp):
        """add(); *udp tells the tuple's protocol (set when the result is not None)."""
        cdef double start, end, size
        cdef int col
        cdef TupleLetters t
        cdef PyObject* found
        cdef bint direct = flow_direct(&SLOTS, flow)
        proto = _field(flow, direct, F_PROTO)
        if proto == "tcp":
            udp[0] = False
        elif proto == "udp":
            udp[0] = True
        else:
            return None
        if _field(flow, direct, F_CLOSED_BY) == "active":  # flow.is_report, without the property's call
            return None
        start = _field(flow, direct, F_START)
        if not isfinite(start):
            return None
        end = _field(flow, direct, F_END)
        size = _field(flow, direct, F_SBYTES) + _field(flow, direct, F_DBYTES)
        col = column(size, end - start if end > start else 0.0)
        saddr, daddr, dport = _field(flow, direct, F_SADDR), _field(flow, direct, F_DADDR), _field(flow, direct, F_DPORT)
        cdef Py_hash_t h = key_hash(saddr, daddr, dport, proto)
        cdef size_t at
        if ix_find(&self._index, h, saddr, daddr, dport, proto, &at) != 1:
            key = (saddr, daddr, dport, proto)
            t = TupleLetters.__new__(TupleLetters)
            t._setup(key, start, col)
            untrack_key(key)  # kept: out of the cycle collector now (slipsq/_gckeys.pxd)
            ix_add(&self._index, h, key, t)
            self._append(t)
            if self._index.n > self.max_tuples:
                self._pop_front()
                self.evicted += 1
        else:
            found = self._index.slots[at].obj
            t = <TupleLetters>found
            if found != self._tail:
                self._unlink(t)
                self._append(t)
            if not t._add(start, col, self.slips, self.max_chars):
                self.too_late += 1
                return None
        if end > t.last_seen:
            t.last_seen = end
        return t

    def expire(self, double now) -> int:
        """Drop tuples idle for longer than `idle` (only the least recently active are looked at)."""
        cdef int gone = 0
        cdef double limit = now - self.idle
        while self._head != NULL:
            if (<TupleLetters>self._head).last_seen >= limit:
                break
            self._pop_front()
            gone += 1
        self.expired += gone
        return gone

    def get(self, key: object) -> TupleLetters | None:
        """The tuple of `key` (client, server, port, proto), or None."""
        return ix_get(&self._index, key)

    def __len__(self) -> int:
        return self._index.n

    def __iter__(self) -> object:
        cdef list out = []
        cdef PyObject* p = self._head
        while p != NULL:
            out.append(<TupleLetters>p)
            p = (<TupleLetters>p)._next
        return iter(out)


# --- matching ------------------------------------------------------------------------------------

cdef inline double distance_of(double lp_t, double lp_s) noexcept:
    cdef double lo, hi
    if lp_t <= lp_s:
        lo, hi = lp_t, lp_s
    else:
        lo, hi = lp_s, lp_t
    if hi - lo <= 1e-12 * -lo:
        return 1.0
    if hi == 0:
        return INFINITY
    return lo / hi


cdef inline int bisect_right(const int32_t* a, int n, int x) noexcept:
    cdef int lo = 0, hi = n, mid
    while lo < hi:
        mid = (lo + hi) // 2
        if x < a[mid]:
            hi = mid
        else:
            lo = mid + 1
    return lo


cdef inline int code_of(str ch) except -1:
    cdef Py_UCS4 c = ch[0]
    return c if c < 128 else 127


cdef double* XLOGX = NULL  # k ln k for k < XLOGX_N, shared by every Chain (the numbers each computed alone)
cdef int XLOGX_N = 0


cdef const double* _xlogx(int n) except NULL:
    """k ln k for k in 0..n-1 (markov.Chain's `f`), grown on demand and kept: as long as the longest
    chain made, one log() per k once rather than once per chain."""
    global XLOGX, XLOGX_N
    cdef int k
    cdef double* t
    if n > XLOGX_N:
        t = <double*>PyMem_Realloc(XLOGX, n * sizeof(double))
        if t == NULL:
            raise MemoryError()
        if XLOGX_N == 0:
            t[0] = 0.0
            XLOGX_N = 1
        for k in range(XLOGX_N, n):
            t[k] = <double>k * log(<double>k)
        XLOGX, XLOGX_N = t, n
    return XLOGX


cdef class Chain:
    """A model made ready for matching (see markov.Chain), its tables in C arrays."""

    cdef public object model
    cdef public double threshold
    cdef public int length
    cdef double* _logpt  # length + 1
    cdef double* _full  # NPAIRS, ABSENT when the pair never occurs in T
    cdef double _full_init[NCODES]
    cdef int32_t* _pos  # every position list, concatenated
    cdef int* _pos_off  # NPAIRS + 1 offsets into _pos
    cdef int32_t* _src
    cdef int _src_off[NCODES + 1]

    def __init__(self, model: object, longest: object = None) -> None:
        # markov.Chain.__init__ in C arrays: the same terms summed in the same order (see there)
        letters = model.letters if len(model.letters) >= 2 else ""
        if longest is not None and len(letters) > longest + 1:
            letters = letters[:max(2, longest + 1)]  # the twin's cut (see there)
        cdef bytes tb = letters.encode("ascii")  # every code < NCODES (else UnicodeEncodeError)
        cdef const uint8_t* t = tb
        cdef int L = len(tb), m = L - 1, k, c, a, r, q, firsts = 0
        cdef double acc = 0.0
        cdef const double* f
        cdef int* pair_n  # how many of each pair / character the pass has met (at its end: their counts)
        cdef int char_n[NCODES]
        self.model = model
        self.threshold = model.threshold
        self.length = L
        self._logpt = <double*>PyMem_Malloc((L + 1) * sizeof(double))
        self._full = <double*>PyMem_Malloc(NPAIRS * sizeof(double))
        self._pos_off = <int*>PyMem_Malloc((NPAIRS + 1) * sizeof(int))
        self._pos = <int32_t*>PyMem_Malloc((L + 1) * sizeof(int32_t))
        self._src = <int32_t*>PyMem_Malloc((L + 1) * sizeof(int32_t))
        f = _xlogx(L + 1)  # f[k] = k ln k for k <= m + 1
        pair_n = <int*>PyMem_Malloc(NPAIRS * sizeof(int))
        try:
            if (self._logpt == NULL or self._full == NULL or self._pos_off == NULL or self._pos == NULL
                    or self._src == NULL or pair_n == NULL):
                raise MemoryError()
            # position lists: count per pair / per character, offsets, then positions in k order
            memset(self._pos_off, 0, (NPAIRS + 1) * sizeof(int))
            memset(self._src_off, 0, (NCODES + 1) * sizeof(int))
            for k in range(m):
                self._pos_off[(t[k] << 7 | t[k + 1]) + 1] += 1
                self._src_off[t[k] + 1] += 1
            for c in range(NPAIRS):
                self._pos_off[c + 1] += self._pos_off[c]
            for c in range(NCODES):
                self._src_off[c + 1] += self._src_off[c]
            memset(pair_n, 0, NPAIRS * sizeof(int))
            memset(char_n, 0, NCODES * sizeof(int))
            self._logpt[0] = 0.0
            if L >= 1:
                self._logpt[1] = 0.0
            for k in range(m):
                c, a = t[k] << 7 | t[k + 1], t[k]
                r, q = pair_n[c], char_n[a]
                self._pos[self._pos_off[c] + r] = k
                self._src[self._src_off[a] + q] = k
                pair_n[c], char_n[a] = r + 1, q + 1
                acc += f[r + 1] - f[r] - f[q + 1] + f[q]
                firsts += t[k] == t[0]
                self._logpt[k + 2] = acc + log(<double>firsts / <double>(k + 1))
            for c in range(NPAIRS):
                self._full[c] = ABSENT
                if pair_n[c]:
                    self._full[c] = log(<double>pair_n[c] / <double>char_n[c >> 7])
            for a in range(NCODES):
                self._full_init[a] = log(<double>char_n[a] / <double>m) if char_n[a] else ABSENT
        finally:
            PyMem_Free(pair_n)

    def __dealloc__(self) -> None:
        PyMem_Free(self._logpt)
        PyMem_Free(self._full)
        PyMem_Free(self._pos_off)
        PyMem_Free(self._pos)
        PyMem_Free(self._src)

    @property
    def logpt(self) -> list:
        return [self._logpt[k] for k in range(self.length + 1)]

    cdef double _log_prob(self, int n, int first, const Pair* pairs, int npairs, double floor) noexcept:
        cdef double lp, g
        cdef int k, last, ca, cab, a, code
        if n >= self.length:
            g = self._full_init[first]
            lp = g if g != ABSENT else 0.0
            for k in range(npairs):
                g = self._full[pairs[k].code]
                lp += <double>pairs[k].count * (g if g != ABSENT else LOG_PENALTY)
                if lp < floor:
                    break
            return lp
        last = n - 2  # the transitions of T[:n] are those at k <= n-2
        ca = bisect_right(self._src + self._src_off[first], self._src_off[first + 1] - self._src_off[first],
                          last)
        lp = log(<double>ca / <double>(n - 1)) if ca else 0.0
        for k in range(npairs):
            code = pairs[k].code
            cab = bisect_right(self._pos + self._pos_off[code], self._pos_off[code + 1] - self._pos_off[code],
                               last)
            if cab:
                a = code >> 7
                lp += <double>pairs[k].count * log(
                    <double>cab / <double>bisect_right(self._src + self._src_off[a],
                                                       self._src_off[a + 1] - self._src_off[a], last))
            else:
                lp += <double>pairs[k].count * LOG_PENALTY
            if lp < floor:
                break
        return lp

    cdef double _matches(self, int n, int first, const Pair* pairs, int npairs) noexcept:
        """The distance when S matches, else -1 (see markov.Chain.matches)."""
        cdef double lp_t, floor, lp_s, d
        if n < 2 or self.length < 2:
            return -1.0
        lp_t = self._logpt[n if n < self.length else self.length]
        floor = self.threshold * lp_t * (1 + 1e-9)
        lp_s = self._log_prob(n, first, pairs, npairs, floor)
        if lp_s < floor:
            return -1.0
        d = distance_of(lp_t, lp_s)
        return d if 1.0 <= d <= self.threshold else -1.0

    # --- the twin's interface, S given as (length, first character, transition counts) ----------
    def log_prob(self, int n, str first, dict pairs, double floor=-INFINITY) -> float:
        cdef Pair* p = _pairs_of(pairs)
        try:
            return self._log_prob(n, code_of(first), p, len(pairs), floor)
        finally:
            PyMem_Free(p)

    def distance(self, int n, str first, dict pairs) -> float:
        cdef Pair* p
        if n < 2 or self.length < 2:
            return INFINITY
        p = _pairs_of(pairs)
        try:
            return distance_of(self._logpt[n if n < self.length else self.length],
                               self._log_prob(n, code_of(first), p, len(pairs), -INFINITY))
        finally:
            PyMem_Free(p)

    def matches(self, int n, str first, dict pairs) -> float | None:
        cdef Pair* p = _pairs_of(pairs)
        cdef double d
        try:
            d = self._matches(n, code_of(first), p, len(pairs))
        finally:
            PyMem_Free(p)
        return d if d >= 0 else None


cdef Pair* _pairs_of(dict pairs) except NULL:
    cdef Pair* p = <Pair*>PyMem_Malloc((len(pairs) + 1) * sizeof(Pair))
    cdef int k = 0
    if p == NULL:
        raise MemoryError()
    for ab, c in pairs.items():
        p[k].code = code_of(ab[0]) << 7 | code_of(ab[1])
        p[k].count = c
        k += 1
    return p


def first_match(list chains, TupleLetters t) -> tuple[Chain, float] | None:
    """The first chain the tuple's string matches, with its distance; None when none does."""
    cdef Chain ch
    cdef double d
    cdef int first
    if t.tlen == 0:
        return None
    first = <uint8_t>t._text[0] & 127
    for ch in chains:
        d = ch._matches(t.tlen, first, t._pairs, t.npairs)
        if d >= 0:
            return ch, d
    return None


cdef class PerFlow:
    """The detector's whole per-flow path in one call (StratosphereDetector.on_flow, its twin): the
    letter, the length test, the first matching chain of the flow's protocol; back to Python
    (`matched`, which builds the evidence) only on a match. The detector hands its `on_flow` to the
    engine, so a flow that matches nothing runs no Python frame at all."""

    cdef readonly LetterTable table
    cdef readonly int min_letters
    cdef list _tcp, _udp, _tcp_not_dns, _udp_not_dns
    cdef object matched

    def __init__(self, LetterTable table, int min_letters, list tcp, list udp, matched: object,
                 list tcp_not_dns=None, list udp_not_dns=None) -> None:
        """`tcp`, `udp`: every model's chain, for tuples to port 53; the `*_not_dns` lists (default: the
        same) for the other tuples (the detector's not_dns: no DNS model)."""
        self.table, self.min_letters, self._tcp, self._udp, self.matched = table, min_letters, tcp, udp, matched
        self._tcp_not_dns = tcp if tcp_not_dns is None else tcp_not_dns
        self._udp_not_dns = udp if udp_not_dns is None else udp_not_dns

    def on_flow(self, flow: object) -> object:
        cdef bint udp
        cdef TupleLetters t = self.table._add(flow, &udp)
        cdef Chain ch
        cdef double d
        cdef int first
        if t is None or t.tlen < self.min_letters:
            return NO_EVIDENCE
        if t.key[2] == 53:
            chains = self._udp if udp else self._tcp
        else:
            chains = self._udp_not_dns if udp else self._tcp_not_dns
        if not chains:
            return NO_EVIDENCE
        first = <uint8_t>t._text[0] & 127
        for ch in chains:
            d = ch._matches(t.tlen, first, t._pairs, t.npairs)
            if d >= 0:
                return self.matched(t, ch.model, d, flow)
        t.label = ""
        return NO_EVIDENCE
