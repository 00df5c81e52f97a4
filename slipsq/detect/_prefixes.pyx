# cython: language_level=3
"""`prefixes.is_local(ip)` for the compiled detectors (beacon, port scan, P2P, reconnect, exfiltration
ask it of every closed flow's addresses, about ten times a flow): the same answer, from a small cache
that lives in the CPU's cache instead of the 65,536-address dict behind is_local.

The cache is direct-mapped by the text's hash (a str computes it once and keeps it): 16,384 slots,
each holding one address text (a reference, so its identity cannot pass to another object) and its
answer. A flow's address texts come from the flow table's own cache of texts, so the same address
is nearly always the same object: a hit is a pointer comparison; an equal text in another object
(a flow file's rows) is a hit by comparing the bytes. A miss is parsed and tested in C
(_addrtext.parse_text, local_bytes: held equal to prefixes.local_int by tests/test_addr.py and
tests/test_detect_compiled.py) and takes the slot. Text the C parse leaves to Python (not ASCII,
not plain str, a form only `ipaddress` reads) goes to is_local itself and is not cached here.
Bounded by construction (a flood of invented addresses only replaces slots) and O(1) per ask.
When the config adds the site's own networks (`network.local`), a miss the fixed ranges call not
local asks is_local (its memo, then its PrefixSet); the answer is cached as any other.
"""

from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.string cimport memcmp

from slipsq.detect._addrtext cimport PyUnicode_AsUTF8AndSize, PyUnicode_IS_ASCII, local_bytes, parse_text
from slipsq.detect import prefixes
from slipsq.detect.prefixes import is_local

cdef extern from "Python.h":
    Py_ssize_t PyObject_Hash(object o) except -1
    Py_ssize_t PyUnicode_GET_LENGTH(object o)

ctypedef struct Slot:
    PyObject* text  # a reference held (NULL: empty)
    Py_ssize_t hash
    int local

cdef enum:
    # a power of two. 4,096 missed a third of the asks on bench/replay.py's 200k-flow capture (thousands
    # of clients and servers): each a parse of the text (callgrind, 300k-packet slice: text_local
    # 20.8 M instructions, 17.8 M with 16,384). Fixed: 393 kB of slots and the strings they hold
    # (at most 16,384 addresses, ~1 MB), in the idle daemon's budget.BASE_MB
    SLOTS = 16384

cdef Slot CACHE[SLOTS]
CACHE_SLOTS = SLOTS  # (for the tests: a slot is the text's hash modulo this)
cdef object _SLOW = is_local  # the Python answer, for what the C parse cannot read
cdef bint SITE = False  # the config adds networks (prefixes.set_site_networks): a miss asks is_local


def clear():
    """Forget every cached answer (prefixes.set_site_networks calls it: the answers may change)."""
    global SITE
    cdef int i
    for i in range(SLOTS):
        if CACHE[i].text != NULL:
            Py_DECREF(<object>CACHE[i].text)
            CACHE[i].text = NULL
    SITE = prefixes.site_networks() > 0


prefixes._on_change.append(clear)
clear()  # networks set before this module was imported


cdef int text_local(object ip) except -1:
    """prefixes.is_local(ip), as 1 or 0."""
    cdef unsigned char b[16]
    cdef Py_ssize_t n, m
    cdef const char* s
    cdef const char* t
    cdef int version, value
    if type(ip) is not str:
        return bool(_SLOW(ip))
    cdef Py_ssize_t h = PyObject_Hash(ip)
    cdef Slot* slot = &CACHE[<size_t>h & (SLOTS - 1)]
    if slot.text == <PyObject*>ip:
        return slot.local
    if (slot.text != NULL and slot.hash == h and PyUnicode_IS_ASCII(ip)
            and PyUnicode_GET_LENGTH(<object>slot.text) == PyUnicode_GET_LENGTH(ip)):
        # another object with the same text (only exact ASCII str are cached): compare the bytes
        s = PyUnicode_AsUTF8AndSize(ip, &n)
        t = PyUnicode_AsUTF8AndSize(<object>slot.text, &m)
        if n == m and memcmp(s, t, n) == 0:
            return slot.local
    version = parse_text(ip, b)  # -1 unless exact, ASCII, and read by inet_pton
    if version < 0:
        return bool(_SLOW(ip))
    value = local_bytes(version, b)
    if not value and SITE:
        value = bool(_SLOW(ip))  # in one of the site's own networks? (once per text: then cached)
    Py_INCREF(ip)
    if slot.text != NULL:
        Py_DECREF(<object>slot.text)
    slot.text, slot.hash, slot.local = <PyObject*>ip, h, value
    return value


def cached_local(ip):
    """text_local(ip) as a bool (for the tests that hold it equal to prefixes.is_local)."""
    return text_local(ip) == 1


def cache_size():
    """How many slots hold a text (for the tests: the cache never grows past its slots)."""
    cdef int i, n = 0
    for i in range(SLOTS):
        n += CACHE[i].text != NULL
    return n
