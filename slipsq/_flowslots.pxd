# cython: language_level=3
# A Flow's fields read from C without getattr, for the compiled per-flow code (_dispatch, the
# detectors' intakes). Flow is a slots dataclass (slipsq/flow.py): each field is a PyObject* at a
# fixed offset in the object, which the field's member descriptor gives. Reading it there costs a
# load; getattr costs a type lookup and a descriptor call (~200 instructions a field, 8-9 fields a
# flow in each compiled reader). The offsets are read from the class itself when a module is
# imported, so a field added, moved or turned into a property is still read right: anything but a
# plain slot, an object of another type than Flow itself (a subclass, a test's stand-in) or an
# unset slot goes through getattr. Inline functions and one table per module that cimports them:
# no extension module of its own. Data only. At the end, the writer: a Flow built from C.

from cpython.object cimport Py_TYPE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject

cdef extern from "structmember.h":
    enum: T_OBJECT_EX  # how a __slots__ attribute is stored: a PyObject* at a fixed offset

    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset

    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

# Flow's fields in their declared order (flow.py; flow_slots checks the order at import)
cdef enum:
    F_START, F_END, F_PROTO, F_SADDR, F_SPORT, F_DADDR, F_DPORT, F_SPKTS, F_DPKTS, F_SBYTES, F_DBYTES, \
        F_STATE, F_DIR, F_STOS, F_DTOS, F_LABEL, F_CLOSED_BY, NFLOW_FIELDS


ctypedef struct FlowSlots:
    PyObject* cls  # Flow (borrowed: a class lives as long as its module)
    Py_ssize_t offset[NFLOW_FIELDS]  # -1: read through getattr


cdef inline int flow_slots(FlowSlots* s, object cls, tuple names) except -1:
    """Fill `s` for the class `cls` whose fields are `names`, in F_* order."""
    from types import MemberDescriptorType
    cdef Py_ssize_t k
    cdef PyMemberDef* m
    if names != ("start", "end", "proto", "saddr", "sport", "daddr", "dport", "spkts", "dpkts", "sbytes",
                 "dbytes", "state", "dir", "stos", "dtos", "label", "closed_by"):
        raise ValueError(f"Flow's fields are {names}: the compiled readers (_flowslots.pxd) know others")
    s.cls = <PyObject*>cls
    for k in range(NFLOW_FIELDS):
        s.offset[k] = -1
        d = cls.__dict__.get(names[k])
        if isinstance(d, MemberDescriptorType):
            m = (<PyMemberDescrObject*><PyObject*>d).d_member
            if m.type == T_OBJECT_EX:
                s.offset[k] = m.offset
    return 0


cdef inline object flow_field(FlowSlots* s, object flow, bint direct, int k, tuple names):
    """flow.<names[k]>; `direct`: type(flow) is the class of `s` (flow_direct)."""
    cdef PyObject* v
    if direct and s.offset[k] >= 0:
        v = (<PyObject**>((<char*><PyObject*>flow) + s.offset[k]))[0]
        if v != NULL:
            return <object>v
    return getattr(flow, names[k])


cdef inline bint flow_direct(FlowSlots* s, object flow) noexcept:
    return <PyObject*>Py_TYPE(flow) == s.cls


# --- building a slots object from C (the flow table's Flows, the app decoder's AppEvents) ----------
# The mirror of the reader: an object made by its type's allocator with its slots written in place,
# not through a dataclass's Python __init__ (~2,700 instructions for a Flow's 17 arguments, once per
# closed flow). Only for a class whose every field is a plain slot and whose allocator is the generic
# one (plain_slots); anything else is built by calling the class.

cdef extern from "Python.h":
    ctypedef PyObject* (*allocfunc)(void*, Py_ssize_t)
    ctypedef struct _TypeAlloc "PyTypeObject":
        allocfunc tp_alloc
    PyObject* PyType_GenericAlloc(void* t, Py_ssize_t nitems)


cdef inline bint plain_slots(object cls, tuple names, Py_ssize_t* offsets) except -1:
    """offsets[k] = where field names[k] of `cls` lives (-1: not a plain slot). True when slots_alloc
    and slot_put make what calling `cls` with every field makes: every field a plain slot, the
    generic allocator, no __post_init__ (the caller passes a slots dataclass's fields, in order)."""
    from types import MemberDescriptorType
    cdef Py_ssize_t k
    cdef PyMemberDef* m
    cdef bint plain = not hasattr(cls, "__post_init__")
    for k in range(len(names)):
        offsets[k] = -1
        d = cls.__dict__.get(names[k])
        if isinstance(d, MemberDescriptorType):
            m = (<PyMemberDescrObject*><PyObject*>d).d_member
            if m.type == T_OBJECT_EX:
                offsets[k] = m.offset
        plain = plain and offsets[k] >= 0
    return plain and (<_TypeAlloc*><PyObject*>cls).tp_alloc == <allocfunc>PyType_GenericAlloc


cdef inline object slots_alloc(object cls):
    """A new, empty `cls` (every slot unset): the caller slot_puts every field before anyone sees it."""
    cdef PyObject* o = (<_TypeAlloc*><PyObject*>cls).tp_alloc(<void*><PyObject*>cls, 0)
    if o == NULL:
        raise MemoryError()
    obj = <object>o  # a reference of its own
    Py_DECREF(obj)  # the allocator's reference, now held by `obj`
    return obj


cdef inline void slot_put(object obj, Py_ssize_t offset, object value) noexcept:
    """A field of an object from slots_alloc, set once (the slot is empty: nothing to release)."""
    Py_INCREF(value)
    (<PyObject**>((<char*><PyObject*>obj) + offset))[0] = <PyObject*>value


cdef inline bint flow_buildable(FlowSlots* s, tuple names) except -1:
    """plain_slots for Flow (`s` from flow_slots with the same names)."""
    cdef Py_ssize_t offsets[NFLOW_FIELDS]
    return plain_slots(<object>s.cls, names, offsets)


cdef inline object flow_alloc(FlowSlots* s):
    return slots_alloc(<object>s.cls)


cdef inline void flow_put(FlowSlots* s, object flow, int k, object value) noexcept:
    slot_put(flow, s.offset[k], value)
