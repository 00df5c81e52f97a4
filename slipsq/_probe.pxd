# cython: language_level=3
# Two rules of the open-addressing indexes with linear probing that the compiled maps keep
# (_lru.LruMap, _tupleindex.TupleIndex): where a hash starts its probe, and which entries a removal
# may shift back into the hole it leaves (so no tombstones pile up and every key stays reachable
# from its home slot). Inline: no extension module of its own.

from libc.stdint cimport uint64_t


cdef inline size_t fib_home(Py_hash_t h, int bits) noexcept:
    """The slot (of 1 << bits, bits >= 1) a hash starts its probe at: the top bits of a
    multiplicative mix (Fibonacci hashing), so hashes that differ only in their high bits (ints,
    tuples) spread too."""
    return <size_t>((<uint64_t>h * <uint64_t>0x9E3779B97F4A7C15ULL) >> (64 - bits))


cdef inline bint may_fill(size_t hole, size_t j, size_t home) noexcept:
    """Whether the entry at slot j, whose home slot is `home`, may move back into the hole at slot
    `hole` (j after it in the same run): yes unless its home lies cyclically in (hole, j]."""
    if hole <= j:
        return not (hole < home <= j)
    return not (home > hole or home <= j)
