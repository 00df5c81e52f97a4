# cython: language_level=3
# portscan.unanswered, opened and conversed for the compiled detectors (_portscan, _bruteforce,
# _beacon, _exfil): a connection state's answer read from portscan's own memo in C (a miss asks
# the memo, which fills itself), and the packets back only when the state does not tell. Inline, compiled into each module that cimports
# it: no extension module of its own. Data only.

from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport PyObject

from slipsq._flowslots cimport F_DPKTS, F_STATE, FlowSlots, flow_direct, flow_field


cdef inline int flow_unanswered(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -1:
    """portscan.unanswered(flow); `by_state`: portscan._BY_STATE (a Memo's bound __getitem__), `memo`
    the Memo itself (by_state.__self__: a dict subclass, read in C)."""
    cdef bint direct = flow_direct(s, flow)
    state = flow_field(s, flow, direct, F_STATE, names)
    cdef PyObject* hit = PyDict_GetItemWithError(memo, state)
    said = by_state(state) if hit == NULL else <object>hit
    if said is None:
        return bool(flow_field(s, flow, direct, F_DPKTS, names) == 0)
    return bool(said)


cdef inline int flow_level(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -3:
    """tcpstate._state_held of the flow's state: -1 (denied), 0, 1 (opened), 2 (conversed), or -2
    when the state does not say (the caller falls back as tcpstate.opened, conversed, denied do);
    `by_state`: tcpstate._HELD_BY_STATE, `memo` its Memo."""
    state = flow_field(s, flow, flow_direct(s, flow), F_STATE, names)
    cdef PyObject* hit = PyDict_GetItemWithError(memo, state)
    said = by_state(state) if hit == NULL else <object>hit
    return -2 if said is None else <int>said
