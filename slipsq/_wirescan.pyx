# cython: language_level=3
"""The opcode check of a worker message before it is unpickled, compiled: the twin of
`mqwire.scan` (read that for the rules; slipsq.twins chooses, tests/test_mqwire.py holds them equal).

One pass over the bytes with a table of the opcodes protocol 5 writes for tuples, lists, dicts,
str, bytes, int, float, bool and None, and the length of each one's argument. No allocation, no
Python call per opcode: a 48 kB batch of 600 flows is read in a few microseconds.
"""

from libc.stdint cimport int64_t, uint64_t

cdef enum:
    NOT_ALLOWED = -1
    LEN1 = 101  # a 1-byte length, then that many bytes
    LEN4 = 104  # a 4-byte little-endian length, then that many bytes
    LEN8 = 108  # an 8-byte little-endian length, then that many bytes

cdef int ARG[256]


cdef void _table() noexcept:
    cdef int i
    for i in range(256):
        ARG[i] = NOT_ALLOWED
    for i in b"(.)t]ae}suN":  # MARK STOP EMPTY_TUPLE TUPLE EMPTY_LIST APPEND(S) EMPTY_DICT SETITEM(S) NONE
        ARG[i] = 0
    for i in (0x85, 0x86, 0x87, 0x88, 0x89, 0x94):  # TUPLE1-3, NEWTRUE, NEWFALSE, MEMOIZE
        ARG[i] = 0
    ARG[0x80] = 1  # PROTO
    ARG[0x95] = 8  # FRAME
    ARG[ord("h")] = 1  # BINGET
    ARG[ord("j")] = 4  # LONG_BINGET
    ARG[ord("K")] = 1  # BININT1
    ARG[ord("M")] = 2  # BININT2
    ARG[ord("J")] = 4  # BININT
    ARG[ord("G")] = 8  # BINFLOAT
    ARG[0x8A] = LEN1  # LONG1
    ARG[0x8B] = LEN4  # LONG4
    ARG[0x8C] = LEN1  # SHORT_BINUNICODE
    ARG[ord("X")] = LEN4  # BINUNICODE
    ARG[0x8D] = LEN8  # BINUNICODE8
    ARG[ord("C")] = LEN1  # SHORT_BINBYTES
    ARG[ord("B")] = LEN4  # BINBYTES
    ARG[0x8E] = LEN8  # BINBYTES8


_table()


def scan(const unsigned char[::1] data):
    """None when `data` is a run of allowed opcodes ending with STOP, else why not (mqwire.scan)."""
    cdef Py_ssize_t pos = 0, n = data.shape[0], k, i
    cdef int op, arg
    cdef uint64_t length
    while pos < n:
        op = data[pos]
        arg = ARG[op]
        if arg == NOT_ALLOWED:
            return f"opcode 0x{op:02x} at {pos} is not one a worker message holds"
        pos += 1
        if op == 0x2E:  # STOP
            return None
        if arg <= 8:
            pos += arg
            continue
        k = arg - 100
        if pos + k > n:
            break
        length = 0
        for i in range(k - 1, -1, -1):
            length = (length << 8) | data[pos + i]
        pos += k
        if length > <uint64_t>(n - pos):
            break
        pos += <Py_ssize_t>length
    return "the message ends inside an opcode, or before its STOP"
