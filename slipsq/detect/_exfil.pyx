# cython: language_level=3
"""The exfiltration detector's per-flow path, compiled: the twin of `exfil.Intake` (read it for the
rules; slipsq.twins chooses). Every flow the detector sees comes through `Intake.on_flow`: most
carry under 16 kB and are answered here, as are the flows that are not TCP, have no packet back or
are seen backwards; only the rest go to the detector's `count` (exfil.py, Python: the open
connections' reports, the per-pair sums and the evidence). Data only: no I/O, no clock.
"""

from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.exfil import _MIN_FLOW_BYTES

cdef object _NO_EVIDENCE = NO_EVIDENCE
cdef object _MIN_BYTES = _MIN_FLOW_BYTES


cdef class Intake:
    """One call per flow: could it be part of an upload (exfil.Intake)?"""

    cdef readonly object count

    def __init__(self, count):
        self.count = count

    def on_flow(self, flow):
        if flow.sbytes + flow.dbytes < _MIN_BYTES or flow.dpkts == 0 or flow.proto != "tcp":
            return _NO_EVIDENCE
        if flow.sport < 1024 <= flow.dport:  # a server's port as the source: seen backwards
            return _NO_EVIDENCE
        return self.count(flow)
