# cython: language_level=3
"""The brute force detector's per-flow and per-event path and state, compiled: the twin of
`bruteforce.Intake` and `bruteforce._Count` (read them for the rules; slipsq.twins chooses). Every
flow and every app event the detector sees comes through here: the report, protocol, login-service
and answered tests, the per-window counts and the banners run in C, so Python runs only to judge a
count that reached min_attempts (bruteforce.BruteForce._judge).

The same maps as the twin (a dict of counts per window, the banners' bounded map from slipsq.lru.new
changed through lru's steps so its order is the twin's) and the counts' times and numbers kept as Python objects
(the same arithmetic, the same types in the evidence). tests/test_detect_compiled.py holds both
equal. Data only: no I/O, no clock.
"""

from dataclasses import fields

import sys
from slipsq.lru import new as new_lru

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_SetItem, PyDict_Size
from cpython.ref cimport PyObject
from cpython.set cimport PySet_Contains
from slipsq._gckeys cimport untrack_key
from slipsq._flowslots cimport (E_DATA, E_KIND, E_SADDR, E_SPORT, F_CLOSED_BY, F_DADDR, F_DPORT,
                                F_END, F_PROTO, F_SADDR, F_START, EventSlots, FlowSlots, event_field, event_slots,
                                flow_direct, flow_field, flow_slots)
from slipsq._lru cimport get as lru_get
from slipsq._lru cimport put as lru_put
from slipsq.detect._states cimport flow_exchanged

from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.bruteforce import LOGIN_SERVICES
from slipsq.detect.tcpstate import _HELD_BY_STATE
from slipsq.flow import AppEvent, Flow

cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)
cdef EventSlots EV
event_slots(&EV, AppEvent)


cdef inline object _f(object flow, int k):
    """flow.<NAMES[k]>, from its slot when it is a Flow (slipsq/_flowslots.pxd)."""
    return flow_field(&SLOTS, flow, flow_direct(&SLOTS, flow), k, NAMES)


cdef object _HELD = _HELD_BY_STATE.__self__  # the memo behind tcpstate.exchanged's state lookup
cdef object _LOGIN_SERVICES = LOGIN_SERVICES
cdef object _NO_EVIDENCE = NO_EVIDENCE
cdef object _MINUS_INF = float("-inf")


cdef inline bint _exchanged(object flow) except -1:
    """tcpstate.exchanged(flow) (detect/_states.pxd)."""
    return flow_exchanged(&SLOTS, flow, NAMES, _HELD, _HELD_BY_STATE)


@cython.no_gc  # holds numbers only: never in a reference cycle
cdef class Count:
    """One (source, server, port) of a window (bruteforce._Count)."""

    # (short and long are C keywords: Cython 3.0 wrote them into the C as they are, and gcc stopped)
    cdef public object first, last, short "short_", long "long_", emitted, emitted_threat, run, run_last, longest

    def __init__(self, first):
        self.first = first
        self.last = 0.0
        self.short = self.long = self.emitted = self.run = self.longest = 0
        self.emitted_threat = 0.0
        self.run_last = _MINUS_INF


cdef class Intake:
    """One call per flow (on_flow) and per app event (on_app): bruteforce.Intake."""

    cdef readonly dict ports, counts  # port -> login service; this window's counts
    cdef readonly object banners, index, window, min_n, max_dur, max_gap, judge
    cdef readonly Py_ssize_t max_keys, max_banners

    def __init__(self, dict ports, window, min_n, max_dur, max_keys, max_banners, judge, max_gap=float("inf")):
        self.ports, self.window, self.min_n, self.max_dur, self.judge = ports, window, min_n, max_dur, judge
        self.max_gap = max_gap
        # a bound past any size a map can reach: clamp it to fit
        self.max_keys, self.max_banners = min(max_keys, sys.maxsize), min(max_banners, sys.maxsize)
        self.banners = new_lru()
        self.counts = {}
        self.index = -1

    cdef object _service(self, object server, object port):
        said = lru_get(self.banners, (server, port), None)  # (a service name: never None)
        if said is not None:
            return said if PySet_Contains(_LOGIN_SERVICES, said) == 1 else None
        cdef PyObject* known = PyDict_GetItemWithError(self.ports, port)
        return None if known == NULL else <object>known

    def service(self, server, port):
        return self._service(server, port)

    def on_flow(self, flow):
        # flow.closed_by == "active" is Flow.is_report, read without calling the property
        if _f(flow, F_CLOSED_BY) == "active" or _f(flow, F_PROTO) != "tcp":
            return _NO_EVIDENCE
        saddr, daddr, dport = _f(flow, F_SADDR), _f(flow, F_DADDR), _f(flow, F_DPORT)
        service = self._service(daddr, dport)
        if service is None or not _exchanged(flow):
            return _NO_EVIDENCE
        start = _f(flow, F_START)
        index = int(start // self.window)
        if index > self.index:
            self.index, self.counts = index, {}
        key = (saddr, daddr, dport)
        cdef PyObject* found = PyDict_GetItemWithError(self.counts, key)
        cdef Count c
        if found == NULL:
            if PyDict_Size(self.counts) >= self.max_keys:
                return _NO_EVIDENCE
            c = Count(start)
            untrack_key(key)  # kept: out of the cycle collector now (slipsq/_gckeys.pxd)
            PyDict_SetItem(self.counts, key, c)
        else:
            c = <Count>found
        if start > c.last:  # max(c.last, start)
            c.last = start
        dur = _f(flow, F_END) - start  # Flow.dur: max(0.0, end - start)
        if not dur > 0.0:
            dur = 0.0
        if dur <= self.max_dur:
            c.short += 1
        else:
            c.long += 1
            return _NO_EVIDENCE
        if start - c.run_last > self.max_gap:  # a pause: a new run
            c.run = 1
        else:
            c.run += 1
        if start > c.run_last:  # max(c.run_last, start)
            c.run_last = start
        if c.run > c.longest:
            c.longest = c.run
        if c.short < self.min_n:
            return _NO_EVIDENCE
        return self.judge(service, key, c, flow)

    def on_app(self, event):
        # the event's fields from its slots (an AppEvent), its data's service in C: one call a banner,
        # and most (every TLS ClientHello's) keep nothing; a banner names only the end that sent it
        # (the twin says why)
        if event_field(&EV, event, E_KIND) != "banner":
            return _NO_EVIDENCE
        service = lru_get(event_field(&EV, event, E_DATA), "service", "")
        sport = event_field(&EV, event, E_SPORT)
        if PySet_Contains(_LOGIN_SERVICES, service) == 1 or sport in self.ports:
            lru_put(self.banners, (event_field(&EV, event, E_SADDR), sport), service, self.max_banners)
        return _NO_EVIDENCE
