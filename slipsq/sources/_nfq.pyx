# cython: language_level=3
"""The NFQUEUE source, compiled: one C callback per packet that hands the copied IP packet to the
flow table and gives the kernel its verdict. No Python object per packet on the fast path (the C
flow table's `feed_ip`, declared in `_flowtable.pxd`), no logging, no I/O beyond the netlink socket.
`sources/nfqueue.py` is its Python side (the checks that turn a machine that cannot run inline into
one clear line, the kernel's counters) and the only module that imports it.

NetfilterQueue (python-netfilterqueue) opens the nfnetlink handle; this module creates the queue
itself with its own C callback (so no `Packet` object is made per packet), sets what NetfilterQueue
1.1 does not expose (fail-open, GSO, socket receive buffer) and runs a bounded loop that returns
to Python every `budget` packets, when the table has work for the engine, when one of the caller's
file descriptors (control socket, signal pipe) is readable, or after `timeout` seconds.

Bypass (as Suricata's NFQ repeat mode): when the table's verdict is 2 (bypass) or 3 (unbypass), the
packet goes back to the start of its hook (NF_REPEAT) with slipsq's "verdicted" mark bit set and its
bypass bit set or cleared (its other mark bits kept); slipsq's rules copy the bypass bit into the
connection's mark and accept it, and a third rule forwards the marked connection's later packets
(verdict/firewall.py). Why not set the connmark in the verdict itself (NFQA_CT with CTA_MARK): the
kernel applies that only when built with CONFIG_NETFILTER_NETLINK_GLUE_CT, which not every kernel
is (this project's test machine's is not); NF_REPEAT works everywhere, for one packet per flow.
The table switches a flow only when the queue is drained (its bypass gate, `_queue_drained`: a
non-blocking MSG_PEEK on the queue's socket finds nothing), so no packet of the flow is left in the
queue for the forwarded ones to overtake (slipsq/flowtable.py, "Bypass"). One peek per packet of a
flow that is ready and waiting (at most BYPASS_MAX_WAITS + 1 a flow, the last one that switches it
anyway): no syscall on any other packet.

It must never read a packet after giving its verdict: the kernel may reuse the buffer.
"""

cimport cython
from libc.math cimport ceil
from libc.stdint cimport uint16_t, uint32_t
from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from cpython.exc cimport PyErr_CheckSignals

from netfilterqueue._impl cimport (
    NetfilterQueue, nfq_handle, nfq_q_handle, nfq_data, nfgenmsg, nfq_callback, nfqnl_msg_packet_hdr,
    nfq_create_queue, nfq_destroy_queue, nfq_set_mode, nfq_set_queue_maxlen, nfq_handle_packet,
    nfq_get_msg_packet_hdr, nfq_get_payload, nfq_set_verdict, nfq_fd, nfq_nfnlh, nfnl_rcvbufsiz,
    recv, MSG_DONTWAIT, ntohl, NF_ACCEPT, NF_DROP, NF_REPEAT, NFQNL_COPY_PACKET, nfq_set_verdict2,
    nfq_get_nfmark,
)

from slipsq._flowtable cimport FlowTable

cdef extern from "libnetfilter_queue/libnetfilter_queue.h":
    # not declared by NetfilterQueue 1.1's .pxd
    int nfq_set_queue_flags(nfq_q_handle *qh, uint32_t mask, uint32_t flags)

cdef extern from "libnetfilter_queue/linux_nfnetlink_queue.h":
    enum:
        NFQA_CFG_F_FAIL_OPEN
        NFQA_CFG_F_GSO

cdef extern from "<sys/socket.h>" nogil:
    enum:
        MSG_PEEK

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum:
        POLLIN

DEF RECV_BUFSIZE = 131072  # one netlink message: the copy range plus metadata, with room to spare
DEF MAX_FDS = 8
LINKTYPE_RAW = 101


cdef inline double wall_time() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_REALTIME, &t)
    return t.tv_sec + t.tv_nsec * 1e-9


ctypedef struct Gate:
    int fd  # the queue's socket
    unsigned long long enobufs  # overruns the gate's peek reported (and so took from run())


cdef bint _queue_drained(void* ctx) noexcept nogil:
    """The table's bypass gate: true when the queue's socket (`ctx`: the Queue's Gate) holds no
    packet now. Every packet the kernel queues is sent to the socket at once, and each one read here
    gets its verdict before the next read, so an empty socket means no packet of any flow is
    waiting. A pending overrun (ENOBUFS) is reported to the first recv, a peek too, which clears it:
    it is counted here, as run() would have."""
    cdef Gate* g = <Gate*>ctx
    cdef char byte
    if recv(g.fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) >= 0:
        return False
    cdef int err = errno
    if err == ENOBUFS:
        g.enobufs += 1
    return err == EAGAIN


@cython.no_gc_clear  # __dealloc__ must still see ctable (to take the gate off it) and nfq
cdef class Queue:
    """One bound NFQUEUE feeding one flow table. Counters are read by `stats()`."""

    cdef NetfilterQueue nfq
    cdef nfq_q_handle *qh
    cdef object table
    cdef FlowTable ctable  # the compiled table (None: a Python twin, fed through its `feed`)
    cdef object feed
    cdef readonly int num
    cdef readonly unsigned int rcvbuf
    cdef readonly bint fail_open
    cdef readonly bint gso
    cdef readonly uint32_t bypass_mark  # the (conn)mark bit of bypassed connections (0: no bypass)
    cdef readonly uint32_t repeat_mark  # the mark bit of a packet slipsq re-injected (NF_REPEAT)
    cdef Gate gate  # the bypass gate's view of the queue (its fd) and what it counted
    cdef unsigned long long bypass_marks, unbypass_marks, mark_errors
    cdef double now
    cdef unsigned long long packets, accepted, dropped, errors, enobufs, no_payload
    cdef char *buf
    cdef bytes _buf_owner

    def __cinit__(self) -> None:
        self.qh = NULL

    def __init__(self, int num, table, *, unsigned int maxlen=4096, unsigned int copy_range=4096,
                 unsigned int rcvbuf=0, bint fail_open=True, bint gso=True, uint32_t bypass_mark=0,
                 uint32_t repeat_mark=0) -> None:
        cdef unsigned int want
        self.num = num
        self.bypass_mark = bypass_mark
        self.repeat_mark = repeat_mark if bypass_mark else 0
        self.table = table
        self.ctable = table if isinstance(table, FlowTable) else None
        self.feed = table.feed
        self._buf_owner = bytes(RECV_BUFSIZE)
        self.buf = <char*>self._buf_owner
        try:
            self.nfq = NetfilterQueue()
        except OSError as e:
            raise PermissionError(f"cannot open nfnetlink_queue: {e}") from None
        self.qh = nfq_create_queue(self.nfq.h, <uint16_t>num, <nfq_callback*>_on_packet, <void*>self)
        if self.qh == NULL:
            raise BlockingIOError(errno, f"queue {num} is busy")
        if nfq_set_mode(self.qh, NFQNL_COPY_PACKET, copy_range) < 0:
            self.close()
            raise OSError(errno, "cannot set the packet copy mode")
        nfq_set_queue_maxlen(self.qh, maxlen)
        # fail-open: when the queue is full the kernel accepts packets instead of dropping them
        self.fail_open = fail_open and nfq_set_queue_flags(self.qh, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_FAIL_OPEN) == 0
        # GSO: let the kernel hand over aggregated packets unsegmented (byte counts come from the IP
        # header; only the first copy_range bytes are copied)
        self.gso = gso and nfq_set_queue_flags(self.qh, NFQA_CFG_F_GSO, NFQA_CFG_F_GSO) == 0
        # a receive buffer that holds a full queue, so user_dropped stays 0 below the queue's capacity
        want = rcvbuf if rcvbuf else maxlen * (copy_range + 1024)
        self.rcvbuf = nfnl_rcvbufsiz(nfq_nfnlh(self.nfq.h), want)
        self.gate.fd = nfq_fd(self.nfq.h)
        self.gate.enobufs = 0
        if self.bypass_mark:  # a flow switches to bypass only when the queue is drained
            if self.ctable is not None:
                self.ctable.gate_bypass(_queue_drained, &self.gate)
            else:
                table.set_bypass_gate(self.drained)

    def drained(self) -> bool:
        """Whether the queue holds no packet now (the bypass gate, for a Python table)."""
        return self.qh != NULL and _queue_drained(&self.gate)

    def close(self) -> None:
        """Unbind. The kernel drops what is still queued at that moment, so a clean stop removes the
        diversion first and runs the queue dry before closing."""
        self._ungate()
        if getattr(self.table, "bypass_gate", None) == self.drained:  # a Python table's: only this queue's
            self.table.set_bypass_gate(None)
        if self.qh != NULL:
            nfq_destroy_queue(self.qh)
            self.qh = NULL

    cdef void _ungate(self) noexcept:
        """The table may outlive the queue: take this queue's gate (it points into this object) off
        it, and only this queue's (another gate set since stays)."""
        if self.ctable is not None and self.ctable.gate_ctx == <void*>&self.gate:
            self.ctable.gate_bypass(NULL, NULL)

    def __dealloc__(self) -> None:
        self._ungate()
        if self.qh != NULL:
            nfq_destroy_queue(self.qh)
            self.qh = NULL

    def stats(self) -> dict:
        return {"packets": self.packets, "accepted": self.accepted, "dropped": self.dropped,
                "errors": self.errors, "enobufs": self.enobufs + self.gate.enobufs, "no_payload": self.no_payload,
                "bypass_marks": self.bypass_marks, "unbypass_marks": self.unbypass_marks,
                "mark_errors": self.mark_errors}

    cdef inline bint _pending(self) except -1:
        if self.ctable is not None:
            # held: bypassed flows waiting for conntrack's counts (the daemon asks at once)
            return len(self.ctable.closed) > 0 or len(self.ctable.app) > 0 or len(self.ctable.held) > 0
        return bool(self.table.pending)

    def run(self, unsigned int budget=1024, double timeout=1.0, fds=()) -> int:
        """Handle up to `budget` packets; return early when the table has pending work, one of `fds`
        is readable, a signal arrived, or `timeout` seconds passed. Returns packets handled."""
        cdef int fd = nfq_fd(self.nfq.h)
        cdef pollfd pfds[MAX_FDS]
        cdef unsigned long nfds = 1
        cdef int rv, i, wait_ms
        cdef unsigned int handled = 0
        cdef double deadline = wall_time() + timeout
        cdef unsigned long long before
        if self.qh == NULL:
            raise RuntimeError("the queue is closed")
        pfds[0].fd = fd
        pfds[0].events = POLLIN
        for f in fds:
            if nfds >= MAX_FDS:
                break
            pfds[nfds].fd = f
            pfds[nfds].events = POLLIN
            nfds += 1
        while handled < budget:
            rv = recv(fd, self.buf, RECV_BUFSIZE, MSG_DONTWAIT)
            if rv >= 0:
                before = self.packets
                self.now = wall_time()
                nfq_handle_packet(self.nfq.h, self.buf, rv)
                handled += <unsigned int>(self.packets - before)
                # the engine must see closed flows and app packets soon, not after a full budget
                if (handled & 31) == 0 and self._pending():
                    break
                continue
            if errno == ENOBUFS:
                self.enobufs += 1  # the kernel could not deliver some packets to us (counted there too)
                continue
            if errno == EINTR:
                PyErr_CheckSignals()
                break
            if errno != EAGAIN:
                raise OSError(errno, "recv from the NFQUEUE socket failed")
            # nothing queued: give the engine its turn, then sleep until a packet or an fd is ready
            if handled and self._pending():
                break
            # rounded up: returning before the deadline would make the daemon's once-a-second tick
            # (now >= next_tick) miss every other idle turn, one tick in 2 s (it did, by 0.6 ms)
            wait_ms = <int>ceil((deadline - wall_time()) * 1000)
            if wait_ms <= 0:
                break
            with nogil:
                rv = poll(pfds, nfds, wait_ms)
            if rv < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    break
                raise OSError(errno, "poll failed")
            for i in range(1, <int>nfds):
                if pfds[i].revents:
                    return handled
        return handled


cdef int _on_packet(nfq_q_handle *qh, nfgenmsg *nfmsg, nfq_data *nfa, void *data) noexcept:
    cdef Queue q = <Queue>data
    cdef nfqnl_msg_packet_hdr *hdr = nfq_get_msg_packet_hdr(nfa)
    cdef uint32_t pid = ntohl(hdr.packet_id)
    cdef unsigned char *payload = NULL
    cdef int n = nfq_get_payload(nfa, &payload)
    cdef int verdict = 1
    q.packets += 1
    if n > 0:
        try:
            if q.ctable is not None:
                verdict = q.ctable.feed_ip(payload, n, q.now)  # C to C: no Python object per packet
            else:
                verdict = q.feed(payload[:n], q.now, LINKTYPE_RAW)
        except BaseException:
            q.errors += 1  # fail open: a packet the table cannot take is let through, never lost
            verdict = 1
    else:
        q.no_payload += 1
    cdef uint32_t mark
    if verdict >= 2 and q.bypass_mark:
        q.accepted += 1
        if verdict == 2:
            q.bypass_marks += 1
        else:
            q.unbypass_marks += 1
        mark = (<uint32_t>nfq_get_nfmark(nfa) & ~(q.bypass_mark | q.repeat_mark)) | q.repeat_mark
        if verdict == 2:
            mark |= q.bypass_mark
        if nfq_set_verdict2(qh, pid, NF_REPEAT, mark, 0, NULL) < 0:
            q.mark_errors += 1  # the mark is lost; the packet must still get its verdict
            nfq_set_verdict(qh, pid, NF_ACCEPT, 0, NULL)
    elif verdict:
        q.accepted += 1
        nfq_set_verdict(qh, pid, NF_ACCEPT, 0, NULL)
    else:
        q.dropped += 1
        nfq_set_verdict(qh, pid, NF_DROP, 0, NULL)
    return 1
