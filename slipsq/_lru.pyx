# cython: language_level=3
"""slipsq.lru's `touch` and `put`, compiled, for the compiled detectors and the engine's app loop
(cimport them from _lru.pxd). lru.py is the definition and the readable twin; tests/test_lru.py holds
the two equal. An OrderedDict is changed through its own methods (move_to_end, popitem, setitem),
called from C, so its order is exactly what lru.py leaves; `touch` and `put` hand any other mapping
to lru.py itself. `put_known` is for an OrderedDict only (its callers own theirs: an exact one).
Data only: no I/O, no clock.
"""

from collections import OrderedDict

from cpython.dict cimport PyDict_Contains, PyDict_GetItemWithError, PyDict_Size
from cpython.ref cimport PyObject

from slipsq.lru import put as _py_put
from slipsq.lru import touch as _py_touch

cdef object _ODict = OrderedDict
cdef object _move_to_end = OrderedDict.move_to_end
cdef object _popitem = OrderedDict.popitem


cdef object get(object d, object key, object default):
    """d.get(key, default) in C for a dict or an OrderedDict (dict's own lookup, which OrderedDict
    keeps); a method call for any other mapping."""
    cdef PyObject* v
    if type(d) is dict or type(d) is _ODict:
        v = PyDict_GetItemWithError(d, key)
        return default if v == NULL else <object>v
    return d.get(key, default)


cdef object touch(object d, object key, object make, Py_ssize_t bound):
    """lru.touch(d, key, make, bound): d[key], made by make() when absent, now the most recently
    used; the least recently used key goes first when adding it would pass `bound`."""
    if type(d) is not _ODict:
        return _py_touch(d, key, make, bound)
    cdef PyObject* found = PyDict_GetItemWithError(d, key)
    if found != NULL:
        value = <object>found
        _move_to_end(d, key)
        return value
    if PyDict_Size(d) >= bound:
        _popitem(d, False)
    value = make()
    d[key] = value  # OrderedDict's own setitem: it keeps the order
    return value


cdef int put(object d, object key, object value, Py_ssize_t bound) except -1:
    """lru.put(d, key, value, bound): d[key] = value, now the most recently used; the least recently
    used key goes when the map is full."""
    if type(d) is not _ODict:
        _py_put(d, key, value, bound)
        return 0
    return put_known(d, key, value, PyDict_Contains(d, key), bound)


cdef int put_known(object d, object key, object value, bint present, Py_ssize_t bound) except -1:
    """put() for a caller that has just looked `key` up in the OrderedDict `d` (present: it is there),
    so the lookup is not made twice."""
    if present:
        _move_to_end(d, key)
    elif PyDict_Size(d) >= bound:
        _popitem(d, False)
    d[key] = value
    return 0


def get_(d, key, default=None):
    """get() for tests."""
    return get(d, key, default)


def touch_(d, key, make, Py_ssize_t bound):
    """touch() for tests."""
    return touch(d, key, make, bound)


def put_(d, key, value, Py_ssize_t bound):
    """put() for tests."""
    put(d, key, value, bound)


def put_known_(d, key, value, bint present, Py_ssize_t bound):
    """put_known() for tests."""
    put_known(d, key, value, present, bound)
