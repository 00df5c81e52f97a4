# cython: language_level=3
# A map key made of texts and numbers, out of the cycle collector from the start, for the compiled
# detectors' maps of 4-tuples and pairs (stratosphere, beacon, DGA, exfiltration, brute force).
# CPython's collector untracks such a tuple itself, but only at the first young collection after
# it was made, having walked it: on the 200k-flow bench capture the detectors' new keys (~60,000
# between two collections) were most of what each young collection walked. A tuple of str, int and
# float items can be in no reference cycle, so untracking it changes nothing but that walk; a key
# holding anything else stays tracked. Inline: no extension module of its own.

from cpython.ref cimport PyObject
from cpython.tuple cimport PyTuple_GET_SIZE

cdef extern from "Python.h":
    void PyObject_GC_UnTrack(void* op)
    bint PyObject_GC_IsTracked(object op)
    PyObject* PyTuple_GET_ITEM_BORROWED "PyTuple_GET_ITEM"(object p, Py_ssize_t pos)
    bint PyUnicode_CheckExact(PyObject* o)
    bint PyLong_CheckExact(PyObject* o)
    bint PyFloat_CheckExact(PyObject* o)


cdef inline void untrack_key(tuple key) noexcept:
    """Take `key` out of the cycle collector when every item is a str, an int or a float."""
    cdef Py_ssize_t i
    cdef PyObject* item
    for i in range(PyTuple_GET_SIZE(key)):
        item = PyTuple_GET_ITEM_BORROWED(key, i)
        if not (PyUnicode_CheckExact(item) or PyLong_CheckExact(item) or PyFloat_CheckExact(item)):
            return
    if PyObject_GC_IsTracked(key):
        PyObject_GC_UnTrack(<void*>key)
