# cython: language_level=3
"""The port scan detector's per-flow path, compiled: the twins of `portscan.Counts` (the one call
per flow: window index, unanswered test, servers-in-use note, counting), `portscan.Tally` and
`portscan._Targets` (the window's counts), and `inuse.ServersInUse` (the servers local hosts use,
shared with the reconnect detector). Read the twins for the rules; slipsq.twins chooses. Every flow
the detector sees goes through here, most answered by None without a line of Python; the judging of
a count that reached its threshold (rare) stays in portscan.py.

The same maps as the twins (Python dicts keyed by the same tuples, the same OrderedDict of servers,
the same memo of states; the local test in C, detect/_prefixes.pyx), with the bounds checked in the
same order, so both return the same answers and keep the same state for the same calls
(tests/test_detect_compiled.py).
Data only: no I/O, no clock.
"""

from collections import OrderedDict
from dataclasses import fields

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem, PyDict_Size
from cpython.ref cimport PyObject
from libc.math cimport copysign, floor, fmod

from slipsq._flowslots cimport (F_CLOSED_BY, F_DADDR, F_DPORT, F_END, F_PROTO, F_SADDR, F_SPORT, F_START, FlowSlots,
                                flow_direct, flow_field, flow_slots)
from slipsq.detect._states cimport flow_unanswered
from slipsq.detect._addrtext cimport local_bytes, parse_text
from slipsq.detect._prefixes cimport text_local
from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.inuse import MAX_SERVED, REFRESH as _REFRESH
from slipsq.detect.portscan import _BY_STATE, _ECHO_REQUEST
from slipsq.detect.prefixes import is_local
from slipsq.flow import Flow

cdef double REFRESH = _REFRESH
# the memo behind portscan.unanswered's state lookup (a dict subclass): a hit is read here in C, a
# miss asks the memo, which fills it (the same memo the twins use)
cdef object _STATES = _BY_STATE.__self__
cdef dict _ECHO = _ECHO_REQUEST

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


cdef class Tally:
    """The per-flow state of one judge window (portscan.Tally)."""

    cdef public long max_keys, max_targets, max_total, total
    cdef public list seen

    def __init__(self, long max_keys, long max_targets, long max_total):
        self.max_keys, self.max_targets, self.max_total = max_keys, max_targets, max_total
        self.seen = [{}, {}, {}]
        self.total = 0

    def reset(self):
        self.seen = [{}, {}, {}]
        self.total = 0

    def pair(self, str saddr, str daddr, object dport, str proto, bint failed, double start):
        cdef object h = self._count(HORIZONTAL, (saddr, dport, proto), daddr, failed, start)
        cdef object v = self._count(VERTICAL, (saddr, daddr, proto), dport, failed, start)
        return None if h is None and v is None else (h, v)

    def count(self, int kind, tuple key, object target, bint failed, double start):
        return self._count(kind, key, target, failed, start)

    cdef object _count(self, int kind, tuple key, object target, bint failed, double start):
        cdef dict seen = <dict>self.seen[kind]
        cdef PyObject* found = PyDict_GetItemWithError(seen, key)
        cdef Targets t
        if found == NULL:
            if len(seen) >= self.max_keys:
                return None
            t = Targets.__new__(Targets)
            t.first = t.last = start
            PyDict_SetItem(seen, key, t)
        else:
            t = <Targets>found
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


cdef class Servers:
    """Non-local servers that answered a local client, and when they last did (inuse.ServersInUse):
    the same OrderedDict, least recently refreshed first. (Its fields and `_note`: _portscan.pxd.)"""

    def __init__(self, Py_ssize_t bound=MAX_SERVED):
        self.when = OrderedDict()
        self.bound = bound
        self._move_to_end, self._popitem = self.when.move_to_end, self.when.popitem

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
        cdef PyObject* last = PyDict_GetItemWithError(self.when, server)
        if last != NULL and <double>when < <double>(<object>last) + REFRESH:
            return 0  # most flows: refreshed less than REFRESH ago
        if _local(server) or not _local(_f(flow, F_SADDR)):
            return 0
        # lru.put
        if last != NULL:
            self._move_to_end(server)
        elif PyDict_Size(self.when) >= self.bound:
            self._popitem(False)
        self.when[server] = when  # through OrderedDict's own setitem: it keeps the order
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

    def __init__(self, Tally tally, servers, double window, bint note_servers, thresholds, judge):
        self.tally, self.servers, self.window, self.note_servers = tally, servers, window, note_servers
        self.judge = judge
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
            h = self.tally._count(HORIZONTAL, (saddr, dport, proto), daddr, failed, start)
            v = self.tally._count(VERTICAL, (saddr, daddr, proto), dport, failed, start)
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
            key = (_f(flow, F_SADDR), "", proto)
            found = self.tally._count(ICMP_SWEEP, key, _f(flow, F_DADDR), _unanswered(flow), start)
            if found is not None:
                t = <Targets>found
                if t.failed + t.answered >= self.th[ICMP_SWEEP]:
                    return [(ICMP_SWEEP, key, t)]
        return None
