# cython: language_level=3
"""What every DNS answer costs three detectors, compiled: the twins of `dga.Intake`,
`unknownport.DnsIntake` and `dnstunnel.Intake` (read those for the rules; slipsq.twins chooses). The
flow table hands up a DNS answer for most connections (65,816 of them in a 200k-flow bench capture,
half as many as there are flows), and nearly all of them only refresh a timestamp: the resolver a
client uses (DGA), the clients that used DNS (unknown port), or carry a name too short to hide data
in (DNS tunnel). Here that is a few C dict lookups on the event's slots, and a refresh that is due
is lru.put's steps on the detector's own OrderedDict called from C (_lru); Python runs only for a
counted site that resolved after all, an NXDOMAIN answer, and a long name of a tunnel's record type
(the detectors' judging). Data only: no I/O, no clock.
"""

from slipsq._flowslots cimport (E_DADDR, E_DATA, E_KIND, E_SADDR, E_SPORT, E_TS, EventSlots, event_field,
                                event_slots)
from slipsq._lru cimport get as _get
from slipsq._lru cimport put as _lru_put
from slipsq._gckeys cimport untrack_key
from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.dga import _MAX_RESOLVERS, NXDOMAIN
from slipsq.detect.dnstunnel import DATA_TYPES as _DATA_TYPES, MIN_CHARS as _MIN_CHARS
from slipsq.detect.unknownport import _MAX_CLIENTS
from slipsq.flow import AppEvent

cdef object _NO_EVIDENCE = NO_EVIDENCE
cdef object DATA_TYPES = _DATA_TYPES
cdef Py_ssize_t MIN_LEN = _MIN_CHARS + 4

# AppEvent's fields, read from their slots when the event is an AppEvent itself (getattr otherwise)
cdef EventSlots EV
event_slots(&EV, AppEvent)


cdef class DgaIntake:
    """dga.Intake: one call per app event."""

    cdef readonly object resolvers, sites, resolved, nxdomain

    def __init__(self, resolvers, sites, resolved, nxdomain):
        self.resolvers, self.sites, self.resolved, self.nxdomain = resolvers, sites, resolved, nxdomain

    def on_app(self, event):
        if event_field(&EV, event, E_KIND) != "dns" or event_field(&EV, event, E_SPORT) != 53:
            return _NO_EVIDENCE
        data = event_field(&EV, event, E_DATA)
        rcode = _get(data, "rcode", None)
        if rcode == 0:
            if _get(data, "answers", None):
                client = event_field(&EV, event, E_DADDR)
                key = (client, event_field(&EV, event, E_SADDR))
                last = _get(self.resolvers, key, None)
                ts = event_field(&EV, event, E_TS)
                if last is None or ts > last + 300.0:
                    if last is None:
                        untrack_key(key)  # kept: out of the cycle collector now (slipsq/_gckeys.pxd)
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
        if event_field(&EV, event, E_KIND) == "dns" and self.need_dns:
            client = event_field(&EV, event, E_DADDR)
            last = _get(self.clients, client, None)
            ts = event_field(&EV, event, E_TS)
            if last is None or ts > last + 60.0:
                _lru_put(self.clients, client, ts, _MAX_CLIENTS)
        return _NO_EVIDENCE


cdef class TunnelIntake:
    """dnstunnel.Intake: one call per app event."""

    cdef readonly object named

    def __init__(self, named):
        self.named = named

    def on_app(self, event):
        if event_field(&EV, event, E_KIND) != "dns" or event_field(&EV, event, E_SPORT) != 53:
            return _NO_EVIDENCE
        data = event_field(&EV, event, E_DATA)
        query = _get(data, "query", None)
        if type(query) is not str or len(<str>query) < MIN_LEN:
            return _NO_EVIDENCE
        if _get(data, "qtype", None) not in DATA_TYPES:
            return _NO_EVIDENCE
        return self.named(event, query)
