# cython: language_level=3
"""The reconnection-storm detector's per-flow path, compiled: the twin of `reconnect.Intake` (read
it for the rules; slipsq.twins chooses). Every TCP flow the engine closes comes through
`Intake.on_flow`: the answered test (packets back averaging over 60 bytes, else portscan.unanswered
through its state memo, detect/_states.pxd), the note of an answered flow's server in the compiled
servers-in-use table (`_portscan.Servers._note`, a C call: no Python frame), the report, DNS port
and inbound tests (an address's "is it local" asked in C: detect/_prefixes.pyx) run here; only a failed outbound attempt goes to the detector's `count`
(reconnect.Reconnect._count, Python: the storms map and the evidence). Data only: no I/O, no clock.
"""

from dataclasses import fields

from cpython.long cimport PyLong_AsLongAndOverflow, PyLong_CheckExact
from libc.limits cimport LONG_MAX
from cpython.set cimport PySet_Contains

from slipsq._flowslots cimport (F_CLOSED_BY, F_DADDR, F_DBYTES, F_DPKTS, F_DPORT, F_PROTO, F_SADDR, FlowSlots,
                                flow_direct, flow_field, flow_slots)
from slipsq.detect._prefixes cimport text_local
from slipsq.detect._portscan cimport Servers
from slipsq.detect._states cimport flow_unanswered

from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.portscan import _BY_STATE
from slipsq.detect.prefixes import is_local
from slipsq.detect.reconnect import _SKIPPED_PORTS
from slipsq.flow import Flow

cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)

cdef object _STATES = _BY_STATE.__self__  # the memo behind portscan.unanswered's state lookup
cdef object _SKIPPED = _SKIPPED_PORTS
cdef object _NO_EVIDENCE = NO_EVIDENCE


cdef inline int _small(object v, long* out) noexcept:
    """1 and the value in `out` when `v` is an exact int that fits a C long / 60 (so 60 times it
    still fits): the packet and byte counts of every real flow; 0 for anything else (a bool, a
    float, a huge int), which the caller leaves to Python's arithmetic."""
    cdef int overflow = 0
    cdef long n
    if not PyLong_CheckExact(v):
        return 0
    n = PyLong_AsLongAndOverflow(v, &overflow)
    if overflow or n > LONG_MAX // 60 or n < -(LONG_MAX // 60):  # (C constants: no boxing of n)
        return 0
    out[0] = n
    return 1


cdef class Intake:
    """One call per closed TCP flow: is it a failed outbound attempt (reconnect.Intake)? Most flows
    are answered, noted and answered NO_EVIDENCE here; the others go to `count`."""

    cdef readonly object servers, local, count, note
    cdef Servers fast_servers  # servers, when it is the compiled table (else None: call `note`)
    cdef bint fast_local  # `local` is prefixes.is_local: asked in C (_prefixes.text_local)

    def __init__(self, servers, local, count):
        self.servers, self.local, self.count = servers, local, count
        self.note = servers.note
        self.fast_servers = servers if type(servers) is Servers else None
        self.fast_local = local is is_local

    cdef inline bint _local(self, object ip) except -1:
        if not self.fast_local:
            return bool(self.local(ip))
        return text_local(ip)

    cdef inline bint _answered(self, object flow, bint direct) except -1:
        """The twin's `(dpkts >= 2 and dbytes > 60 * dpkts) or not unanswered(flow)`."""
        cdef long p, b
        dpkts = flow_field(&SLOTS, flow, direct, F_DPKTS, NAMES)
        if _small(dpkts, &p):  # an int (every real flow): the test in C
            if p >= 2:
                dbytes = flow_field(&SLOTS, flow, direct, F_DBYTES, NAMES)
                if _small(dbytes, &b):
                    if b > 60 * p:
                        return True
                elif dbytes > 60 * dpkts:
                    return True
        elif dpkts >= 2 and flow_field(&SLOTS, flow, direct, F_DBYTES, NAMES) > 60 * dpkts:  # anything else:
            return True  # Python's arithmetic, as the twin's
        return not flow_unanswered(&SLOTS, flow, NAMES, _STATES, _BY_STATE)

    def on_flow(self, flow):
        cdef bint direct = flow_direct(&SLOTS, flow)
        if flow_field(&SLOTS, flow, direct, F_PROTO, NAMES) != "tcp":
            return _NO_EVIDENCE
        if self._answered(flow, direct):  # answered: its server is in use (reports too: a long session)
            if self.fast_servers is not None:
                self.fast_servers._note(flow)
            else:
                self.note(flow)
            return _NO_EVIDENCE
        # flow.is_report is closed_by == "active" on a Flow (read without calling the property)
        if flow_field(&SLOTS, flow, direct, F_CLOSED_BY, NAMES) == "active" if direct else flow.is_report:
            return _NO_EVIDENCE
        if PySet_Contains(_SKIPPED, flow_field(&SLOTS, flow, direct, F_DPORT, NAMES)) == 1:
            return _NO_EVIDENCE
        src, dst = flow_field(&SLOTS, flow, direct, F_SADDR, NAMES), flow_field(&SLOTS, flow, direct, F_DADDR, NAMES)
        if self._local(dst) and not self._local(src):  # inbound: an outside client, not our host's C&C
            return _NO_EVIDENCE
        return self.count(flow)
