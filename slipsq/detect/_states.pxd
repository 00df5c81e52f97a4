# cython: language_level=3
# portscan.unanswered and tcpstate.opened, client_silent, exchanged and denied for the compiled detectors
# (_portscan, _bruteforce, _beacon, _exfil), with the same fallbacks: a flow state's answer read
# from the Python module's own memo in C (a miss asks the memo, which fills itself), and the packets
# back only when the state does not tell. Inline, compiled into each module that cimports it: no
# extension module of its own. Data only.

from cpython.dict cimport PyDict_GetItemWithError
from cpython.ref cimport PyObject

from slipsq._flowslots cimport F_DPKTS, F_STATE, FlowSlots, flow_direct, flow_field


cdef inline object _said(object state, object memo, object by_state):
    """by_state(state), from the memo in C when it holds it (`memo` is by_state.__self__: a Memo,
    a dict subclass; `by_state` its bound __getitem__, which fills it on a miss)."""
    cdef PyObject* hit = PyDict_GetItemWithError(memo, state)
    return by_state(state) if hit == NULL else <object>hit


cdef inline int flow_unanswered(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -1:
    """portscan.unanswered(flow); `by_state`: portscan._BY_STATE, `memo` its Memo."""
    cdef bint direct = flow_direct(s, flow)
    said = _said(flow_field(s, flow, direct, F_STATE, names), memo, by_state)
    if said is None:
        return bool(flow_field(s, flow, direct, F_DPKTS, names) == 0)
    return bool(said)


cdef inline object _held(FlowSlots* s, object flow, tuple names, object memo, object by_state):
    """tcpstate._state_held of the flow's state (None: it does not say); `by_state`:
    tcpstate._HELD_BY_STATE, `memo` its Memo."""
    return _said(flow_field(s, flow, flow_direct(s, flow), F_STATE, names), memo, by_state)


cdef inline int flow_opened(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -1:
    """tcpstate.opened(flow): a state that does not say counts as opened."""
    said = _held(s, flow, names, memo, by_state)
    return said is None or <int>said >= 1


cdef inline int flow_client_silent(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -1:
    """tcpstate.client_silent(flow): the server spoke, the client said nothing."""
    said = _held(s, flow, names, memo, by_state)
    return said is not None and <int>said == 2  # tcpstate.CONVERSED


cdef inline int flow_exchanged(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -1:
    """tcpstate.exchanged(flow): a state that does not say leaves it to the packets back."""
    said = _held(s, flow, names, memo, by_state)
    if said is None:
        return bool(flow_field(s, flow, flow_direct(s, flow), F_DPKTS, names) != 0)
    return <int>said == 3  # tcpstate.EXCHANGED


cdef inline int flow_denied(FlowSlots* s, object flow, tuple names, object memo, object by_state) except -1:
    """tcpstate.denied(flow)."""
    said = _held(s, flow, names, memo, by_state)
    return said is not None and <int>said == -1
