# cython: language_level=3
# slipsq.lru's steps on an OrderedDict, for compiled detectors to cimport (see _lru.pyx).

cdef object get(object d, object key, object default)
cdef int to_end(object d, object key) except -1
cdef object touch(object d, object key, object make, Py_ssize_t bound)
cdef int put(object d, object key, object value, Py_ssize_t bound) except -1
cdef int put_known(object d, object key, object value, bint present, Py_ssize_t bound) except -1
