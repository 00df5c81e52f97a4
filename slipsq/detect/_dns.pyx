# cython: language_level=3
"""What every DNS answer costs two detectors, compiled: the twins of `dga.Intake` and
`unknownport.DnsIntake` (read those for the rules; slipsq.twins chooses). The flow table hands up a
DNS answer for most connections (65,816 of them in a 200k-flow bench capture, half as many as there
are flows), and nearly all of them only refresh a timestamp: the resolver a client uses (DGA), the
clients that used DNS (unknown port). Here that is a few C dict lookups on the event's slots, and a
refresh that is due is lru.put's steps on the detector's own OrderedDict called from C; Python runs
only for a counted site that resolved after all, and an NXDOMAIN answer (the detector's judging).
Data only: no I/O, no clock.
"""

from dataclasses import fields

from collections import OrderedDict

from cpython.dict cimport PyDict_Contains, PyDict_GetItemWithError
from cpython.object cimport Py_TYPE
from cpython.ref cimport PyObject

from slipsq._flowslots cimport (E_DADDR, E_DATA, E_KIND, E_SADDR, E_SPORT, E_TS, NEVENT_FIELDS, event_slots,
                                slot_field)
from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.dga import _MAX_RESOLVERS, NXDOMAIN
from slipsq.detect.unknownport import _MAX_CLIENTS
from slipsq.flow import AppEvent
from slipsq.lru import put

cdef object _NO_EVIDENCE = NO_EVIDENCE
cdef object _put = put
cdef object _ODict = OrderedDict
cdef object _move_to_end = OrderedDict.move_to_end
cdef object _popitem = OrderedDict.popitem
cdef object _AppEvent = AppEvent

# AppEvent's fields, read from their slots when the event is an AppEvent itself (getattr otherwise)
cdef tuple EV_NAMES = tuple(f.name for f in fields(AppEvent))
cdef Py_ssize_t EV_OFF[NEVENT_FIELDS]
event_slots(AppEvent, EV_NAMES, EV_OFF)


cdef inline object _ev(object event, int k):
    """event.<EV_NAMES[k]>."""
    return slot_field(EV_OFF, event, <PyObject*>Py_TYPE(event) == <PyObject*>_AppEvent, k, EV_NAMES)


cdef inline object _get(object d, object key):
    """d.get(key) in C for a dict or an OrderedDict (dict's own get, which OrderedDict keeps); a
    method call for anything else."""
    cdef PyObject* v
    if type(d) is dict or type(d) is _ODict:
        v = PyDict_GetItemWithError(d, key)
        return None if v == NULL else <object>v
    return d.get(key)


cdef int _lru_put(object d, object key, object value, Py_ssize_t bound) except -1:
    """lru.put(d, key, value, bound) for an OrderedDict, its own methods called from C (a refresh
    that is due: most answers of a capture with many clients); lru.put itself for anything else."""
    if type(d) is not _ODict:
        _put(d, key, value, bound)
        return 0
    if PyDict_Contains(d, key):
        _move_to_end(d, key)
    elif len(d) >= bound:
        _popitem(d, False)
    d[key] = value  # OrderedDict's own setitem: it keeps the order
    return 0


cdef class DgaIntake:
    """dga.Intake: one call per app event."""

    cdef readonly object resolvers, sites, resolved, nxdomain

    def __init__(self, resolvers, sites, resolved, nxdomain):
        self.resolvers, self.sites, self.resolved, self.nxdomain = resolvers, sites, resolved, nxdomain

    def on_app(self, event):
        if _ev(event, E_KIND) != "dns" or _ev(event, E_SPORT) != 53:
            return _NO_EVIDENCE
        data = _ev(event, E_DATA)
        rcode = _get(data, "rcode")
        if rcode == 0:
            if _get(data, "answers"):
                client = _ev(event, E_DADDR)
                key = (client, _ev(event, E_SADDR))
                last = _get(self.resolvers, key)
                ts = _ev(event, E_TS)
                if last is None or ts > last + 300.0:
                    _lru_put(self.resolvers, key, ts, _MAX_RESOLVERS)
                if client in self.sites:
                    self.resolved(client, data.get("query", ""))
            return _NO_EVIDENCE
        if rcode != NXDOMAIN:
            return _NO_EVIDENCE
        return self.nxdomain(event)


cdef class ClientsIntake:
    """unknownport.DnsIntake: one call per app event."""

    cdef readonly object clients
    cdef readonly bint need_dns

    def __init__(self, clients, bint need_dns):
        self.clients, self.need_dns = clients, need_dns

    def on_app(self, event):
        if _ev(event, E_KIND) == "dns" and self.need_dns:
            client = _ev(event, E_DADDR)
            last = _get(self.clients, client)
            ts = _ev(event, E_TS)
            if last is None or ts > last + 60.0:
                _lru_put(self.clients, client, ts, _MAX_CLIENTS)
        return _NO_EVIDENCE
