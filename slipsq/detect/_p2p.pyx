# cython: language_level=3
"""The P2P detector's per-flow path, compiled: the twin of `p2p.Intake` (read it for the rules;
slipsq.twins chooses). Every flow the detector sees comes through `Intake.on_flow`: the exchange,
side and port tests run here, an address's "is it local" is asked in C (_prefixes.text_local, the
cache the compiled detectors share), and the few flows that
count as a peer exchange go to the detector's `count` (p2p.P2P._count, Python: the recent-peer map
and the evidence). Data only: no I/O, no clock.
"""

from dataclasses import fields

from cpython.set cimport PySet_Contains

from slipsq.detect._prefixes cimport text_local
from slipsq._flowslots cimport (F_DADDR, F_DPKTS, F_DPORT, F_PROTO, F_SADDR, F_SPKTS, F_SPORT, FlowSlots, flow_direct,
                                flow_field, flow_slots)
from slipsq.detect.base import NO_EVIDENCE
from slipsq.detect.peers import SERVICE_PORTS
from slipsq.detect.prefixes import is_local
from slipsq.flow import Flow

cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)


cdef inline object _f(object flow, int k):
    """flow.<NAMES[k]>, from its slot when it is a Flow (slipsq/_flowslots.pxd)."""
    return flow_field(&SLOTS, flow, flow_direct(&SLOTS, flow), k, NAMES)


cdef object _SERVICE_PORTS = SERVICE_PORTS
cdef object _NO_EVIDENCE = NO_EVIDENCE


cdef inline bint _low_or_service(object port) except -1:
    """The twin's `port < 1024 or port in SERVICE_PORTS`: not a port a swarm listens on."""
    if port < 1024:
        return True
    return PySet_Contains(_SERVICE_PORTS, port) == 1


cdef class Intake:
    """One call per flow: is it an answered exchange between a local host and a remote high port
    (p2p.Intake)? Most flows are answered NO_EVIDENCE here; the others go to `count`."""

    cdef readonly object ctx, local, count
    cdef bint fast_local  # `local` is prefixes.is_local: asked in C (_prefixes.text_local)

    def __init__(self, ctx, local, count):
        self.ctx, self.local, self.count = ctx, local, count
        self.fast_local = local is is_local

    cdef inline bint _local(self, object ip) except -1:
        if not self.fast_local:
            return bool(self.local(ip))
        return text_local(ip)

    def on_flow(self, flow):
        proto = _f(flow, F_PROTO)
        if not (proto == "tcp" or proto == "udp") or not _f(flow, F_DPKTS) or not _f(flow, F_SPKTS):
            return _NO_EVIDENCE
        saddr, daddr = _f(flow, F_SADDR), _f(flow, F_DADDR)
        cdef bint src_local = self._local(saddr)
        cdef bint dst_local = self._local(daddr)
        if src_local == dst_local:
            return _NO_EVIDENCE
        if src_local:  # outbound
            port = _f(flow, F_DPORT)
            if _low_or_service(port) or daddr in self.ctx.dns_names:
                return _NO_EVIDENCE
            return self.count(saddr, daddr, port, False, flow)
        if _low_or_service(_f(flow, F_DPORT)):  # inbound to a local port a swarm does not listen on
            return _NO_EVIDENCE
        return self.count(daddr, saddr, _f(flow, F_SPORT), True, flow)
