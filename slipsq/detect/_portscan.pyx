# cython: language_level=3
"""The port scan detector's per-flow path, compiled: the twins of `portscan.Counts` (the one call
per flow: window index, unanswered test, servers-in-use note, counting), `portscan.Tally` and
`portscan._Targets` (the window's counts), and `inuse.ServersInUse` (the servers local hosts use,
shared with the reconnect detector). Read the twins for the rules; slipsq.twins chooses. Every flow
the detector sees goes through here, most answered by None without a line of Python; the judging of
a count that reached its threshold (rare) stays in portscan.py.

The same state as the twins (each window's keys in a KeyMap where the twin has a dict keyed by a
(source, port or target, proto) tuple: the same keys, equal by the same rule, without the tuple;
the same bounded map of servers (slipsq.lru.new), the same memo of states; the local test in C, detect/_prefixes.pyx),
with the bounds checked in the same order, so both return the same answers and keep the same state
for the same calls (tests/test_detect_compiled.py). Data only: no I/O, no clock.
"""

from dataclasses import fields

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem, PyDict_Size
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport Py_INCREF, Py_XDECREF, PyObject
from libc.math cimport copysign, floor, fmod
from libc.stdint cimport int32_t, uint64_t
from libc.string cimport memset

cdef extern from "Python.h":
    Py_hash_t PyObject_Hash(object o) except? -1
    void PyErr_Clear()

from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact

from slipsq._carray cimport grow
from slipsq._flowslots cimport (F_CLOSED_BY, F_DADDR, F_DPORT, F_END, F_PROTO, F_SADDR, F_SPORT, F_START, FlowSlots,
                                flow_direct, flow_field, flow_slots)
from slipsq._lru cimport get as lru_get, put_known
from slipsq.detect._states cimport flow_opened, flow_unanswered
from slipsq.detect._addrtext cimport local_bytes, parse_text
from slipsq.detect._prefixes cimport text_local
from slipsq.detect.base import NO_EVIDENCE
from slipsq.lru import new as new_lru
from slipsq.detect.inuse import MAX_SERVED, REFRESH as _REFRESH
from slipsq.detect.inuse import _v6 as _py_v6
from slipsq.detect.tcpstate import _HELD_BY_STATE
from slipsq.detect.portscan import (_BY_STATE, _ECHO_REQUEST, TRACEPATH_FIRST, TRACEPATH_PORTS, TRACEROUTE_FIRST,
                                    TRACEROUTE_PORTS)
from slipsq.detect.prefixes import is_local
from slipsq.flow import Flow

cdef double REFRESH = _REFRESH
# the memo behind portscan.unanswered's state lookup (a dict subclass): a hit is read here in C, a
# miss asks the memo, which fills it (the same memo the twins use)
cdef object _STATES = _BY_STATE.__self__
cdef object _HELD = _HELD_BY_STATE.__self__  # the memo behind tcpstate.opened's state lookup
cdef dict _ECHO = _ECHO_REQUEST
cdef long long TR_FIRST = TRACEROUTE_FIRST, TR_N = TRACEROUTE_PORTS, TP_FIRST = TRACEPATH_FIRST, TP_N = TRACEPATH_PORTS


cdef inline bint _traceroute_port(object port) noexcept:
    """portscan._traceroute_port: a plain int in traceroute's or tracepath's UDP range (any other value: no)."""
    cdef int overflow = 0
    cdef long long p
    if not PyLong_CheckExact(port):
        return False
    p = PyLong_AsLongLongAndOverflow(port, &overflow)
    if overflow:
        PyErr_Clear()
        return False
    return 0 <= p - TR_FIRST < TR_N or 0 <= p - TP_FIRST < TP_N

cdef enum:
    HORIZONTAL = 0
    VERTICAL = 1
    ICMP_SWEEP = 2


@cython.no_gc  # holds targets (text, numbers) and a dict of them: never in a reference cycle, so the
cdef class Targets:  # collector need not track the one per key, nor walk them every young collection
    """One key of a window: its targets (target -> answered) and tally (portscan._Targets).

    Most keys of normal traffic (a client and one server, a client and one port) only ever get one
    target, so the first is kept inline (`one`, `one_answered`) and the dict is made for a second:
    one allocation less per new key. `targets` shows them all, as the twin's dict."""

    cdef public double first, last
    cdef dict more  # the targets after the first (None until a second target comes)
    cdef object one  # the first target
    cdef bint one_answered
    cdef public long failed, answered, emitted
    cdef public double emitted_threat

    def __init__(self, double first):
        self.first = self.last = first
        self.failed = self.answered = self.emitted = 0
        self.emitted_threat = 0.0

    @property
    def targets(self):
        out = {} if self.one is None else {self.one: self.one_answered}
        if self.more is not None:
            out.update(self.more)
        return out

    cdef Py_ssize_t size(self):
        return (self.one is not None) + (0 if self.more is None else len(self.more))


ctypedef struct KeyEntry:
    Py_hash_t hash
    PyObject* a  # the key's three parts (references held): source, port or target, proto
    PyObject* b
    PyObject* c
    PyObject* t  # its Targets (a reference held)


cdef inline Py_hash_t key_hash(object a, object b, object c) except? -1:
    """One hash of the three parts (equal parts give equal hashes, as a tuple's would)."""
    cdef uint64_t h = <uint64_t>PyObject_Hash(a)
    h = (h ^ (h >> 31)) * <uint64_t>0xFF51AFD7ED558CCDULL + <uint64_t>PyObject_Hash(b)
    h = (h ^ (h >> 31)) * <uint64_t>0xC4CEB9FE1A85EC53ULL + <uint64_t>PyObject_Hash(c)
    h ^= h >> 29
    h *= <uint64_t>0x9E3779B97F4A7C15ULL
    return <Py_hash_t>(h ^ (h >> 32))


cdef inline int same(PyObject* stored, object x) except -1:
    """stored == x, as a tuple compares its items (identity first, then ==)."""
    return stored == <PyObject*>x or PyObject_RichCompareBool(<object>stored, x, Py_EQ)


@cython.no_gc  # holds texts, numbers and Targets (themselves outside the collector): no cycle
cdef class KeyMap:
    """(a, b, c) -> Targets: one kind's keys in one window, the twin's dict keyed by a 3-tuple
    without the tuple. Entries are dense in insertion order (as a dict's) behind an open-addressing
    index of positions; a window only adds keys (a new window is a new map), so nothing is ever
    deleted. Per flow this saves the key tuple the dict needed (made, hashed, compared by loading
    it, freed at the window's end, walked by the cycle collector until it untracks it)."""

    cdef KeyEntry* entries
    cdef Py_ssize_t n, cap
    cdef int32_t* index  # slot -> position in entries, -1 empty
    cdef size_t mask  # slots - 1; 0 before the first key

    def __cinit__(self):
        self.entries, self.index = NULL, NULL
        self.n = self.cap = 0
        self.mask = 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            Py_XDECREF(self.entries[i].a)
            Py_XDECREF(self.entries[i].b)
            Py_XDECREF(self.entries[i].c)
            Py_XDECREF(self.entries[i].t)
        PyMem_Free(self.entries)
        PyMem_Free(self.index)

    def __len__(self):
        return self.n

    def items(self):
        """((a, b, c), Targets) in insertion order (for tests and tools: `Tally.seen`)."""
        cdef Py_ssize_t i
        return [((<object>self.entries[i].a, <object>self.entries[i].b, <object>self.entries[i].c),
                 <object>self.entries[i].t) for i in range(self.n)]

    cdef Py_ssize_t find(self, Py_hash_t h, object a, object b, object c) except -2:
        """The position of the key, or -1."""
        cdef size_t i
        cdef int32_t pos
        cdef KeyEntry* e
        if self.mask == 0:
            return -1
        i = <size_t>h & self.mask
        while True:
            pos = self.index[i]
            if pos < 0:
                return -1
            e = &self.entries[pos]
            if e.hash == h and same(e.a, a) and same(e.b, b) and same(e.c, c):
                return pos
            i = (i + 1) & self.mask

    cdef int add(self, Py_hash_t h, object a, object b, object c, object t) except -1:
        """A new key (find said -1) with its Targets."""
        cdef size_t i
        if self.n == self.cap:
            self.entries = <KeyEntry*>grow(self.entries, &self.cap, sizeof(KeyEntry), 8)
        if 3 * (self.n + 1) > 2 * <Py_ssize_t>(self.mask + 1) or self.mask == 0:  # at most 2/3 full
            self._reindex(16 if self.mask == 0 else 2 * (self.mask + 1))
        Py_INCREF(a)
        Py_INCREF(b)
        Py_INCREF(c)
        Py_INCREF(t)
        self.entries[self.n] = KeyEntry(h, <PyObject*>a, <PyObject*>b, <PyObject*>c, <PyObject*>t)
        i = <size_t>h & self.mask
        while self.index[i] >= 0:
            i = (i + 1) & self.mask
        self.index[i] = <int32_t>self.n
        self.n += 1
        return 0

    cdef int _reindex(self, size_t slots) except -1:
        cdef int32_t* index = <int32_t*>PyMem_Malloc(slots * sizeof(int32_t))
        cdef Py_ssize_t pos
        cdef size_t i
        if index == NULL:
            raise MemoryError()
        memset(index, 0xFF, slots * sizeof(int32_t))  # every slot -1
        for pos in range(self.n):
            i = <size_t>self.entries[pos].hash & (slots - 1)
            while index[i] >= 0:
                i = (i + 1) & (slots - 1)
            index[i] = <int32_t>pos
        PyMem_Free(self.index)
        self.index, self.mask = index, slots - 1
        return 0


cdef class Tally:
    """The per-flow state of one judge window (portscan.Tally): per kind, a KeyMap where the twin
    has a dict keyed by (source, port or target, proto)."""

    cdef public long max_keys, max_targets, max_total, total
    cdef list maps  # KeyMap by kind

    def __init__(self, long max_keys, long max_targets, long max_total):
        self.max_keys, self.max_targets, self.max_total = max_keys, max_targets, max_total
        self.reset()

    def reset(self):
        self.maps = [KeyMap(), KeyMap(), KeyMap()]
        self.total = 0

    @property
    def seen(self):
        """The twin's view: per kind, {(a, b, c): Targets} (for tests and tools)."""
        return [dict((<KeyMap>m).items()) for m in self.maps]

    def pair(self, str saddr, str daddr, object dport, str proto, bint failed, double start, bint sweep=True):
        cdef object h = self._count(HORIZONTAL, saddr, dport, proto, daddr, failed, start) if sweep else None
        cdef object v = self._count(VERTICAL, saddr, daddr, proto, dport, failed, start)
        return None if h is None and v is None else (h, v)

    def count(self, int kind, tuple key, object target, bint failed, double start):
        """The twin's count, for a key (source, port or target, proto)."""
        a, b, c = key
        return self._count(kind, a, b, c, target, failed, start)

    cdef object _count(self, int kind, object a, object b, object c, object target, bint failed, double start):
        cdef KeyMap keys = <KeyMap>self.maps[kind]
        cdef Py_hash_t h = key_hash(a, b, c)
        cdef Py_ssize_t pos = keys.find(h, a, b, c)
        cdef Targets t
        if pos < 0:
            if keys.n >= self.max_keys:
                return None
            t = Targets.__new__(Targets)
            t.first = t.last = start
            keys.add(h, a, b, c, t)
        else:
            t = <Targets>keys.entries[pos].t
            if start > t.last:
                t.last = start
        cdef int before  # -1 not a target yet, 0 failed so far, 1 answered
        cdef PyObject* found_t
        if t.one is None:
            before = -1
        elif t.one == target:
            before = t.one_answered
        elif t.more is None:
            before = -1
        else:
            found_t = PyDict_GetItemWithError(t.more, target)
            before = -1 if found_t == NULL else (1 if <object>found_t else 0)
        if before == -1:
            if t.size() >= self.max_targets or self.total >= self.max_total:
                return None
            self.total += 1
            if t.one is None:
                t.one, t.one_answered = target, not failed
            else:
                if t.more is None:
                    t.more = {}
                PyDict_SetItem(t.more, target, not failed)
            if failed:
                t.failed += 1
            else:
                t.answered += 1
                if kind != ICMP_SWEEP:  # a count of failed targets that did not grow: nothing new
                    return None
        elif before == 0 and not failed:  # answered now: no longer a failed target
            if t.one == target:
                t.one_answered = True
            else:
                PyDict_SetItem(t.more, target, True)
            t.failed -= 1
            t.answered += 1
            if kind != ICMP_SWEEP:
                return None
        else:
            return None
        return t


def local_text(str ip):
    """What the C parse answers of `ip` (for the tests that hold it equal to prefixes.local_int):
    True, False, or None for text it leaves to the slow judge."""
    cdef unsigned char b[16]
    cdef int version = parse_text(ip, b)
    return None if version < 0 else local_bytes(version, b)


cdef inline int _local(object ip) except -1:
    """prefixes.is_local(ip), in C (_prefixes.text_local, a cache shared with every compiled detector)."""
    return text_local(ip)


cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)


cdef inline object _f(object flow, int k):
    """flow.<NAMES[k]>, from its slot when it is a Flow (slipsq/_flowslots.pxd)."""
    return flow_field(&SLOTS, flow, flow_direct(&SLOTS, flow), k, NAMES)


cdef inline int _unanswered(object flow) except -1:
    """portscan.unanswered(flow) (detect/_states.pxd)."""
    return flow_unanswered(&SLOTS, flow, NAMES, _STATES, _BY_STATE)


cdef inline double _floordiv(double x, double y) noexcept:
    """Python's float x // y, step for step (CPython's _float_div_mod): floor(x / y) differs, e.g.
    1 // 0.1 is 9.0, floor(1 / 0.1) 10.0. NaN when y is 0 or x not finite (Python raises then)."""
    cdef double mod = fmod(x, y)
    cdef double div = (x - mod) / y
    cdef double fd
    if mod:
        if (y < 0) != (mod < 0):
            div -= 1.0
    if div:
        fd = floor(div)
        if div - fd > 0.5:
            fd += 1.0
        return fd
    return copysign(0.0, x / y)


cdef inline bint _v6(object text) except -1:
    """inuse._v6: an IPv6 address (an IPv4-mapped one is IPv4), parsed in C when it can be."""
    cdef unsigned char b[16]
    cdef int version = parse_text(text, b)
    if version < 0:
        return _py_v6(text)
    return version == 6


cdef class Servers:
    """Non-local servers that answered a local client, and when they last did (inuse.ServersInUse):
    the same bounded map (slipsq.lru.new), least recently refreshed first. (Its fields and `_note`: _portscan.pxd.)"""

    def __init__(self, Py_ssize_t bound=MAX_SERVED):
        self.when = new_lru()
        self.bound = bound

    def note(self, flow):
        self._note(flow)

    cdef int _note(self, object flow) except -1:
        # port scan and reconnect both note each answered TCP flow, one after the other: a second
        # note of the same flow finds what the first left (refreshed now, or not to be noted) and
        # changes nothing, so it is skipped (-1 dict lookup a flow)
        if flow is self._last:
            return 0
        self._last = flow
        server, when = _f(flow, F_DADDR), _f(flow, F_END)
        last = lru_get(self.when, server, None)  # (a time: never None)
        if last is not None and <double>when < <double>last + REFRESH:
            return 0  # most flows: refreshed less than REFRESH ago
        client = _f(flow, F_SADDR)
        if _local(server):  # inuse.ServersInUse.note
            if _local(client) or not _v6(server):  # (the cached test first: most are LAN-to-LAN)
                return 0
        elif not (_local(client) or _v6(client)):
            return 0
        if _f(flow, F_PROTO) == "tcp" and not flow_opened(&SLOTS, flow, NAMES, _HELD, _HELD_BY_STATE):
            return 0  # a SYN-ACK nobody asked for is no use of the server
        put_known(self.when, server, when, last is not None, self.bound)  # lru.put
        return 0

    def in_use(self, ip, ts, window):
        last = self.when.get(ip)
        return last is not None and last >= ts - window


cdef class Counts:
    """The detector's per-flow path and state (portscan.Counts)."""

    cdef readonly Tally tally
    cdef readonly object servers, index
    cdef Servers fast_servers  # servers, when it is the compiled table (else None: ask its note)
    cdef readonly double window
    cdef double index_fd  # index as a float (the window math is in floats; int(index_fd) == index)
    cdef readonly bint note_servers
    cdef long long th[3]  # thresholds by kind
    cdef readonly object judge
    cdef readonly object names  # ctx.dns_names: addresses a DNS answer named (portscan.Counts)

    def __init__(self, Tally tally, servers, double window, bint note_servers, thresholds, judge, names=None):
        self.tally, self.servers, self.window, self.note_servers = tally, servers, window, note_servers
        self.judge = judge
        self.names = {} if names is None else names
        self.fast_servers = servers if isinstance(servers, Servers) else None
        for k in range(3):  # a threshold past any count never reached: clamp it to fit
            self.th[k] = min(int(thresholds[k]), 1 << 62)
        self.index, self.index_fd = -1, -1.0

    @property
    def thresholds(self):
        return (self.th[0], self.th[1], self.th[2])

    def reset(self, index):
        self.index, self.index_fd = index, <double>index
        self.tally.reset()

    cdef int _note(self, object flow) except -1:
        if self.fast_servers is not None:
            return self.fast_servers._note(flow)
        self.servers.note(flow)
        return 0

    def on_flow(self, flow):
        hits = self._add(flow)
        return NO_EVIDENCE if hits is None else self.judge(hits, flow)

    def add(self, flow):
        return self._add(flow)

    cdef object _add(self, object flow):
        proto = _f(flow, F_PROTO)
        if _f(flow, F_CLOSED_BY) == "active":  # flow.is_report, read here (the property costs a Python call)
            if (proto == "tcp" or proto == "udp") and self.note_servers and not _unanswered(flow):
                self._note(flow)
            return None
        start_o = _f(flow, F_START)
        cdef double start = start_o
        cdef double fd = _floordiv(start, self.window)
        if fd - fd != 0:  # NaN or infinite: Python's arithmetic raises as the twin does
            fd = int(start_o // self.window)
        if fd > self.index_fd:  # a new window
            self.reset(int(fd))
        cdef bint failed
        cdef object h, v
        if proto == "tcp" or proto == "udp":
            failed = _unanswered(flow)
            if not failed and self.note_servers:
                self._note(flow)
            saddr, daddr, dport = _f(flow, F_SADDR), _f(flow, F_DADDR), _f(flow, F_DPORT)
            if proto == "udp" and _traceroute_port(dport):
                return None  # a traceroute probe (portscan.Counts.add)
            # named by DNS: no host-sweep target (portscan.Counts.add)
            h = None if failed and daddr in self.names else self.tally._count(HORIZONTAL, saddr, dport, proto,
                                                                                daddr, failed, start)
            v = self.tally._count(VERTICAL, saddr, daddr, proto, dport, failed, start)
            if h is not None and (<Targets>h).failed < self.th[HORIZONTAL]:
                h = None
            if v is not None and (<Targets>v).failed < self.th[VERTICAL]:
                v = None
            if h is None and v is None:
                return None
            hits = []
            if h is not None:
                hits.append((HORIZONTAL, (saddr, dport, proto), h))
            if v is not None:
                hits.append((VERTICAL, (saddr, daddr, proto), v))
            return hits
        cdef Targets t
        if _ECHO.get(proto) == _f(flow, F_SPORT):
            saddr = _f(flow, F_SADDR)
            found = self.tally._count(ICMP_SWEEP, saddr, "", proto, _f(flow, F_DADDR), _unanswered(flow), start)
            if found is not None:
                t = <Targets>found
                if t.failed + t.answered >= self.th[ICMP_SWEEP]:
                    return [(ICMP_SWEEP, (saddr, "", proto), t)]
        return None
