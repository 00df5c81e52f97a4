# cython: language_level=3
"""The beacon detector's per-flow state, compiled: the twin of `beacon.Tuples` and `beacon._Tuple`
(read those for the rules; slipsq.twins chooses). Every TCP/UDP connection the detector does not
ignore lands here, so this is its hot path; the scoring (rare) stays in beacon.py.

The LRU order of the twin's OrderedDict is a doubly linked list through the tuples themselves (a
dict finds a tuple, the links give O(1) move-to-end and pop-front), so the same calls evict and
prune the same tuples in the same order (tests/test_beacon_compiled.py). Data only: no I/O, no clock.
"""

from bisect import bisect

from cpython.dict cimport PyDict_DelItem, PyDict_GetItem, PyDict_SetItem
from cpython.ref cimport PyObject
from libc.math cimport INFINITY


cdef class Tuple:
    """One 4-tuple: its last connections' starts and sizes, and what was last reported (beacon._Tuple)."""

    cdef public list starts, sizes
    cdef public long total, emitted_n, emitted_window
    cdef public double emitted_threat, last
    cdef object key
    cdef Tuple prev, next  # LRU links: prev is less recently seen

    def __init__(self):
        self.starts, self.sizes = [], []
        self.total = self.emitted_n = 0
        self.emitted_window = -1
        self.emitted_threat = self.last = 0.0


cdef class Tuples:
    """4-tuple -> Tuple, at most `bound`, least recently seen first (beacon.Tuples)."""

    cdef public long history, bound
    cdef public double oldest_last
    cdef dict map
    cdef Tuple head, tail  # least and most recently seen

    def __init__(self, long history, long bound):
        self.history, self.bound = history, bound
        self.map = {}
        self.oldest_last = INFINITY

    def __len__(self):
        return len(self.map)

    def __iter__(self):
        """The keys, least recently seen first (as the twin's map)."""
        cdef Tuple t = self.head
        while t is not None:
            yield t.key
            t = t.next

    def get(self, key):
        """The tuple of `key`, or None (for tests and tools)."""
        cdef PyObject* found = PyDict_GetItem(self.map, key)
        return None if found == NULL else <Tuple>found

    cdef inline void _unlink(self, Tuple t):
        if t.prev is None:
            self.head = t.next
        else:
            t.prev.next = t.next
        if t.next is None:
            self.tail = t.prev
        else:
            t.next.prev = t.prev
        t.prev = t.next = None

    cdef inline void _append(self, Tuple t):
        t.prev = self.tail
        if self.tail is None:
            self.head = t
        else:
            self.tail.next = t
        self.tail = t

    cdef void _pop_front(self):
        cdef Tuple t = self.head
        self._unlink(t)
        PyDict_DelItem(self.map, t.key)

    def add(self, tuple key, double start, object size):
        cdef PyObject* found = PyDict_GetItem(self.map, key)
        cdef Tuple t
        if found == NULL:
            if len(self.map) >= self.bound:
                self._pop_front()
            t = Tuple.__new__(Tuple)
            t.starts, t.sizes = [], []
            t.emitted_window = -1
            t.key = key
            PyDict_SetItem(self.map, key, t)
            self._append(t)
        else:
            t = <Tuple>found
            if t is not self.tail:
                self._unlink(t)
                self._append(t)
        cdef list starts = t.starts
        cdef Py_ssize_t i, n = len(starts)
        if n == 0 or start >= <double>starts[n - 1]:  # the common case: it starts after the others
            starts.append(start)
            t.sizes.append(size)
        else:  # flows close out of start order: insert by start time
            i = bisect(starts, start)
            starts.insert(i, start)
            t.sizes.insert(i, size)
        if len(starts) > self.history:
            del starts[0]
            del t.sizes[0]
        t.total += 1
        if start > t.last:
            t.last = start
        if t.last < self.oldest_last:
            self.oldest_last = t.last
        return t

    def prune(self, double horizon):
        if horizon <= self.oldest_last:
            return
        while self.head is not None and self.head.last < horizon:
            self._pop_front()
        self.oldest_last = INFINITY if self.head is None else self.head.last
