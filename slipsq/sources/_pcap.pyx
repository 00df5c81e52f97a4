# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The compiled capture reader: pcap and pcapng files, memory-mapped, read in C into the flow table.

Its readable twin is `PureCapture` in `slipsq/sources/pcap.py` (the same records, counts and
errors); `replay_capture` there picks one through `slipsq.twins`. Each frame goes to the compiled
table's `feed_link` C to C (declared in `_flowtable.pxd`), and `feed` returns to Python only when the
table has something for the engine or a batch is done: no Python object and no Python call per
packet. This module reads the one file it was given and nothing else; it decides nothing.
"""

from cpython.mem cimport PyMem_Free, PyMem_Realloc
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

from slipsq._flowtable cimport FlowTable

import mmap
import os
import time

from slipsq.errors import InputError
from slipsq.sources.pcap import FUTURE_SLACK  # how far past now a record may be dated

cdef enum:
    MAX_RECORD = 262144    # libpcap's largest snaplen: a longer record length means a corrupt file

cdef extern from *:
    """
    static inline uint32_t sq_rd32(const uint8_t* p, int sw) {
        uint32_t v; memcpy(&v, p, 4); return sw ? __builtin_bswap32(v) : v; }
    static inline uint16_t sq_rd16(const uint8_t* p, int sw) {
        uint16_t v; memcpy(&v, p, 2); return sw ? __builtin_bswap16(v) : v; }
    static inline int64_t sq_rd64(const uint8_t* p, int sw) {
        uint64_t v; memcpy(&v, p, 8); return (int64_t)(sw ? __builtin_bswap64(v) : v); }
    """
    uint32_t rd32 "sq_rd32"(const uint8_t* p, int sw) nogil
    uint16_t rd16 "sq_rd16"(const uint8_t* p, int sw) nogil
    int64_t rd64 "sq_rd64"(const uint8_t* p, int sw) nogil
    void prefetch "__builtin_prefetch"(const void* p) nogil

cdef extern from *:
    """
    /* A capture cut short (or overwritten in place) while it is mapped: reading a page past its new
       end raises SIGBUS, which would kill the process with no message. While feed() reads, a SIGBUS
       at an address of the file's mapping jumps back into feed() instead (sigsetjmp there), which
       raises InputError. Any other SIGBUS gets the action that was there before ours. The state is
       per thread (a fault is delivered to the thread that faulted). SA_NODEFER: the jump out of the
       handler leaves SIGBUS unblocked, and sigsetjmp(env, 0) saves no signal mask (no system call
       per feed). */
    #include <setjmp.h>
    #include <signal.h>
    #include <string.h>
    static __thread sigjmp_buf sq_bus_env;
    static __thread volatile sig_atomic_t sq_bus_armed = 0;
    static __thread const char* volatile sq_bus_lo = NULL;
    static __thread const char* volatile sq_bus_hi = NULL;
    static struct sigaction sq_bus_old;
    static void sq_bus_handler(int sig, siginfo_t* info, void* uctx) {
        (void)sig; (void)uctx;
        if (sq_bus_armed && info != NULL && (const char*)info->si_addr >= sq_bus_lo
                && (const char*)info->si_addr < sq_bus_hi) {
            sq_bus_armed = 0;
            siglongjmp(sq_bus_env, 1);
        }
        sigaction(SIGBUS, &sq_bus_old, NULL);  /* not ours: as if we had never been there */
        raise(SIGBUS);  /* (a signal sent, under the old action; a fault also recurs on return) */
    }
    static int sq_bus_install(void) {  /* at each file's opening: someone may have replaced it */
        struct sigaction sa, now;
        if (sigaction(SIGBUS, NULL, &now) == 0 && (now.sa_flags & SA_SIGINFO)
                && now.sa_sigaction == sq_bus_handler) return 0;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = sq_bus_handler;
        sa.sa_flags = SA_SIGINFO | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        return sigaction(SIGBUS, &sa, &sq_bus_old);
    }
    static inline void sq_bus_arm(const void* lo, Py_ssize_t n) {
        sq_bus_lo = (const char*)lo; sq_bus_hi = (const char*)lo + n; sq_bus_armed = lo != NULL; }
    #define sq_bus_caught() (sigsetjmp(sq_bus_env, 0) != 0)
    """
    int sq_bus_install()
    void sq_bus_arm(const void* lo, Py_ssize_t n)
    bint sq_bus_caught()


cdef extern from "sys/mman.h" nogil:
    int madvise(void* addr, size_t length, int advice)
    int MADV_WILLNEED
    int MADV_DONTNEED

cdef enum:
    MADV_POPULATE_READ_ = 22   # Linux 5.14: map a range's pages now (older kernels: EINVAL)
    MAP_WINDOW = 8 << 20       # bytes of the file mapped ahead of the reader at a time
    PAGE = 65536               # released in multiples of this (a multiple of every page size)

cdef enum:
    SEC_OK = 0
    SEC_SHORT = 1
    SEC_BOM = 2
    SEC_LENGTH = 3
    SEC_VERSION = 4

cdef dict SECTION_ERRORS = {
    SEC_SHORT: "the pcapng section header is cut short",
    SEC_BOM: "the pcapng section header has no valid byte-order magic",
    SEC_LENGTH: "the pcapng section header has an impossible length",
    SEC_VERSION: "the pcapng version is not 1.x",
}


cdef class PcapFile:
    """A pcap (either byte order, µs or ns) or pcapng (SHB/IDB/EPB/SPB/PB, several interfaces with
    their own link types and time resolutions) capture, memory-mapped and read in C.

    Raises ValueError with a message for a person when the file is not a capture. A record cut short
    at the end counts in `truncated`; an impossible record length stops the file and counts in
    `corrupt`; a record dated more than a day from now (pcap.FUTURE_SLACK) is skipped and counts in
    `corrupt`; none raises."""

    cdef object _mm
    cdef const uint8_t[::1] _view
    cdef const uint8_t* base
    cdef Py_ssize_t size
    cdef Py_ssize_t pos
    cdef bint ng
    cdef bint swapped
    cdef bint done
    cdef Py_ssize_t mapped_to
    cdef Py_ssize_t released_to
    cdef int populate
    cdef int linktype
    cdef uint32_t snaplen
    cdef double divisor
    cdef int* if_linktype
    cdef double* if_divisor
    cdef double* if_offset
    cdef int n_if
    cdef int if_cap
    cdef readonly str path
    cdef readonly str format
    cdef readonly list linktypes
    cdef readonly uint64_t packets
    cdef readonly uint64_t truncated
    cdef readonly uint64_t corrupt
    cdef readonly double first_ts
    cdef readonly double last_ts
    cdef double latest  # a record dated after this (a day from now) is damage: counted corrupt, skipped

    def __cinit__(self):
        self.if_linktype = NULL
        self.if_divisor = NULL
        self.if_offset = NULL
        self.base = NULL

    def __init__(self, str path):
        cdef uint32_t magic
        cdef int err
        self.path = path
        self.linktypes = []
        self.packets = self.truncated = self.corrupt = 0
        self.first_ts = self.last_ts = 0.0
        self.latest = time.time() + FUTURE_SLACK
        self.n_if = self.if_cap = 0
        self.mapped_to = self.released_to = 0
        self.populate = MADV_POPULATE_READ_
        with open(path, "rb") as fh:
            self.size = os.fstat(fh.fileno()).st_size
            if self.size == 0:
                raise ValueError("the file is empty, not a capture")
            self._mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        sq_bus_install()  # (fails only for a bad signal number: then a cut file kills, as before)
        try:
            self._view = self._mm
            self.base = &self._view[0]
            if self.size < 4:
                raise ValueError(f"too short to be a capture ({self.size} bytes)")
            magic = rd32(self.base, 0)
            if magic in (0xA1B2C3D4, 0xA1B23C4D, 0xD4C3B2A1, 0x4D3CB2A1):
                self.ng = False
                self.swapped = magic in (0xD4C3B2A1, 0x4D3CB2A1)
                if self.size < 24:
                    raise ValueError(f"the pcap file header is cut short ({self.size} of 24 bytes)")
                if rd16(self.base + 4, self.swapped) != 2:
                    raise ValueError(f"unsupported pcap version {rd16(self.base + 4, self.swapped)}")
                self.divisor = 1e9 if magic in (0xA1B23C4D, 0x4D3CB2A1) else 1e6
                self.snaplen = rd32(self.base + 16, self.swapped)
                self.linktype = rd32(self.base + 20, self.swapped) & 0x0FFFFFFF
                self.linktypes.append(self.linktype)
                self.format = "pcap"
                self.pos = 24
            elif magic == 0x0A0D0D0A:
                self.ng = True
                self.format = "pcapng"
                err = self._section(0)
                if err != SEC_OK:
                    raise ValueError(SECTION_ERRORS[err])
            else:
                raise ValueError("not a pcap or pcapng capture (it starts with "
                                 f"{bytes(self._view[:4]).hex()})")
        except BaseException:
            self.close()
            raise

    def __dealloc__(self):
        PyMem_Free(self.if_linktype)
        PyMem_Free(self.if_divisor)
        PyMem_Free(self.if_offset)

    def close(self):
        self._view = None
        self.base = NULL
        self.done = True
        if self._mm is not None:
            self._mm.close()
            self._mm = None

    @property
    def offset(self):
        """Bytes read so far (for progress)."""
        return self.pos

    @property
    def total(self):
        return self.size

    cdef void _map_ahead(self) noexcept nogil:
        # Page faults one page at a time cost more than the parsing; map the next window in one call.
        cdef Py_ssize_t start = self.mapped_to, length
        if start >= self.size:
            return
        length = MAP_WINDOW if self.size - start > MAP_WINDOW else self.size - start
        if madvise(<void*>(self.base + start), <size_t>length, self.populate) != 0:
            if self.populate != MADV_WILLNEED:
                self.populate = MADV_WILLNEED  # an older kernel: at least start reading ahead
                madvise(<void*>(self.base + start), <size_t>length, self.populate)
        self.mapped_to = start + length
        # and unmap what lies more than a window behind the reader (it never reads back): the
        # process's page tables stay a few windows long, not the file's size, so its resident size
        # stays small and its exit has no gigabyte mapping to tear down (the pages stay cached)
        cdef Py_ssize_t behind = (start - MAP_WINDOW) & ~<Py_ssize_t>(PAGE - 1)
        if behind > self.released_to:
            madvise(<void*>(self.base + self.released_to), <size_t>(behind - self.released_to), MADV_DONTNEED)
            self.released_to = behind

    cdef int _section(self, Py_ssize_t at) noexcept:
        cdef uint32_t bom, blen
        if self.size - at < 28:
            return SEC_SHORT
        bom = rd32(self.base + at + 8, 0)
        if bom == 0x1A2B3C4D:
            self.swapped = False
        elif bom == 0x4D3C2B1A:
            self.swapped = True
        else:
            return SEC_BOM
        blen = rd32(self.base + at + 4, self.swapped)
        if blen < 28 or blen % 4:
            return SEC_LENGTH
        if at + blen > self.size:
            return SEC_SHORT
        if rd16(self.base + at + 12, self.swapped) != 1:
            return SEC_VERSION
        self.n_if = 0  # interface ids are per section
        self.pos = at + blen
        return SEC_OK

    cdef int _interface(self, Py_ssize_t at, uint32_t blen) except -1:
        cdef Py_ssize_t o = at + 16, end = at + blen - 4
        cdef int code, olen, v, k
        cdef double divisor = 1e6, offset = 0.0
        if self.n_if == self.if_cap:
            self.if_cap = self.if_cap * 2 + 4
            self.if_linktype = <int*>PyMem_Realloc(self.if_linktype, self.if_cap * sizeof(int))
            self.if_divisor = <double*>PyMem_Realloc(self.if_divisor, self.if_cap * sizeof(double))
            self.if_offset = <double*>PyMem_Realloc(self.if_offset, self.if_cap * sizeof(double))
            if self.if_linktype == NULL or self.if_divisor == NULL or self.if_offset == NULL:
                raise MemoryError()
        while o + 4 <= end:
            code = rd16(self.base + o, self.swapped)
            olen = rd16(self.base + o + 2, self.swapped)
            if code == 0 or o + 4 + olen > end:
                break
            if code == 9 and olen >= 1:  # if_tsresol: 10^-v, or 2^-v when the top bit is set
                v = self.base[o + 4]
                divisor = 1.0
                for k in range(v & 0x7F):
                    divisor *= 2.0 if v & 0x80 else 10.0
            elif code == 14 and olen >= 8:  # if_tsoffset: seconds added to every timestamp
                offset = <double>rd64(self.base + o + 4, self.swapped)
            o += 4 + ((olen + 3) & ~3)
        self.if_linktype[self.n_if] = rd16(self.base + at + 8, self.swapped)
        self.if_divisor[self.n_if] = divisor
        self.if_offset[self.n_if] = offset
        self.n_if += 1
        if self.if_linktype[self.n_if - 1] not in self.linktypes:
            self.linktypes.append(self.if_linktype[self.n_if - 1])
        return 0

    def feed(self, FlowTable table not None, Py_ssize_t max_packets):
        """Feed up to `max_packets` packets to `table`, stopping right after a packet that left the
        table with something pending or whose time reached a new second. Returns the number fed:
        0 at the end of the file. InputError when the file was cut short or overwritten while it was
        read (its pages went away under the mapping); the table may then hold half a packet: the
        replay stops there."""
        if sq_bus_caught():  # (sigsetjmp in this frame: a SIGBUS in _feed comes back here)
            sq_bus_arm(NULL, 0)
            self.done = True
            raise InputError(f"{self.path}: the file changed while it was read (cut short or overwritten "
                             f"in place) after {self.packets:,} packets: the replay stopped there")
        sq_bus_arm(self.base, self.size)
        try:
            return self._feed(table, max_packets)
        finally:
            sq_bus_arm(NULL, 0)

    cdef Py_ssize_t _feed(self, FlowTable table, Py_ssize_t max_packets) except -1:
        cdef Py_ssize_t done = 0, left
        cdef const uint8_t* b
        cdef uint32_t btype, blen, caplen, iface
        cdef uint64_t ticks
        cdef double ts
        cdef int lt, err
        while done < max_packets and not self.done:
            if self.pos + MAP_WINDOW // 2 > self.mapped_to:
                self._map_ahead()
            b = self.base + self.pos
            left = self.size - self.pos
            if not self.ng:
                if left < 16:
                    if left > 0:
                        self.truncated += 1
                    self.done = True
                    break
                caplen = rd32(b + 8, self.swapped)
                if caplen > MAX_RECORD and caplen > self.snaplen:
                    self.corrupt += 1
                    self.done = True
                    break
                if 16 + <Py_ssize_t>caplen > left:
                    self.truncated += 1
                    self.done = True
                    break
                ts = <double>rd32(b, self.swapped) + <double>rd32(b + 4, self.swapped) / self.divisor
                lt = self.linktype
                self.pos += 16 + caplen
                b += 16
                # the next record's header and IP header: fetched while this packet is worked on
                prefetch(self.base + self.pos)
                prefetch(self.base + self.pos + 64)
            else:
                if left < 12:
                    if left > 0:
                        self.truncated += 1
                    self.done = True
                    break
                btype = rd32(b, self.swapped)
                if btype == 0x0A0D0D0A:
                    err = self._section(self.pos)
                    if err == SEC_SHORT:
                        self.truncated += 1
                    if err != SEC_OK:
                        self.corrupt += err != SEC_SHORT
                        self.done = True
                    continue
                blen = rd32(b + 4, self.swapped)
                if blen < 12 or blen % 4:
                    self.corrupt += 1
                    self.done = True
                    break
                if blen > left:
                    self.truncated += 1
                    self.done = True
                    break
                self.pos += blen
                prefetch(self.base + self.pos)
                if btype == 1 and blen >= 20:
                    self._interface(self.pos - blen, blen)
                    continue
                if btype == 6 or btype == 2:  # enhanced / obsolete packet block
                    if blen < 32:
                        self.corrupt += 1
                        continue
                    iface = rd32(b + 8, self.swapped) if btype == 6 else rd16(b + 8, self.swapped)
                    caplen = rd32(b + 20, self.swapped)
                    if iface >= <uint32_t>self.n_if or 28 + <Py_ssize_t>caplen > blen - 4:
                        self.corrupt += 1
                        continue
                    ticks = (<uint64_t>rd32(b + 12, self.swapped) << 32) | rd32(b + 16, self.swapped)
                    ts = self.if_offset[iface] + <double>ticks / self.if_divisor[iface]
                    b += 28
                elif btype == 3:  # simple packet block: interface 0, no timestamp
                    if self.n_if == 0:
                        self.corrupt += 1
                        continue
                    iface = 0
                    caplen = rd32(b + 8, self.swapped)
                    if caplen > blen - 16:
                        caplen = blen - 16
                    ts = self.last_ts
                    b += 12
                else:
                    continue  # name resolution, statistics, custom blocks: nothing for us
                lt = self.if_linktype[iface]
            if not 0.0 <= ts <= self.latest:  # before 1970, from the future, NaN: a damaged timestamp would move
                self.corrupt += 1      # replay's time past every block's end (sources/pcap.py)
                continue
            table.feed_link(b, caplen, ts, lt)
            self.packets += 1
            if self.packets == 1:
                self.first_ts = ts
            self.last_ts = ts
            done += 1
            if table.closed or table.app or table.nrecs or table.ticked:
                # the engine analyses, applies blocks and ticks before the next packet, exactly
                # where a packet-by-packet replay would (Engine.packet)
                table.ticked = False
                break
        return done


def feed_plain(proc, PcapFile pcap not None, FlowTable table not None, Py_ssize_t batch,
               Py_ssize_t flush_messages, Py_ssize_t flush_bytes):
    """slipsq.pipeline.feed_plain (read it for the rules and answers), compiled: the table process's
    plain advances, each an "a" message made in C (the table's pop_app and pop_records called as the
    twin calls them; FlowTable.pending and seen_count read from its fields), where
    TableProcess.advance and _ship ran ~5,000 instructions of
    bytecode a message. The process's numbers are read once and written back on return; nothing of
    `proc` is called (a snapshot forks in proc._shipped, after we return)."""
    cdef double now = proc.now
    cdef double next_tick = proc.next_tick
    cdef Py_ssize_t seq = proc.seq, quiet_until = proc.quiet_until, out_bytes = proc.out_bytes
    cdef list out = proc.out
    cdef dict cmds = proc.cmds
    cdef uint64_t snap_due = proc.snap_due
    cdef int answer = 0
    seen_append = proc.seen_at.append
    try:
        while pcap.feed(table, batch):
            if pcap.last_ts > now:
                now = pcap.last_ts
            if now >= next_tick:
                answer = 1  # ADVANCE
                break
            if not (table.closed or table.app or table.nrecs > 0):  # FlowTable.pending
                continue
            seq += 1
            apps, recs = table.pop_app(), table.pop_records()
            seen_append(table.nseen)  # FlowTable.seen_count
            if seq > quiet_until:
                out.append((seq, "a", now, apps, recs, pcap.pos))  # pos: PcapFile.offset
                out_bytes += len(<bytes>recs) + 64 * len(<list>apps)
                if len(out) >= flush_messages or out_bytes >= flush_bytes:
                    answer = 2  # SHIPPED
                    break
            if (len(cmds) and seq in cmds) or (seq >= quiet_until and pcap.packets >= snap_due):
                answer = 2
                break
    finally:
        proc.now, proc.seq, proc.out_bytes = now, seq, out_bytes
    return answer


def feed_steps(engine, PcapFile pcap not None, FlowTable table not None, Py_ssize_t batch, Py_ssize_t budget):
    """slipsq.sources.pcap.feed_steps (read it for the rules and answers), compiled: Engine._advance's
    plain steps for the one-process replay, Engine._hand_up's two calls made from here, where
    engine.advance ran four Python frames (advance, _advance, drain, _hand_up) for each feed."""
    cdef list out = engine._out
    cdef list app_out = out if engine.export_queries else None
    cdef list flow_out = out if engine.export_flows else None
    apps, flow_calls, counters = engine._apps, engine._flows, engine.counters
    run_packets, run_flows = apps.run_packets, flow_calls.run_flows
    cdef double now = engine.now
    cdef double next_tick = engine._next_tick
    cdef Py_ssize_t i
    for i in range(budget):
        if not pcap.feed(table, batch):
            return 0
        if (pcap.last_ts if pcap.last_ts > now else now) >= next_tick:
            return 1  # ADVANCE
        if pcap.last_ts > now:
            now = pcap.last_ts
            engine.now = now
        while table.closed or table.app or table.nrecs > 0:  # FlowTable.pending: Engine.drain
            app, flows = table.pop_app(), table.pop_closed()
            if app:
                run_packets(app, app_out, counters)
            if flows:
                run_flows(flows, flow_out, counters)
        if len(out):
            return 2  # TAKE
    return 2
