# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled decoder's face for tests: the code is in `_decode.pxd` (inline, compiled into the
flow table); this module only exposes it to Python so tests can hold it equal to `decode.parse`.
Nothing on the packet path imports it."""

from libc.stdint cimport uint8_t


def parse_packet(const uint8_t[::1] buf, int linktype):
    """The compiled parser's summary as a tuple in `decode.Packet` field order (for the tests)."""
    cdef Parsed p
    cdef Py_ssize_t n = buf.shape[0]
    cdef uint8_t empty = 0
    parse(&buf[0] if n else &empty, n, linktype, &p)
    alen = 4 if p.family == 4 else 16
    src = p.src[:alen] if p.family else b""
    dst = p.dst[:alen] if p.family else b""
    return (p.family, src, dst, p.proto, p.sport, p.dport, p.tcp_flags, p.ip_len, p.tos, p.frag,
            bool(p.malformed), bool(p.arp), p.ip_off, p.payload_len)
