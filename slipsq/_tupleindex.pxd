# cython: language_level=3
# A map from a 4-tuple key to an object that keeps that key, for the compiled detectors' tables of
# 4-tuples (Stratosphere's letter table, beacon's tuples). A dict keyed by the tuple made each flow
# build its key tuple and hash it, only to find that tuple's object; here the flow's four fields
# are hashed and compared part by part, and a key tuple is made only for a new object to keep.
# Open addressing, linear probing, at most 2/3 full; a removal shifts its run back (no tombstones),
# and finds its slot by identity (no comparisons). Equal parts give equal hashes (each part's
# PyObject_Hash, mixed), and parts compare as a tuple's items (identity, then ==), so it finds what
# the dict found. Each slot holds a reference to its object; the key is the object's own (borrowed).
# Inline: no extension module of its own.

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport uint64_t

from slipsq._probe cimport fib_home, may_fill

cdef extern from "Python.h":
    Py_hash_t PyObject_Hash(object o) except? -1
    PyObject* PyTuple_GET_ITEM_BORROWED "PyTuple_GET_ITEM"(object p, Py_ssize_t pos)


ctypedef struct Slot:
    Py_hash_t hash
    PyObject* key  # the object's 4-tuple (borrowed: the object holds it)
    PyObject* obj  # a reference held; NULL: an empty slot

ctypedef struct TupleIndex:
    Slot* slots  # 1 << bits slots; NULL before the first key
    int bits
    Py_ssize_t n  # objects held


cdef inline Py_hash_t key_hash(object a, object b, object c, object d) except? -1:
    """One hash of a key's four parts."""
    cdef uint64_t h = <uint64_t>PyObject_Hash(a)
    h = (h ^ (h >> 31)) * <uint64_t>0xFF51AFD7ED558CCDULL + <uint64_t>PyObject_Hash(b)
    h = (h ^ (h >> 31)) * <uint64_t>0xC4CEB9FE1A85EC53ULL + <uint64_t>PyObject_Hash(c)
    h = (h ^ (h >> 31)) * <uint64_t>0xFF51AFD7ED558CCDULL + <uint64_t>PyObject_Hash(d)
    h ^= h >> 29
    h *= <uint64_t>0x9E3779B97F4A7C15ULL
    h ^= h >> 32
    return <Py_hash_t>h if <Py_hash_t>h != -1 else -2


cdef inline int _same(PyObject* stored, object x) except -1:
    return stored == <PyObject*>x or PyObject_RichCompareBool(<object>stored, x, Py_EQ)


cdef inline size_t _home(TupleIndex* ix, Py_hash_t h) noexcept:
    return fib_home(h, ix.bits)


cdef inline size_t _empty_slot(Slot* slots, int bits, Py_hash_t h) noexcept:
    """The first empty slot of h's probe (for a key known to be absent: no comparison)."""
    cdef size_t mask = (<size_t>1 << bits) - 1, i = fib_home(h, bits)
    while slots[i].obj != NULL:
        i = (i + 1) & mask
    return i


cdef inline int ix_find(TupleIndex* ix, Py_hash_t h, object a, object b, object c, object d,
                        size_t* at) except -2:
    """1 and in *at the slot of key (a, b, c, d); 0 and in *at the empty slot it would take;
    -1 before the first key (no slot yet)."""
    cdef size_t mask, i
    cdef Slot* s
    if ix.slots == NULL:
        return -1
    mask = (<size_t>1 << ix.bits) - 1
    i = _home(ix, h)
    while True:
        s = &ix.slots[i]
        if s.obj == NULL:
            at[0] = i
            return 0
        if (s.hash == h and _same(PyTuple_GET_ITEM_BORROWED(<object>s.key, 0), a)
                and _same(PyTuple_GET_ITEM_BORROWED(<object>s.key, 1), b)
                and _same(PyTuple_GET_ITEM_BORROWED(<object>s.key, 2), c)
                and _same(PyTuple_GET_ITEM_BORROWED(<object>s.key, 3), d)):
            at[0] = i
            return 1
        i = (i + 1) & mask


cdef inline object ix_get(TupleIndex* ix, object key):
    """The object held under `key` (any object: only a 4-tuple can be one), or None."""
    cdef size_t at
    if type(key) is not tuple or len(<tuple>key) != 4:
        return None
    a, b, c, d = key
    if ix_find(ix, key_hash(a, b, c, d), a, b, c, d, &at) != 1:
        return None
    return <object>ix.slots[at].obj


cdef inline int _grow(TupleIndex* ix) except -1:
    """An index twice as large (16 slots at first), every object placed again."""
    cdef int bits = 4 if ix.slots == NULL else ix.bits + 1
    cdef size_t j, old_n = 0 if ix.slots == NULL else <size_t>1 << ix.bits
    cdef Slot* slots = <Slot*>PyMem_Calloc(<size_t>1 << bits, sizeof(Slot))
    cdef Slot* old = ix.slots
    if slots == NULL:
        raise MemoryError()
    ix.slots, ix.bits = slots, bits
    for j in range(old_n):
        if old[j].obj != NULL:
            slots[_empty_slot(slots, bits, old[j].hash)] = old[j]
    PyMem_Free(old)
    return 0


cdef inline int ix_add(TupleIndex* ix, Py_hash_t h, tuple key, object obj) except -1:
    """Hold `obj` under `key` (a 4-tuple that `obj` keeps, not in the index yet)."""
    if ix.slots == NULL or 3 * (ix.n + 1) > 2 * (<Py_ssize_t>1 << ix.bits):
        _grow(ix)
    cdef size_t at = _empty_slot(ix.slots, ix.bits, h)
    Py_INCREF(obj)
    ix.slots[at].hash, ix.slots[at].key, ix.slots[at].obj = h, <PyObject*>key, <PyObject*>obj
    ix.n += 1
    return 0


cdef inline int ix_remove(TupleIndex* ix, object obj, tuple key) except -1:
    """Let go of `obj` (held under `key`): its slot found by identity from the key's home (the
    parts' hashes again: str and tuple hashes are cached), the slots after it in its run shifted
    back where they may not stay behind a hole."""
    cdef Py_hash_t h = key_hash(<object>PyTuple_GET_ITEM_BORROWED(key, 0), <object>PyTuple_GET_ITEM_BORROWED(key, 1),
                                <object>PyTuple_GET_ITEM_BORROWED(key, 2), <object>PyTuple_GET_ITEM_BORROWED(key, 3))
    cdef size_t mask = (<size_t>1 << ix.bits) - 1, i = _home(ix, h), j, home
    while ix.slots[i].obj != <PyObject*>obj:
        i = (i + 1) & mask
    j = i
    while True:
        j = (j + 1) & mask
        if ix.slots[j].obj == NULL:
            break
        home = _home(ix, ix.slots[j].hash)
        if not may_fill(i, j, home):
            continue
        ix.slots[i] = ix.slots[j]
        i = j
    ix.slots[i].obj = ix.slots[i].key = NULL
    ix.n -= 1
    Py_DECREF(obj)
    return 0


cdef inline void ix_free(TupleIndex* ix) noexcept:
    """Let go of every object, and of the slots."""
    cdef size_t i
    cdef PyObject* obj
    if ix.slots != NULL:
        for i in range(<size_t>1 << ix.bits):
            obj = ix.slots[i].obj
            if obj != NULL:
                ix.slots[i].obj = NULL
                Py_DECREF(<object>obj)
        PyMem_Free(ix.slots)
    ix.slots, ix.bits, ix.n = NULL, 0, 0
