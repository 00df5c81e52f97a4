# cython: language_level=3
# Address text in C, for the compiled detectors (_beacon, _portscan): the same answers as
# slipsq.addr.parse_ip_int (through the same libc inet_pton, the IPv4-mapped fold) and
# slipsq.detect.prefixes.local_int, held equal by tests/test_detect_compiled.py. A new address is
# parsed in a few hundred instructions, so a flood of invented addresses stays cheap (_prefixes.pyx
# caches the local test of recent ones). Inline functions only
# (compiled into each module that cimports them): no extension module of its own. Data only.

from cpython.dict cimport PyDict_Clear, PyDict_GetItemWithError, PyDict_SetItem, PyDict_Size
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.string cimport memchr, memcmp, memcpy, strlen

cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object o)  # the text is its own UTF-8: no copy, no encoding error

cdef extern from "arpa/inet.h" nogil:
    int inet_pton(int af, const char* src, void* dst)

cdef extern from "sys/socket.h":
    int AF_INET
    int AF_INET6


cdef inline int parse_text(object ip, unsigned char* b) except -2:
    """addr.parse_ip_int's parse of the plain text form: 4 (the address in b[0:4], an IPv4-mapped
    IPv6 one folded so) or 6 (b[0:16]); -1 for anything else (not a str, not ASCII, a NUL inside, or
    a form only `ipaddress` reads), which the caller leaves to the Python functions."""
    cdef Py_ssize_t n
    cdef const char* s
    if type(ip) is not str or not PyUnicode_IS_ASCII(ip):
        return -1
    s = PyUnicode_AsUTF8AndSize(ip, &n)
    if <Py_ssize_t>strlen(s) != n:  # a NUL inside: Python's inet_pton refuses it
        return -1
    if memchr(s, 58, n) == NULL:  # no ":": IPv4
        return 4 if inet_pton(AF_INET, s, b) == 1 else -1
    if inet_pton(AF_INET6, s, b) != 1:
        return -1
    if memcmp(b, b"\0\0\0\0\0\0\0\0\0\0\xff\xff", 12) == 0:  # ::ffff:a.b.c.d is a.b.c.d
        memcpy(b, b + 12, 4)
        return 4
    return 6


cdef inline unsigned long v4_of(const unsigned char* b) noexcept:
    return (<unsigned long>b[0] << 24) | (<unsigned long>b[1] << 16) | (<unsigned long>b[2] << 8) | b[3]


cdef inline bint zero_below(const unsigned char* b, unsigned char last) noexcept:
    """An IPv6 address that is 15 zero bytes and a last byte <= `last`."""
    cdef int i
    for i in range(15):
        if b[i]:
            return False
    return b[15] <= last


cdef inline bint local_bytes(int version, const unsigned char* b) noexcept:
    """prefixes.local_int of a parsed address (parse_text's version and bytes)."""
    cdef unsigned long n, top
    if version == 4:
        n = v4_of(b)
        top = n >> 24
        return (top == 10 or top == 127 or top == 0 or n >> 28 == 0xE or n >> 20 == 0xAC1
                or n >> 16 == 0xC0A8 or n >> 16 == 0xA9FE or n >> 22 == 0x191 or n == 0xFFFFFFFF)
    # fc00::/7, fe80::/10, ff00::/8; ::1 and ::
    return ((b[0] & 0xFE) == 0xFC or (b[0] == 0xFE and (b[1] & 0xC0) == 0x80) or b[0] == 0xFF
            or zero_below(b, 1))
