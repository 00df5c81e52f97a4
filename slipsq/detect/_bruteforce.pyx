# cython: language_level=3
"""The brute force detector's per-flow and per-event path, compiled: the twin of
`bruteforce.Intake` (read it for the rules; slipsq.twins chooses). Every flow and every app event
the detector sees comes through here: the report, protocol, login-service and answered tests run in
C (the remembered banners and the port table are read with one dict lookup each), so only a flow to
a login service that answered goes to the detector's `count`, and only a banner to its `banner`
(bruteforce.py, Python: the per-window counts and the evidence). Data only: no I/O, no clock.
"""

from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport PyObject
from cpython.set cimport PySet_Contains

from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.bruteforce import LOGIN_SERVICES
from slipsq.detect.portscan import _BY_STATE

cdef object _STATES = _BY_STATE.__self__  # the memo behind portscan.unanswered's state lookup
cdef object _LOGIN_SERVICES = LOGIN_SERVICES
cdef object _NO_EVIDENCE = NO_EVIDENCE


cdef inline bint _unanswered(object flow) except -1:
    """portscan.unanswered(flow) (as _portscan's): a memo hit is read in C."""
    state = flow.state
    cdef PyObject* hit = PyDict_GetItemWithError(_STATES, state)
    said = _BY_STATE(state) if hit == NULL else <object>hit
    if said is None:
        return bool(flow.dpkts == 0)
    return bool(said)


cdef class Intake:
    """One call per flow (on_flow) and per app event (on_app): bruteforce.Intake."""

    cdef readonly object banners  # (server, port) -> what its banner said (an OrderedDict: read only here)
    cdef readonly dict ports  # port -> login service
    cdef readonly object count, banner

    def __init__(self, banners, dict ports, count, banner):
        self.banners, self.ports, self.count, self.banner = banners, ports, count, banner

    cdef object _service(self, object server, object port):
        cdef PyObject* said = PyDict_GetItemWithError(self.banners, (server, port))
        if said != NULL:
            return <object>said if PySet_Contains(_LOGIN_SERVICES, <object>said) == 1 else None
        cdef PyObject* known = PyDict_GetItemWithError(self.ports, port)
        return None if known == NULL else <object>known

    def service(self, server, port):
        return self._service(server, port)

    def on_flow(self, flow):
        # flow.closed_by == "active" is Flow.is_report, read without calling the property
        if flow.closed_by == "active" or flow.proto != "tcp":
            return _NO_EVIDENCE
        service = self._service(flow.daddr, flow.dport)
        if service is None or _unanswered(flow):
            return _NO_EVIDENCE
        return self.count(service, flow)

    def on_app(self, event):
        if event.kind != "banner":
            return _NO_EVIDENCE
        return self.banner(event)
