# cython: language_level=3
# The compiled servers-in-use table (_portscan.pyx, twin inuse.ServersInUse) as other compiled
# modules see it: _reconnect notes every answered TCP flow's server with one C call to `_note`
# rather than a Python call to `note` (the engine closes millions of flows).

cdef class Servers:
    cdef readonly object when  # server -> its last answer to a local client (LRU order)
    cdef public Py_ssize_t bound
    cdef object _last  # the flow noted last (held, so its identity cannot be another flow's)

    cdef int _note(self, object flow) except -1
