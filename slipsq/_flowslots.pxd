# cython: language_level=3
# The fields of the records that cross from C to Python (slipsq/flow.py: Flow, AppEvent) read and
# written from C without getattr or the dataclass's __init__. Both are slots dataclasses: each field
# is a PyObject* at a fixed offset in the object, which the field's member descriptor gives.
# Reading it there costs a load; getattr costs a type lookup and a descriptor call (~200
# instructions a field, 8-9 fields a flow in each compiled reader: _dispatch, the detectors'
# intakes). Writing them there, into an object from the type's allocator, replaces the Python
# __init__ (~2,700 instructions for a Flow's 17 arguments, once per closed flow). The offsets are
# read from the class itself when a module is imported, so a field added, moved or turned into a
# property is still read right: anything but a plain slot, an object of another type than the class
# itself (a subclass, a test's stand-in) or an unset slot goes through getattr, and a class that is
# not plain (slot_offsets) is built by calling it. Inline functions and one table per module that
# cimports them: no extension module of its own. Data only.

from cpython.object cimport Py_TYPE
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject

cdef extern from "structmember.h":
    enum: T_OBJECT_EX  # how a __slots__ attribute is stored: a PyObject* at a fixed offset

    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset

    ctypedef struct PyMemberDescrObject:
        PyMemberDef* d_member

cdef extern from "Python.h":
    ctypedef PyObject* (*allocfunc)(void*, Py_ssize_t)
    ctypedef struct _TypeAlloc "PyTypeObject":
        allocfunc tp_alloc
    PyObject* PyType_GenericAlloc(void* t, Py_ssize_t nitems)


# --- the one mechanism: where a class's fields live, reading and writing them ----------------------

cdef inline bint slot_offsets(object cls, tuple names, Py_ssize_t* offsets) except -1:
    """offsets[k] = where field names[k] of `cls` lives (-1: not a plain slot: read through getattr).
    True when slots_alloc and slot_put make what calling `cls` with every field makes: every field a
    plain slot, the generic allocator, no __post_init__ (the caller passes a slots dataclass's
    fields, in order)."""
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


cdef inline object slot_field(Py_ssize_t* offsets, object obj, bint direct, int k, tuple names):
    """obj.<names[k]>; `direct`: type(obj) is the class the offsets are of."""
    cdef PyObject* v
    if direct and offsets[k] >= 0:
        v = (<PyObject**>((<char*><PyObject*>obj) + offsets[k]))[0]
        if v != NULL:
            return <object>v
    return getattr(obj, names[k])


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


# --- Flow ----------------------------------------------------------------------------------------

# Flow's fields in their declared order (flow.py; flow_slots checks the order at import)
cdef enum:
    F_START, F_END, F_PROTO, F_SADDR, F_SPORT, F_DADDR, F_DPORT, F_SPKTS, F_DPKTS, F_SBYTES, F_DBYTES, \
        F_STATE, F_DIR, F_STOS, F_DTOS, F_LABEL, F_CLOSED_BY, NFLOW_FIELDS


ctypedef struct FlowSlots:
    PyObject* cls  # Flow (borrowed: a class lives as long as its module)
    Py_ssize_t offset[NFLOW_FIELDS]  # -1: read through getattr
    bint buildable  # flow_alloc and flow_put make what Flow(...) makes (slot_offsets)


cdef inline int flow_slots(FlowSlots* s, object cls, tuple names) except -1:
    """Fill `s` for the class `cls` whose fields are `names`, in F_* order."""
    if names != ("start", "end", "proto", "saddr", "sport", "daddr", "dport", "spkts", "dpkts", "sbytes",
                 "dbytes", "state", "dir", "stos", "dtos", "label", "closed_by"):
        raise ValueError(f"Flow's fields are {names}: the compiled readers (_flowslots.pxd) know others")
    s.cls = <PyObject*>cls
    s.buildable = slot_offsets(cls, names, s.offset)
    return 0


cdef inline object flow_field(FlowSlots* s, object flow, bint direct, int k, tuple names):
    """flow.<names[k]>; `direct`: type(flow) is the class of `s` (flow_direct)."""
    return slot_field(s.offset, flow, direct, k, names)


cdef inline bint flow_direct(FlowSlots* s, object flow) noexcept:
    return <PyObject*>Py_TYPE(flow) == s.cls


cdef inline object flow_alloc(FlowSlots* s):
    return slots_alloc(<object>s.cls)


cdef inline void flow_put(FlowSlots* s, object flow, int k, object value) noexcept:
    slot_put(flow, s.offset[k], value)


# --- AppEvent ------------------------------------------------------------------------------------

# AppEvent's fields in their declared order (flow.py; event_slots checks the order at import)
cdef enum:
    E_TS, E_KIND, E_SADDR, E_SPORT, E_DADDR, E_DPORT, E_PROTO, E_DATA, NEVENT_FIELDS


ctypedef struct EventSlots:
    PyObject* cls  # AppEvent (borrowed: a class lives as long as its module)
    PyObject* names  # its field names, a tuple (one reference per module that fills a table, kept)
    Py_ssize_t offset[NEVENT_FIELDS]  # -1: read through getattr
    bint buildable  # slots_alloc and slot_put make what AppEvent(...) makes (slot_offsets)


cdef inline int event_slots(EventSlots* s, object cls) except -1:
    """Fill `s` for AppEvent (`cls`, a slots dataclass whose fields are in E_* order)."""
    from dataclasses import fields
    names = tuple([f.name for f in fields(cls)])  # (a generator here: Cython cannot compile it in a .pxd)
    if names != ("ts", "kind", "saddr", "sport", "daddr", "dport", "proto", "data"):
        raise ValueError(f"AppEvent's fields are {names}: the compiled readers (_flowslots.pxd) know others")
    Py_INCREF(names)
    s.names, s.cls = <PyObject*>names, <PyObject*>cls
    s.buildable = slot_offsets(cls, names, s.offset)
    return 0


cdef inline object event_field(EventSlots* s, object event, int k):
    """event.<its k-th field>, from its slot when it is an AppEvent itself."""
    return slot_field(s.offset, event, <PyObject*>Py_TYPE(event) == s.cls, k, <tuple>s.names)
