# cython: language_level=3
"""The port scan detector's per-flow counting, compiled: the twin of `portscan.Tally` and
`portscan._Targets` (read those for the rules; slipsq.twins chooses). Every flow the detector sees
is counted twice (horizontally and vertically), so this is its hot path; the judging of a count that
may make new evidence (rare) stays in portscan.py.

The same maps as the twin (Python dicts keyed by the same tuples), with the bounds checked in the
same order, so both return the same tallies for the same calls (tests/test_portscan_compiled.py).
Data only: no I/O, no clock.
"""

from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject

cdef enum:
    HORIZONTAL = 0
    VERTICAL = 1
    ICMP_SWEEP = 2


cdef class Targets:
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
        cdef PyObject* found = PyDict_GetItem(seen, key)
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
            found_t = PyDict_GetItem(t.more, target)
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
