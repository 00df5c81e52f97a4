# cython: language_level=3
"""The exfiltration detector's per-flow path and state, compiled: the twin of `exfil.Intake` and
`exfil._Pair` (read them for the rules; slipsq.twins chooses). Every flow the detector sees comes
through `Intake.on_flow`: most carry under 16 kB and are answered by the first test; the rest update
the open connections' reports and the pair's sums here, so Python runs only to judge a pair whose
upload passed the bar and the ratio (exfil.Exfil._judge).

The same maps as the twin (bounded maps from slipsq.lru.new, keyed by the same tuples, changed
through lru's steps so their order is the twin's), the sums kept as Python numbers (the same arithmetic, the
same types in the evidence), and "is it local" asked in C (_prefixes.text_local, the cache the
compiled detectors share). tests/test_detect_compiled.py holds both
equal. Data only: no I/O, no clock.
"""

from dataclasses import fields

import sys
from slipsq.lru import new as new_lru

cimport cython
from cpython.dict cimport PyDict_GetItemWithError, PyDict_Size
from cpython.ref cimport PyObject

from slipsq._gckeys cimport untrack_key
from slipsq._flowslots cimport (E_DADDR, E_DATA, E_DPORT, E_KIND, E_SADDR, E_SPORT, F_CLOSED_BY, F_DADDR, F_DBYTES,
                                F_DPKTS, F_DPORT, F_END, F_PROTO, F_SADDR, F_SBYTES, F_SPORT, F_START, EventSlots,
                                FlowSlots, event_field, event_slots, flow_direct, flow_field, flow_slots)
from slipsq._lru cimport get as lru_get
from slipsq._lru cimport put, put_known
from slipsq.detect._prefixes cimport text_local
from slipsq.detect._states cimport flow_denied
from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.exfil import _MAX_OPEN, _MIN_FLOW_BYTES, APP_PROTOCOLS, TUNNELS
from slipsq.detect.tcpstate import _HELD_BY_STATE
from slipsq.detect.prefixes import is_local
from slipsq.flow import AppEvent, Flow

cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)


cdef inline object _f(object flow, int k):
    """flow.<NAMES[k]>, from its slot when it is a Flow (slipsq/_flowslots.pxd)."""
    return flow_field(&SLOTS, flow, flow_direct(&SLOTS, flow), k, NAMES)


cdef object _NO_EVIDENCE = NO_EVIDENCE
cdef object _HELD = _HELD_BY_STATE.__self__  # the memo behind tcpstate.denied's state lookup
cdef object _MIN_BYTES = _MIN_FLOW_BYTES
cdef dict _APP_PROTOCOLS = APP_PROTOCOLS
cdef dict _TUNNELS = TUNNELS
cdef Py_ssize_t MAX_OPEN = _MAX_OPEN
cdef EventSlots EV
event_slots(&EV, AppEvent)


@cython.no_gc  # holds numbers only: never in a reference cycle (one per pair: the collector need not walk them)
cdef class Pair:
    """One (client, server) pair's sums in its judge window (exfil._Pair)."""

    cdef public object index, up, down, emitted, emitted_threat, first, last, tunnel

    def __init__(self, tunnel=None):
        self.tunnel = tunnel
        self.index = -1
        self.up = self.down = self.emitted = 0
        self.emitted_threat = 0.0
        self.first = self.last = 0.0


cdef class Intake:
    """One call per flow: the early tests, the reports and the pair's sums (exfil.Intake)."""

    cdef readonly object window, bar, ratio, local, judge, pairs, open, tls_names, tunnels
    cdef readonly Py_ssize_t max_pairs, max_tls_names
    cdef bint fast_local  # `local` is prefixes.is_local: asked in C (_prefixes.text_local)
    cdef object _open_pop  # bound once

    def __init__(self, window, bar, ratio, max_pairs, local, judge, max_tls_names=65_536):
        self.window, self.bar, self.ratio = window, bar, ratio
        self.max_pairs = min(max_pairs, sys.maxsize)  # a bound past any size a map can reach: clamp it
        self.max_tls_names = min(max_tls_names, sys.maxsize)
        self.local, self.judge = local, judge
        self.fast_local = local is is_local
        self.pairs, self.open, self.tls_names, self.tunnels = new_lru(), new_lru(), new_lru(), new_lru()
        self._open_pop = self.open.pop

    cdef inline bint _local(self, object ip) except -1:
        if not self.fast_local:
            return bool(self.local(ip))
        return text_local(ip)

    def on_app(self, event):
        kind = event_field(&EV, event, E_KIND)
        if kind == "tls":
            data = event_field(&EV, event, E_DATA)
            name = lru_get(data, "sni", None)  # in C: one call a ClientHello
            if not (isinstance(name, str) and name):
                name = lru_get(data, "alpn", None)  # a hello that named no server: its protocol (exfil.Intake)
                if not (isinstance(name, str) and name in _APP_PROTOCOLS):
                    return _NO_EVIDENCE
        elif kind == "tunnel":
            name = lru_get(event_field(&EV, event, E_DATA), "protocol", None)  # a VPN client's first bytes
            if isinstance(name, str) and name in _TUNNELS:  # that connection's (exfil.Intake)
                key = (event_field(&EV, event, E_SADDR), event_field(&EV, event, E_SPORT),
                       event_field(&EV, event, E_DADDR), event_field(&EV, event, E_DPORT))
                untrack_key(key)  # kept when new: out of the cycle collector now (slipsq/_gckeys.pxd)
                put(self.tunnels, key, name, self.max_tls_names)
            return _NO_EVIDENCE
        else:
            return _NO_EVIDENCE
        key = (event_field(&EV, event, E_SADDR), event_field(&EV, event, E_DADDR))
        untrack_key(key)  # kept when new: out of the cycle collector now (slipsq/_gckeys.pxd)
        put(self.tls_names, key, name, self.max_tls_names)
        return _NO_EVIDENCE

    def on_flow(self, flow):
        up, down = _f(flow, F_SBYTES), _f(flow, F_DBYTES)
        if up + down < _MIN_BYTES or _f(flow, F_DPKTS) == 0 or _f(flow, F_PROTO) != "tcp":
            return _NO_EVIDENCE
        if flow_denied(&SLOTS, flow, NAMES, _HELD, _HELD_BY_STATE):
            return _NO_EVIDENCE
        sport, dport = _f(flow, F_SPORT), _f(flow, F_DPORT)
        if sport < 1024 <= dport:  # a server's port as the source: seen backwards
            return _NO_EVIDENCE
        src, dst = _f(flow, F_SADDR), _f(flow, F_DADDR)
        if _f(flow, F_CLOSED_BY) == "active":  # Flow.is_report: count what is new since its last report
            fkey = (src, sport, dst, dport)
            seen = lru_get(self.open, fkey, None)
            put_known(self.open, fkey, (up, down), seen is not None, MAX_OPEN)  # a value is never None
            if seen is not None:
                up, down = up - seen[0], down - seen[1]
        elif len(self.open):  # it closed: its reports counted part of it already
            seen = self._open_pop((src, sport, dst, dport), None)
            if seen is not None:
                up, down = up - seen[0], down - seen[1]
        tunnel = None
        if len(self.tunnels):
            conn = (src, sport, dst, dport)
            tunnel = lru_get(self.tunnels, conn, None)
            if tunnel is not None and _f(flow, F_CLOSED_BY) in ("fin", "rst"):  # ended: free (exfil.Intake)
                del self.tunnels[conn]
        key = (src, dst) if tunnel is None else (src, dst, tunnel)  # a tunnel's bytes: a pair of their own
        found = lru_get(self.pairs, key, None)  # (a Pair: never None)
        cdef Pair pair
        if found is None:
            if self._local(dst):
                return _NO_EVIDENCE
            pair = Pair(tunnel)  # lru.touch(pairs, key, _Pair, max_pairs) of a key that is not there
            untrack_key(key)  # kept: out of the cycle collector now (slipsq/_gckeys.pxd)
            put_known(self.pairs, key, pair, False, self.max_pairs)
        else:
            pair = <Pair>found
        end = _f(flow, F_END)
        index = int(end // self.window)  # the bytes arrived by its end (a report: since the last one)
        if index > pair.index:
            pair.index, pair.up, pair.down, pair.emitted, pair.emitted_threat = index, 0, 0, 0, 0.0
            pair.first = _f(flow, F_START)
        pair.up += up
        pair.down += down
        if end > pair.last:
            pair.last = end
        if pair.up < self.bar or pair.up < self.ratio * pair.down:
            return _NO_EVIDENCE
        return self.judge(src, dst, pair, flow)
