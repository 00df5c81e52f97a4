# cython: language_level=3
"""slipsq.lru's `touch` and `put`, compiled, for the compiled detectors and the engine's app loop
(cimport them from _lru.pxd), and `LruMap`, the map they are fastest on. lru.py is the definition
and the readable twin; tests/test_lru.py holds the two equal. An OrderedDict is changed through its
own methods (move_to_end, popitem, setitem), called from C, so its order is exactly what lru.py
leaves; an LruMap's steps are plain C; `touch` and `put` hand any other mapping to lru.py itself.
`put_known` is for an OrderedDict or an LruMap (its callers own theirs: an exact one); an LruMap finds
the key once either way.
Data only: no I/O, no clock.
"""

from collections import OrderedDict
from collections.abc import Mapping, MutableMapping

cimport cython
from cpython.dict cimport PyDict_Contains, PyDict_GetItemWithError, PyDict_Size
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport Py_EQ, PyObject_RichCompareBool
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport int32_t, uint32_t, uint64_t
from libc.string cimport memset

from slipsq._carray cimport grow
from slipsq._probe cimport fib_home, may_fill

cdef extern from "Python.h":
    Py_hash_t PyObject_Hash(object o) except? -1

from slipsq.lru import put as _py_put
from slipsq.lru import touch as _py_touch

cdef object _ODict = OrderedDict
cdef object _move_to_end = OrderedDict.move_to_end
cdef object _popitem = OrderedDict.popitem
cdef object _ABSENT = object()


# --- LruMap --------------------------------------------------------------------------------------

ctypedef struct Entry:
    Py_hash_t hash
    PyObject* key    # a reference held; NULL: the entry is free (on the free list through `after`)
    PyObject* value  # a reference held
    int32_t before   # the entry used just before (toward the least recent end), -1 none
    int32_t after    # the entry used just after (toward the most recent end), -1 none


cdef enum:
    NONE = -1
    MAX_ENTRIES = 1 << 30  # positions are int32; the index has twice as many slots

cdef uint64_t EMPTY = 0xFFFFFFFFFFFFFFFFULL  # no position is 2**32 - 1 (MAX_ENTRIES)


cdef inline uint64_t tagged(Py_hash_t h, int32_t pos) noexcept:
    """An index slot's value: the low 32 bits of the key's hash (its tag) over the entry's position.
    A probe compares the tag first and reads the entry only when it matches, so a lookup of an
    absent key in a large map touches the index alone, not one scattered entry per slot passed."""
    return (<uint64_t>(<uint32_t>h) << 32) | <uint32_t>pos


@cython.no_gc  # keys are texts, numbers and tuples of them, values leaf records: no cycle runs through it
@cython.final
cdef class LruMap:
    """An ordered map, least recently used first: the subset of OrderedDict that slipsq's bounded
    maps use (lru.py: get, in, [], del, pop, popitem, move_to_end, iteration, len), with the same
    order after the same calls, in plain C: the entries in one array linked in use order, found
    through an open-addressing index of positions, each tagged with 32 bits of its key's hash
    (linear probing at most 2/3 full, as a dict; a removal shifts its run back, so no tombstones
    pile up however many keys come and go; a probe reads an entry only when the tag matches),
    ~40-60 bytes a key besides the key and value, as an OrderedDict (bench/mapcost.py). A full LRU
    map at its bound, where each new key evicts the oldest, reuses the evicted entry and never
    grows or rebuilds anything. OrderedDict does the same with a dict, a second index of list
    nodes rebuilt at every resize of the dict, and a node allocated per key: ~1,100 instructions a
    put against ~300 here (callgrind, bench/flowcost.py's slice).

    Outside the cycle collector (no_gc): what it holds must not refer back to it. slipsq's maps
    hold timestamps, texts, tuples of them and small records; the collector has nothing to walk.
    Keys compare as a dict's do (identity, then hash, then ==); str hashes are salted per process,
    so keys an attacker picks cannot be made to collide."""

    cdef Entry* entries
    cdef Py_ssize_t cap      # entries allocated
    cdef Py_ssize_t used     # entries handed out (live ones and those on the free list)
    cdef Py_ssize_t n        # live keys
    cdef int32_t free        # first free entry, NONE when none
    cdef int32_t first, last  # least and most recently used, NONE when empty
    cdef uint64_t* index     # slot -> the entry's hash tag << 32 | its position; EMPTY for an empty slot
    cdef int bits            # the index has 1 << bits slots (0: no index yet)
    cdef Py_ssize_t changes  # bumped by every change of keys or order (iteration checks it)

    def __cinit__(self, *args, **kwargs):
        self.entries, self.index = NULL, NULL
        self.cap = self.used = self.n = 0
        self.free = self.first = self.last = NONE
        self.bits = 0
        self.changes = 0

    def __init__(self, items=()):
        for k, v in (items.items() if isinstance(items, Mapping) else items):
            self[k] = v

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        cdef Py_ssize_t i
        cdef Entry* e
        for i in range(self.used):
            e = &self.entries[i]
            if e.key != NULL:
                Py_DECREF(<object>e.key)
                Py_DECREF(<object>e.value)
        PyMem_Free(self.entries)
        PyMem_Free(self.index)
        self.entries, self.index = NULL, NULL
        self.cap = self.used = self.n = 0
        self.free = self.first = self.last = NONE
        self.bits = 0

    # --- the index ---------------------------------------------------------------------------------
    cdef inline size_t _home(self, Py_hash_t h) noexcept:
        return fib_home(h, self.bits)

    cdef size_t _empty_slot(self, Py_hash_t h) noexcept:
        """The first empty slot of h's probe (for a key known to be absent: no comparison)."""
        cdef size_t mask = (<size_t>1 << self.bits) - 1, i = self._home(h)
        while self.index[i] != EMPTY:
            i = (i + 1) & mask
        return i

    cdef size_t _slot_of(self, int32_t pos) noexcept:
        """The slot that indexes entry `pos` (found by position: no comparison)."""
        cdef size_t mask = (<size_t>1 << self.bits) - 1, i = self._home(self.entries[pos].hash)
        while <int32_t>(self.index[i] & 0xFFFFFFFFU) != pos:  # (EMPTY's low half is no position)
            i = (i + 1) & mask
        return i

    cdef Py_ssize_t find(self, object key, Py_hash_t h, size_t* slot_out) except -2:
        """The position of `key`'s entry, or -1; *slot_out its index slot (or the empty slot where
        it would go)."""
        cdef size_t mask, i
        cdef uint64_t v
        cdef uint32_t tag = <uint32_t>h
        cdef int32_t pos
        cdef Entry* e
        if self.bits == 0:
            return -1
        mask = (<size_t>1 << self.bits) - 1
        i = self._home(h)
        while True:
            v = self.index[i]
            if v == EMPTY:
                slot_out[0] = i
                return -1
            if <uint32_t>(v >> 32) == tag:
                pos = <int32_t>(v & 0xFFFFFFFFU)
                e = &self.entries[pos]
                if e.key == <PyObject*>key or (e.hash == h and PyObject_RichCompareBool(<object>e.key, key, Py_EQ)):
                    slot_out[0] = i
                    return pos
            i = (i + 1) & mask

    cdef int _reindex(self, int bits) except -1:
        """A new index of 1 << bits slots over the live entries."""
        cdef size_t slots = <size_t>1 << bits
        cdef uint64_t* index = <uint64_t*>PyMem_Malloc(slots * sizeof(uint64_t))
        cdef int32_t pos
        if index == NULL:
            raise MemoryError()
        memset(index, 0xFF, slots * sizeof(uint64_t))  # every slot EMPTY
        PyMem_Free(self.index)
        self.index, self.bits = index, bits
        pos = self.first
        while pos != NONE:
            index[self._empty_slot(self.entries[pos].hash)] = tagged(self.entries[pos].hash, pos)
            pos = self.entries[pos].after
        return 0

    cdef void _unindex(self, size_t i) noexcept:
        """Empty slot i, shifting back the entries after it in its run that may not stay behind a
        hole (linear probing's deletion: every key stays reachable from its home slot)."""
        cdef size_t mask = (<size_t>1 << self.bits) - 1, j = i, home
        while True:
            j = (j + 1) & mask
            if self.index[j] == EMPTY:
                break
            home = self._home(self.entries[<int32_t>(self.index[j] & 0xFFFFFFFFU)].hash)
            if not may_fill(i, j, home):
                continue
            self.index[i] = self.index[j]
            i = j
        self.index[i] = EMPTY

    # --- the use order -----------------------------------------------------------------------------
    cdef inline void _unlink(self, int32_t pos) noexcept:
        cdef Entry* e = &self.entries[pos]
        if e.before == NONE:
            self.first = e.after
        else:
            self.entries[e.before].after = e.after
        if e.after == NONE:
            self.last = e.before
        else:
            self.entries[e.after].before = e.before

    cdef inline void _link_last(self, int32_t pos) noexcept:
        cdef Entry* e = &self.entries[pos]
        e.before, e.after = self.last, NONE
        if self.last == NONE:
            self.first = pos
        else:
            self.entries[self.last].after = pos
        self.last = pos

    cdef inline void _link_first(self, int32_t pos) noexcept:
        cdef Entry* e = &self.entries[pos]
        e.before, e.after = NONE, self.first
        if self.first == NONE:
            self.last = pos
        else:
            self.entries[self.first].before = pos
        self.first = pos

    # --- the C steps (lru.put / touch / get, and the mapping methods, go through these) ---------------
    cdef int insert(self, object key, Py_hash_t h, object value) except -1:
        """A new key (find said -1), now the most recently used."""
        cdef int32_t pos
        if self.free == NONE and self.used == self.cap:
            if self.cap >= MAX_ENTRIES:
                raise MemoryError("LruMap: too many keys")
            self.entries = <Entry*>grow(self.entries, &self.cap, sizeof(Entry), 8)
        if 3 * (self.n + 1) > 2 * (<Py_ssize_t>1 << self.bits) or self.bits == 0:  # at most 2/3 full
            self._reindex(4 if self.bits == 0 else self.bits + 1)
        cdef size_t slot = self._empty_slot(h)
        if self.free != NONE:
            pos = self.free
            self.free = self.entries[pos].after
        else:
            pos = <int32_t>self.used
            self.used += 1
        Py_INCREF(key)
        Py_INCREF(value)
        self.entries[pos].hash = h
        self.entries[pos].key = <PyObject*>key
        self.entries[pos].value = <PyObject*>value
        self.index[slot] = tagged(h, pos)
        self._link_last(pos)
        self.n += 1
        self.changes += 1
        return 0

    cdef object remove(self, int32_t pos, size_t slot):
        """Take out the entry at `pos` (indexed at `slot`); its (key, value), references handed over."""
        cdef Entry* e = &self.entries[pos]
        key, value = <object>e.key, <object>e.value
        Py_DECREF(key)  # the locals hold them now
        Py_DECREF(value)
        e.key = e.value = NULL
        self._unindex(slot)
        self._unlink(pos)
        e.after = self.free
        self.free = pos
        self.n -= 1
        self.changes += 1
        return key, value

    cdef int set_value(self, int32_t pos, object value) except -1:
        cdef PyObject* old = self.entries[pos].value
        Py_INCREF(value)
        self.entries[pos].value = <PyObject*>value
        Py_DECREF(<object>old)
        return 0

    cdef void to_end(self, int32_t pos, bint last) noexcept:
        if (self.last if last else self.first) != pos:
            self._unlink(pos)
            if last:
                self._link_last(pos)
            else:
                self._link_first(pos)
        self.changes += 1

    cdef object lookup(self, object key, object default):
        """self.get(key, default), in C."""
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, PyObject_Hash(key), &slot)
        return default if pos < 0 else <object>self.entries[pos].value

    cdef int put(self, object key, object value, Py_ssize_t bound) except -1:
        """lru.put(self, key, value, bound)."""
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, h, &slot)
        if pos >= 0:
            self.to_end(<int32_t>pos, True)
            self.set_value(<int32_t>pos, value)
            return 0
        if self.n >= bound:
            self._evict_first()
        return self.insert(key, h, value)

    cdef object _take_end(self, bint last):
        """popitem(last): the most (last) or least recently used (key, value), taken out (KeyError
        when empty, as OrderedDict's)."""
        cdef int32_t at = self.last if last else self.first
        if at == NONE:
            raise KeyError("dictionary is empty")
        return self.remove(at, self._slot_of(at))

    cdef int _evict_first(self) except -1:
        self._take_end(False)
        return 0

    cdef object touch(self, object key, object make, Py_ssize_t bound):
        """lru.touch(self, key, make, bound)."""
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, h, &slot)
        if pos >= 0:
            self.to_end(<int32_t>pos, True)
            return <object>self.entries[pos].value
        if self.n >= bound:
            self._evict_first()
        value = make()
        pos = self.find(key, h, &slot)  # make() may have changed the map
        if pos >= 0:  # (then `d[key] = value`: a key present keeps its place)
            self.set_value(<int32_t>pos, value)
        else:
            self.insert(key, h, value)
        return value

    # --- the mapping --------------------------------------------------------------------------------
    def __len__(self):
        return self.n

    def __contains__(self, key):
        cdef size_t slot
        return self.find(key, PyObject_Hash(key), &slot) >= 0

    def __getitem__(self, key):
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, PyObject_Hash(key), &slot)
        if pos < 0:
            raise KeyError(key)
        return <object>self.entries[pos].value

    def __setitem__(self, key, value):
        """A new key goes last (the most recent); a key present keeps its place (OrderedDict's rule)."""
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, h, &slot)
        if pos >= 0:
            self.set_value(<int32_t>pos, value)
        else:
            self.insert(key, h, value)

    def __delitem__(self, key):
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, PyObject_Hash(key), &slot)
        if pos < 0:
            raise KeyError(key)
        self.remove(<int32_t>pos, slot)

    def get(self, key, default=None):
        return self.lookup(key, default)

    def pop(self, key, default=_ABSENT):
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, PyObject_Hash(key), &slot)
        if pos < 0:
            if default is _ABSENT:
                raise KeyError(key)
            return default
        return self.remove(<int32_t>pos, slot)[1]

    def popitem(self, bint last=True):
        """The most (last) or least recently used (key, value), taken out."""
        return self._take_end(last)

    def move_to_end(self, key, bint last=True):
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, PyObject_Hash(key), &slot)
        if pos < 0:
            raise KeyError(key)
        self.to_end(<int32_t>pos, last)

    def clear(self):
        self._release()
        self.changes += 1

    def setdefault(self, key, default=None):
        cdef Py_hash_t h = PyObject_Hash(key)
        cdef size_t slot
        cdef Py_ssize_t pos = self.find(key, h, &slot)
        if pos >= 0:
            return <object>self.entries[pos].value
        self.insert(key, h, default)
        return default

    def update(self, other=(), **kw):
        for k, v in (other.items() if isinstance(other, Mapping) else other):
            self[k] = v
        for k, v in kw.items():
            self[k] = v

    def copy(self):
        return LruMap(self.items())

    cdef list _walk(self, int what):
        """Keys (0), values (1) or (key, value) pairs (2), least recently used first."""
        cdef list out = []
        cdef int32_t pos = self.first
        cdef Entry* e
        while pos != NONE:
            e = &self.entries[pos]
            if what == 0:
                out.append(<object>e.key)
            elif what == 1:
                out.append(<object>e.value)
            else:
                out.append((<object>e.key, <object>e.value))
            pos = e.after
        return out

    def keys(self):
        return self._walk(0)

    def values(self):
        return self._walk(1)

    def items(self):
        return self._walk(2)

    def __iter__(self):
        """The keys, least recently used first; RuntimeError when the map changes meanwhile (as an
        OrderedDict's iteration raises)."""
        cdef Py_ssize_t at = self.changes
        for key in self._walk(0):
            if self.changes != at:
                raise RuntimeError("LruMap mutated during iteration")
            yield key

    def __reversed__(self):
        return reversed(self._walk(0))

    def __eq__(self, other):
        """Order counts against another ordered map (an LruMap, an OrderedDict), not against a dict."""
        if isinstance(other, (LruMap, _ODict)):
            return len(self) == len(other) and self.items() == list(other.items())
        if isinstance(other, Mapping):
            return dict(self._walk(2)) == dict(other)
        return NotImplemented

    def __repr__(self):
        return f"LruMap({self.items()!r})"


MutableMapping.register(LruMap)


# --- lru.py's steps, for any map ----------------------------------------------------------------------

cdef object get(object d, object key, object default):
    """d.get(key, default) in C for a dict or an OrderedDict (dict's own lookup, which OrderedDict
    keeps); a method call for any other mapping."""
    cdef PyObject* v
    if type(d) is LruMap:
        return (<LruMap>d).lookup(key, default)
    if type(d) is dict or type(d) is _ODict:
        v = PyDict_GetItemWithError(d, key)
        return default if v == NULL else <object>v
    return d.get(key, default)


cdef int to_end(object d, object key) except -1:
    """d.move_to_end(key): in C for an LruMap, the method otherwise (KeyError when absent)."""
    cdef size_t slot
    cdef Py_ssize_t pos
    if type(d) is LruMap:
        pos = (<LruMap>d).find(key, PyObject_Hash(key), &slot)
        if pos < 0:
            raise KeyError(key)
        (<LruMap>d).to_end(<int32_t>pos, True)
        return 0
    d.move_to_end(key)
    return 0


cdef object touch(object d, object key, object make, Py_ssize_t bound):
    """lru.touch(d, key, make, bound): d[key], made by make() when absent, now the most recently
    used; the least recently used key goes first when adding it would pass `bound`."""
    if type(d) is LruMap:
        return (<LruMap>d).touch(key, make, bound)
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
    if type(d) is LruMap:
        return (<LruMap>d).put(key, value, bound)
    if type(d) is not _ODict:
        _py_put(d, key, value, bound)
        return 0
    return put_known(d, key, value, PyDict_Contains(d, key), bound)


cdef int put_known(object d, object key, object value, bint present, Py_ssize_t bound) except -1:
    """put() for a caller that has just looked `key` up in the OrderedDict or LruMap `d` (present: it
    is there), so the OrderedDict's lookup is not made twice (an LruMap finds it once either way)."""
    if type(d) is LruMap:
        return (<LruMap>d).put(key, value, bound)  # (one lookup either way)
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


def to_end_(d, key):
    """to_end() for tests."""
    to_end(d, key)


def put_known_(d, key, value, bint present, Py_ssize_t bound):
    """put_known() for tests."""
    put_known(d, key, value, present, bound)
