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

Bypass: when the table's verdict is 2 (bypass) or 3 (unbypass), the verdict message carries the
connection's new mark (an NFQA_CT nest with CTA_MARK and CTA_MARK_MASK, which the kernel applies to
the packet's conntrack entry with the verdict), so one kernel rule (`-m connmark --mark B/B -j
ACCEPT`, ahead of NFQUEUE) forwards the rest of the connection. That message is built here by hand
(libnetfilter_queue 1.0's old API cannot attach NFQA_CT; its new API needs libmnl): 52 bytes, sent
on the queue's own netlink socket, so no second socket and no reinjection (NF_REPEAT) are needed.

It must never read a packet after giving its verdict: the kernel may reuse the buffer.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t
from libc.string cimport memset
from libc.errno cimport errno, EINTR, EAGAIN, ENOBUFS
from posix.time cimport clock_gettime, timespec, CLOCK_REALTIME
from cpython.exc cimport PyErr_CheckSignals

from netfilterqueue._impl cimport (
    NetfilterQueue, nfq_handle, nfq_q_handle, nfq_data, nfgenmsg, nfq_callback, nfqnl_msg_packet_hdr,
    nfq_create_queue, nfq_destroy_queue, nfq_set_mode, nfq_set_queue_maxlen, nfq_handle_packet,
    nfq_get_msg_packet_hdr, nfq_get_payload, nfq_set_verdict, nfq_fd, nfq_nfnlh, nfnl_rcvbufsiz,
    recv, MSG_DONTWAIT, ntohl, htonl, htons, NF_ACCEPT, NF_DROP, NFQNL_COPY_PACKET,
)

from slipsq._flowtable cimport FlowTable

cdef extern from "libnetfilter_queue/libnetfilter_queue.h":
    # not declared by NetfilterQueue 1.1's .pxd
    int nfq_set_queue_flags(nfq_q_handle *qh, uint32_t mask, uint32_t flags)

cdef extern from "libnetfilter_queue/linux_nfnetlink_queue.h":
    enum:
        NFQA_CFG_F_FAIL_OPEN
        NFQA_CFG_F_GSO
        NFQA_VERDICT_HDR
        NFQA_CT
        NFQNL_MSG_VERDICT

# linux/netfilter/nfnetlink_conntrack.h (uapi, stable); not included: it clashes with libnfnetlink's
# copy of nfnetlink.h, which libnetfilter_queue.h includes
DEF CTA_MARK = 8
DEF CTA_MARK_MASK = 21

cdef extern from "linux/netlink.h":
    enum:
        NLM_F_REQUEST
        NLA_F_NESTED
    struct sockaddr_nl:
        unsigned short nl_family
        uint32_t nl_pid
        uint32_t nl_groups

cdef extern from "libnfnetlink/libnfnetlink.h":
    enum:
        NFNL_SUBSYS_QUEUE
        NFNETLINK_V0

cdef extern from "sys/socket.h" nogil:
    struct sockaddr:
        pass
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr, unsigned int addrlen)
    enum:
        AF_NETLINK
        AF_UNSPEC

# The verdict message with a conntrack mark: nlmsghdr, nfgenmsg, NFQA_VERDICT_HDR {verdict, id},
# NFQA_CT { CTA_MARK, CTA_MARK_MASK }, all in network order except the netlink headers.
ctypedef struct MarkVerdict:
    uint32_t nlmsg_len
    uint16_t nlmsg_type
    uint16_t nlmsg_flags
    uint32_t nlmsg_seq
    uint32_t nlmsg_pid
    uint8_t nfgen_family
    uint8_t nfgen_version
    uint16_t res_id
    uint16_t vh_len
    uint16_t vh_type
    uint32_t verdict
    uint32_t packet_id
    uint16_t ct_len
    uint16_t ct_type
    uint16_t mark_len
    uint16_t mark_type
    uint32_t mark
    uint16_t mask_len
    uint16_t mask_type
    uint32_t mask

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
    cdef readonly uint32_t bypass_mark  # the connmark bit of bypassed connections (0: no bypass)
    cdef unsigned long long bypass_marks, unbypass_marks, mark_errors
    cdef MarkVerdict mv
    cdef sockaddr_nl kernel
    cdef double now
    cdef unsigned long long packets, accepted, dropped, errors, enobufs, no_payload
    cdef char *buf
    cdef bytes _buf_owner

    def __cinit__(self) -> None:
        self.qh = NULL

    def __init__(self, int num, table, *, unsigned int maxlen=4096, unsigned int copy_range=4096,
                 unsigned int rcvbuf=0, bint fail_open=True, bint gso=True, uint32_t bypass_mark=0) -> None:
        cdef unsigned int want
        self.num = num
        self.bypass_mark = bypass_mark
        memset(&self.mv, 0, sizeof(MarkVerdict))
        self.mv.nlmsg_len = sizeof(MarkVerdict)
        self.mv.nlmsg_type = (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_VERDICT
        self.mv.nlmsg_flags = NLM_F_REQUEST
        self.mv.nfgen_family = AF_UNSPEC
        self.mv.nfgen_version = NFNETLINK_V0
        self.mv.res_id = htons(<uint16_t>num)
        self.mv.vh_len, self.mv.vh_type = 12, NFQA_VERDICT_HDR
        self.mv.ct_len, self.mv.ct_type = 20, NFQA_CT | NLA_F_NESTED
        self.mv.mark_len, self.mv.mark_type = 8, CTA_MARK
        self.mv.mask_len, self.mv.mask_type = 8, CTA_MARK_MASK
        self.mv.mask = htonl(bypass_mark)
        memset(&self.kernel, 0, sizeof(sockaddr_nl))
        self.kernel.nl_family = AF_NETLINK
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

    def close(self) -> None:
        """Unbind. The kernel drops what is still queued at that moment, so a clean stop removes the
        diversion first and runs the queue dry before closing."""
        if self.qh != NULL:
            nfq_destroy_queue(self.qh)
            self.qh = NULL

    def __dealloc__(self) -> None:
        if self.qh != NULL:
            nfq_destroy_queue(self.qh)
            self.qh = NULL

    def stats(self) -> dict:
        return {"packets": self.packets, "accepted": self.accepted, "dropped": self.dropped,
                "errors": self.errors, "enobufs": self.enobufs, "no_payload": self.no_payload,
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
            wait_ms = <int>((deadline - wall_time()) * 1000)
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
    if verdict >= 2 and q.bypass_mark:
        q.accepted += 1
        if verdict == 2:
            q.bypass_marks += 1
        else:
            q.unbypass_marks += 1
        # CTA_MARK_MASK names the bits to change: set (bypass) or clear (unbypass) the one bit
        q.mv.mark = htonl(q.bypass_mark) if verdict == 2 else 0
        q.mv.verdict = htonl(NF_ACCEPT)
        q.mv.packet_id = hdr.packet_id
        if sendto(nfq_fd(q.nfq.h), &q.mv, sizeof(MarkVerdict), 0, <const sockaddr*>&q.kernel,
                  sizeof(sockaddr_nl)) < 0:
            q.mark_errors += 1  # the mark is lost; the packet must still get its verdict
            nfq_set_verdict(qh, pid, NF_ACCEPT, 0, NULL)
    elif verdict:
        q.accepted += 1
        nfq_set_verdict(qh, pid, NF_ACCEPT, 0, NULL)
    else:
        q.dropped += 1
        nfq_set_verdict(qh, pid, NF_DROP, 0, NULL)
    return 1
