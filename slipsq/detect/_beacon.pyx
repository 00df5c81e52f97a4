# cython: language_level=3
"""The beacon detector's per-flow path, compiled: the twin of `beacon.Intake`, `beacon.Tuples` and
`beacon._Tuple` (read those for the rules; slipsq.twins chooses). Every closed flow comes through
`Intake.add`: the ignore rules, the tuple update and "anything new to say" run here, so Python runs
only to score (rare, beacon.py).

The LRU order of the twin's OrderedDict is a doubly linked list through the tuples themselves (a
dict finds a tuple, the links give O(1) move-to-end and pop-front), so the same calls evict and
prune the same tuples in the same order. A new address is parsed here by the libc inet_pton that
addr.parse_ip_int calls, and tested as prefixes.local_int and the allow list's fixed ranges test
it (tests/test_detect_compiled.py holds all of it equal). Data only: no I/O, no clock.
"""

cimport cython

from cpython.dict cimport PyDict_Clear, PyDict_DelItem, PyDict_GetItem, PyDict_SetItem, PyDict_Size
from cpython.long cimport PyLong_FromUnsignedLong
from cpython.mem cimport PyMem_Free
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.math cimport INFINITY
from libc.stdint cimport uint32_t
from libc.string cimport memcmp, memcpy, memmove

from slipsq.lru import new as new_lru
from dataclasses import fields

from slipsq.allow import AllowList
from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.beacon import MAX_SPEAKS_FIRST  # a module global, as the twin's (a test lowers it)
from slipsq.detect.beacon import SPEAKS_FIRST as _SPEAKS_FIRST
from slipsq.flow import AppEvent, Flow
from slipsq.detect.prefixes import MEMO_SIZE, is_local
from slipsq.detect.tcpstate import _HELD_BY_STATE

from slipsq._carray cimport grow
from slipsq._gckeys cimport untrack_key
from slipsq._tupleindex cimport TupleIndex, ix_add, ix_find, ix_free, ix_get, ix_remove, key_hash
from slipsq._flowslots cimport (E_DADDR, E_DATA, E_DPORT, E_KIND, E_SADDR, E_SPORT, F_CLOSED_BY, F_DADDR, F_DBYTES,
                                F_DPORT, F_PROTO, F_SADDR, F_SBYTES, F_SPORT, F_START, EventSlots, FlowSlots,
                                event_field, event_slots, flow_direct, flow_field, flow_slots)
from slipsq._lru cimport get as lru_get
from slipsq._lru cimport put as lru_put
from slipsq.detect._addrtext cimport (PyUnicode_AsUTF8AndSize, PyUnicode_IS_ASCII, local_bytes,
                                      parse_text, v4_of, zero_below)
from slipsq.detect._prefixes cimport text_local
from slipsq.detect._states cimport flow_client_silent, flow_opened

cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)
cdef object _HELD = _HELD_BY_STATE.__self__  # the memo behind tcpstate.opened's state lookup
cdef EventSlots EV  # AppEvent's fields, read from their slots when the event is an AppEvent itself
event_slots(&EV, AppEvent)
cdef object SPEAKS_FIRST = _SPEAKS_FIRST


ctypedef struct Conn:
    double start
    PyObject* size  # a reference held


@cython.no_gc
cdef class Tuple:
    """One 4-tuple: its last connections' starts and sizes, and what was last reported (beacon._Tuple).

    The connections are one C array of (start, size) in start order, at most `history` + 1 long
    (the twin keeps two lists: two list objects, their item arrays and a float object per start,
    ~170 B more per tuple and three more allocations per new one); `starts` and `sizes` give the
    twin's lists. Outside the cycle collector: it holds only numbers; the one cycle a tuple is in,
    its LRU links, Tuples breaks when it is freed."""

    cdef Conn* conns
    cdef Py_ssize_t n, cap
    cdef public long total, emitted_n, emitted_window
    cdef public double emitted_threat, last
    cdef object key
    cdef Tuple prev, next  # LRU links: prev is less recently seen

    def __cinit__(self):
        self.conns, self.n, self.cap = NULL, 0, 0

    def __init__(self):
        self.total = self.emitted_n = 0
        self.emitted_window = -1
        self.emitted_threat = self.last = 0.0

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            Py_DECREF(<object>self.conns[i].size)
        PyMem_Free(self.conns)

    @property
    def starts(self):
        """The twin's list of starts (a new list: read it once)."""
        cdef Py_ssize_t i
        return [self.conns[i].start for i in range(self.n)]

    @property
    def sizes(self):
        """The twin's list of sizes, in the same order."""
        cdef Py_ssize_t i
        return [<object>self.conns[i].size for i in range(self.n)]

    cdef int put(self, double start, object size, Py_ssize_t history) except -1:
        """Insert a connection by start time (after those with the same start, as bisect does);
        then keep only the last `history`."""
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        if self.n == self.cap:
            self.conns = <Conn*>grow(self.conns, &self.cap, sizeof(Conn), 4)
        if self.n and not start >= self.conns[self.n - 1].start:  # out of start order (rare)
            while lo < hi:  # bisect.bisect_right
                mid = (lo + hi) // 2
                if start < self.conns[mid].start:
                    hi = mid
                else:
                    lo = mid + 1
            memmove(&self.conns[lo + 1], &self.conns[lo], (self.n - lo) * sizeof(Conn))
        else:
            lo = self.n
        Py_INCREF(size)
        self.conns[lo].start, self.conns[lo].size = start, <PyObject*>size
        self.n += 1
        if self.n > history:
            Py_DECREF(<object>self.conns[0].size)
            memmove(&self.conns[0], &self.conns[1], (self.n - 1) * sizeof(Conn))
            self.n -= 1
        return 0


@cython.no_gc_clear  # the collector must not empty head before __dealloc__ unlinks the tuples
cdef class Tuples:
    """4-tuple -> Tuple, at most `bound`, least recently seen first (beacon.Tuples). The twin's
    OrderedDict is a TupleIndex (slipsq/_tupleindex.pxd: a flow of a known tuple builds and hashes
    no key tuple) and a doubly linked list through the tuples."""

    cdef public long history, bound
    cdef public double oldest_last
    cdef TupleIndex index  # key -> Tuple: it holds them
    cdef Tuple head, tail  # least and most recently seen

    def __init__(self, long history, long bound):
        self.history, self.bound = history, bound
        self.oldest_last = INFINITY

    def __dealloc__(self):
        cdef Tuple t = self.head, after
        while t is not None:  # break the links' cycles: Tuple is not collected
            after = t.next
            t.prev = t.next = None
            t = after
        ix_free(&self.index)

    def __len__(self):
        return self.index.n

    def __iter__(self):
        """The keys, least recently seen first (as the twin's map)."""
        cdef Tuple t = self.head
        while t is not None:
            yield t.key
            t = t.next

    def get(self, key):
        """The tuple of `key`, or None (for tests and tools)."""
        return ix_get(&self.index, key)

    cdef inline void _unlink(self, Tuple t):
        if t.prev is None:
            self.head = t.next
        else:
            t.prev.next = t.next
        if t.next is None:
            self.tail = t.prev
        else:
            t.next.prev = t.prev
        t.prev = t.next = None

    cdef inline void _append(self, Tuple t):
        t.prev = self.tail
        if self.tail is None:
            self.head = t
        else:
            self.tail.next = t
        self.tail = t

    cdef int _pop_front(self) except -1:
        cdef Tuple t = self.head
        self._unlink(t)
        ix_remove(&self.index, t, t.key)
        return 0

    def add(self, tuple key, double start, object size):
        a, b, c, d = key
        return self._add(a, b, c, d, start, size, key)

    cdef Tuple _add(self, object a, object b, object c, object d, double start, object size, tuple key=None):
        """The tuple of key (a, b, c, d), made when new (the least recently seen going first when
        there are `bound`; it keeps `key`, or a tuple of the parts made now), now the most recently
        seen, with the connection added."""
        cdef Py_hash_t h = key_hash(a, b, c, d)
        cdef size_t at
        cdef Tuple t
        if ix_find(&self.index, h, a, b, c, d, &at) != 1:
            if self.index.n >= self.bound:
                self._pop_front()
            if key is None:
                key = (a, b, c, d)
            t = Tuple.__new__(Tuple)
            t.emitted_window = -1
            t.key = key
            untrack_key(key)  # kept: out of the cycle collector now (slipsq/_gckeys.pxd)
            ix_add(&self.index, h, key, t)
            self._append(t)
        else:
            t = <Tuple>self.index.slots[at].obj
            if t is not self.tail:
                self._unlink(t)
                self._append(t)
        t.put(start, size, self.history)
        t.total += 1
        if start > t.last:
            t.last = start
        if t.last < self.oldest_last:
            self.oldest_last = t.last
        return t

    def prune(self, double horizon):
        if horizon <= self.oldest_last:
            return
        while self.head is not None and self.head.last < horizon:
            self._pop_front()
        self.oldest_last = INFINITY if self.head is None else self.head.last


# the twin's _IGNORED_UDP_PORTS and _DNS_PORTS: Cython tests `in` a literal tuple with one C
# comparison per element for an int (Python's == for anything else), no hash and no set probe
cdef inline bint _ignored_udp_port(object port) except -1:
    return port in (123, 5353, 5355, 1900, 137, 138)


cdef inline bint _dns_port(object port) except -1:
    return port in (53, 853, 5353)


cdef bint _fixed_never(int version, const unsigned char* b):
    """In allow._NEVER: loopback, link-local, multicast, unspecified, the IPv4 broadcast."""
    cdef unsigned long n
    if version == 4:
        n = v4_of(b)
        return n >> 24 == 127 or n >> 16 == 0xA9FE or n >> 28 == 0xE or n == 0 or n == 0xFFFFFFFF
    return (b[0] == 0xFE and b[1] & 0xC0 == 0x80) or b[0] == 0xFF or zero_below(b, 1)


cdef bint _ends_255(object dst) except -1:
    """dst.endswith(".255") (a subnet broadcast the allow list cannot know), on the ASCII text."""
    cdef Py_ssize_t n
    cdef const char* s
    if type(dst) is not str or not PyUnicode_IS_ASCII(dst):
        return dst.endswith(".255")
    s = PyUnicode_AsUTF8AndSize(dst, &n)
    return n >= 4 and memcmp(s + n - 4, b".255", 4) == 0


def local_address(ip):
    """prefixes.is_local's answer, or None when the C parse leaves it to Python (for the tests)."""
    cdef unsigned char b[16]
    cdef int version = parse_text(ip, b)
    return None if version < 0 else local_bytes(version, b)


def fixed_never(ip):
    """Whether allow._NEVER holds `ip`, or None when the C parse leaves it to Python (the tests)."""
    cdef unsigned char b[16]
    cdef int version = parse_text(ip, b)
    return None if version < 0 else _fixed_never(version, b)


cdef double LOW = 0.2, HIGH = 0.8, CRITICAL = 1.0  # slipsq.records's threat levels
cdef enum:
    MAX_OWN = 32  # own addresses the intake tests in C (a gateway has a handful; more: allow.listed)


cdef class Intake:
    """One call per closed flow: ignore rules, tuple update, anything new to score (beacon.Intake).

    `local`, when it is prefixes.is_local, is answered in C (_prefixes.text_local: a small cache
    shared by the compiled detectors, then a C parse; what that cannot read goes to is_local).
    `never` is the twin's memo of the same name, a dict here, bounded the same way."""

    cdef readonly Tuples tuples
    cdef long min_n, full_n
    cdef object window  # a Python float: `last // window` as Python computes it
    cdef object own, local, protected, listed, allow
    cdef bint unlisted_v4, unlisted_v6  # the allow list has no range of that version, its own addresses are below
    cdef int n_own4, n_own6  # the allow list's own addresses (-1: more than MAX_OWN, or not an AllowList's)
    cdef uint32_t own4[MAX_OWN]
    cdef unsigned char own6[MAX_OWN][16]
    cdef bint fast_local  # `local` is prefixes.is_local: asked in C (_prefixes.text_local)
    cdef dict never
    cdef public object score  # the detector's scoring (Beacon._score), for on_flow
    cdef public object post  # the detector's check-in counting (Beacon._post), for on_app
    cdef readonly object speaks_first  # connection -> its server's banner service (the twin's)

    def __init__(self, Tuples tuples, long min_n, long full_n, double window, own, local, allow):
        self.tuples, self.min_n, self.full_n, self.window = tuples, min_n, full_n, float(window)
        self.own, self.local = own, local
        self.protected, self.listed, self.allow = allow.why_protected, allow.listed, allow
        # an AllowList's own addresses and networks are fixed when it is made (its docstring): read
        # once; any other allow object is only asked
        fixed = type(allow) is AllowList
        versions = {n.version for n in allow.networks} if fixed else {4, 6}
        self.unlisted_v4, self.unlisted_v6 = 4 not in versions, 6 not in versions
        self._read_own(allow.own if fixed else None)
        # another `local` (a test's) is only called: _local answers prefixes.is_local's question
        self.fast_local = local is is_local
        self.never = {}
        self.score = self.post = None
        self.speaks_first = new_lru()

    cdef bint _local(self, object ip) except -1:
        if not self.fast_local:
            return self.local(ip)
        return text_local(ip)

    cdef bint _never(self, object dst) except -1:
        """The twin's `allow.why_protected(dst) is not None or dst.endswith(".255")`, memoised: the
        allow list's fixed ranges in C, and only the rest (own, protected, listed) asked of it."""
        cdef PyObject* found = PyDict_GetItem(self.never, dst)
        cdef unsigned char b[16]
        cdef int version, listed
        if found != NULL:
            return <object>found
        version = parse_text(dst, b)
        if version < 0:
            value = self.protected(dst) is not None
        elif _fixed_never(version, b):
            value = True
        else:
            listed = self._listed_c(version, b)  # own, or nothing protected or allowed: no Python call
            if listed >= 0:
                value = listed == 1
            else:
                number = PyLong_FromUnsignedLong(v4_of(b)) if version == 4 else int.from_bytes(b[:16], "big")
                value = self.listed(version, number) is not None
        value = value or _ends_255(dst)
        if PyDict_Size(self.never) >= MEMO_SIZE:  # as Memo.__missing__
            PyDict_Clear(self.never)
        PyDict_SetItem(self.never, dst, value)
        return value

    cdef int _read_own(self, object own) except -1:
        """An AllowList's own addresses (ipaddress objects, fixed when it is made) into the C arrays;
        n_own4 = n_own6 = -1 (allow.listed is asked) for another allow object (None) or more than
        MAX_OWN."""
        self.n_own4 = self.n_own6 = -1
        if own is None or len(own) > MAX_OWN:
            return 0
        cdef int n4 = 0, n6 = 0
        cdef bytes packed
        for a in own:
            packed = a.packed
            if len(packed) == 4:
                self.own4[n4] = <uint32_t>v4_of(<const unsigned char*><const char*>packed)
                n4 += 1
            else:
                memcpy(self.own6[n6], <const char*>packed, 16)
                n6 += 1
        self.n_own4, self.n_own6 = n4, n6
        return 0

    cdef int _listed_c(self, int version, const unsigned char* b) except -2:
        """allow.listed(version, b) answered in C when it can be: 1 (one of the gateway's own), 0
        (not listed: no allow-list range of that version, fixed when the list is made, and nothing
        protected, which set_protected replaces, so it is read each time), -1 (ask allow.listed:
        another allow object, ranges of that version, or something protected)."""
        cdef int i
        cdef uint32_t n
        if not (self.unlisted_v4 if version == 4 else self.unlisted_v6) or self.n_own4 < 0:
            return -1
        if version == 4:
            n = <uint32_t>v4_of(b)
            for i in range(self.n_own4):
                if self.own4[i] == n:
                    return 1
        else:
            for i in range(self.n_own6):
                if memcmp(self.own6[i], b, 16) == 0:
                    return 1
        return -1 if self.allow.protected else 0  # replaced by set_protected: read each time

    cdef bint _ignored(self, f, bint direct, object proto, object dport, object dst) except -1:
        if proto == "udp" and (_ignored_udp_port(dport) or flow_field(&SLOTS, f, direct, F_SPORT, NAMES) == 123):
            return True
        if proto == "tcp":
            if not flow_opened(&SLOTS, f, NAMES, _HELD, _HELD_BY_STATE):
                return True
            if self.speaks_first and flow_client_silent(&SLOTS, f, NAMES, _HELD, _HELD_BY_STATE):
                key = (flow_field(&SLOTS, f, direct, F_SADDR, NAMES), flow_field(&SLOTS, f, direct, F_SPORT, NAMES),
                       dst, dport)
                if self.speaks_first.pop(key, None):
                    return True  # a port check that took this connection's banner (beacon.Intake.ignored)
        if self._local(dst) and (_dns_port(dport) or not self._local(flow_field(&SLOTS, f, direct, F_SADDR, NAMES))):
            return True
        if _dns_port(dport) and dst in self.own:
            return True
        return self._never(dst)

    def ignored(self, f):
        """The twin's `ignored` (for the differential tests)."""
        return self._ignored(f, False, f.proto, f.dport, f.daddr)

    def add(self, f):
        return self._add(f)

    def on_app(self, event):
        """The detector's app hook, handed to the engine (beacon.Intake.on_app): a banner of a server
        that speaks first remembered for its connection, an HTTP POST to `post`, nothing else."""
        data = event_field(&EV, event, E_DATA)
        if event_field(&EV, event, E_KIND) == "banner":
            service = lru_get(data, "service", None)
            if service in SPEAKS_FIRST:
                key = (event_field(&EV, event, E_DADDR), event_field(&EV, event, E_DPORT),
                       event_field(&EV, event, E_SADDR), event_field(&EV, event, E_SPORT))
                untrack_key(key)  # kept when new: out of the cycle collector now (slipsq/_gckeys.pxd)
                lru_put(self.speaks_first, key, service, MAX_SPEAKS_FIRST)
            return NO_EVIDENCE
        if lru_get(data, "method", None) != "POST":
            return NO_EVIDENCE
        return self.post(event)

    def on_flow(self, f):
        """The detector's hook, handed to the engine (beacon.Intake.on_flow): `add`, and the
        detector's scoring only for a tuple it lets through."""
        t = self._add(f)
        return NO_EVIDENCE if t is None else self.score(t, f)

    cdef object _add(self, f):
        cdef bint direct = flow_direct(&SLOTS, f)  # a Flow: its fields read from their slots
        proto = flow_field(&SLOTS, f, direct, F_PROTO, NAMES)
        # closed_by == "active" is Flow.is_report, read without calling the property
        if flow_field(&SLOTS, f, direct, F_CLOSED_BY, NAMES) == "active" or not (proto == "tcp" or proto == "udp"):
            return None
        dport = flow_field(&SLOTS, f, direct, F_DPORT, NAMES)
        dst = flow_field(&SLOTS, f, direct, F_DADDR, NAMES)
        if self._ignored(f, direct, proto, dport, dst):
            return None
        cdef Tuple t = self.tuples._add(flow_field(&SLOTS, f, direct, F_SADDR, NAMES), dst, dport, proto,
                                        flow_field(&SLOTS, f, direct, F_START, NAMES),
                                        flow_field(&SLOTS, f, direct, F_SBYTES, NAMES)
                                        + flow_field(&SLOTS, f, direct, F_DBYTES, NAMES))
        cdef Py_ssize_t n = t.n
        if n < self.min_n:
            return None
        if t.emitted_n and int(<object>t.last // self.window) == t.emitted_window:
            if t.emitted_threat == LOW:
                return None
            if (CRITICAL if n >= self.full_n else HIGH) == t.emitted_threat and t.total < 1.5 * t.emitted_n:
                return None
        return t

