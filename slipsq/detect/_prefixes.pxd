# cython: language_level=3
# prefixes.is_local for the compiled detectors, behind one cache they all share (_prefixes.pyx).

cdef int text_local(object ip) except -1
