# cython: language_level=3
# A C array that a compiled structure owns (PyMem) grows here: one rule, one overflow check, for
# beacon's connections (detect/_beacon.pyx) and port scan's key entries (detect/_portscan.pyx).
# Inline: no extension module of its own.

from cpython.mem cimport PyMem_Realloc

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX


cdef inline void* grow(void* items, Py_ssize_t* cap, size_t item_size, Py_ssize_t least) except NULL:
    """`items` (PyMem's, or NULL) reallocated to hold twice *cap items, and at least `least`; *cap
    is set to that. MemoryError, with `items` and *cap left as they were, when the size would not
    fit or the memory is not there."""
    cdef Py_ssize_t n = 2 * cap[0] if cap[0] < PY_SSIZE_T_MAX // 2 else PY_SSIZE_T_MAX
    if n < least:
        n = least
    if <size_t>n > <size_t>PY_SSIZE_T_MAX // item_size:
        raise MemoryError()
    cdef void* grown = PyMem_Realloc(items, <size_t>n * item_size)
    if grown == NULL:
        raise MemoryError()
    cap[0] = n
    return grown
