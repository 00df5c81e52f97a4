# cython: language_level=3
"""The engine's per-flow loop, compiled: the twins of `dispatch.FlowCalls` and `dispatch.AppCalls`
(read those and `detect.base.FlowGate` for the rules; slipsq.twins chooses, tests/test_dispatch.py
holds them equal).

The gates are tested in C on the flow's fields, read once per flow and only if some hook has a
gate: times and counts that are plain floats and ints are compared as C numbers; a field of any
other type (a flow file's odd value, a bool, an int past 64 bits) makes that test let the flow
through, so the hook is called as it would be without a gate. No state beyond the call list; no I/O.
"""

cimport cython

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItemWithError
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport PyObject
from cpython.list cimport PyList_GET_SIZE
from cpython.set cimport PySet_Add
from libc.stdint cimport INT64_MAX, INT64_MIN, int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

from dataclasses import fields

from slipsq._flowslots cimport (E_DADDR, E_DATA, E_KIND, E_SADDR, E_SPORT, E_TS, F_CLOSED_BY, F_DBYTES, F_DPKTS, F_DPORT,
                                F_END, F_PROTO, F_SBYTES, F_START, EventSlots, FlowSlots, event_field, event_slots,
                                flow_direct, flow_field, flow_slots)
from slipsq._lru cimport get as lru_get
from slipsq._lru cimport to_end as lru_to_end
from slipsq.detect._prefixes cimport text_local
from slipsq.detect.resolvers import Resolvers as _Resolvers
from slipsq.dispatch import MAX_NAMES as _MAX_NAMES
from slipsq.flow import AppEvent, Flow
from slipsq.records import Query

cdef extern from "Python.h":
    int _set_contains "PySet_Contains"(object s, object key)  # -1 and an error set: cannot tell
    void PyErr_Clear()
    Py_ssize_t PySet_GET_SIZE(object s)


cdef inline int _in(object s, object key) noexcept:
    """`key in s` for a frozenset s: 1, 0, or -1 when it cannot tell (an unhashable key: the flow
    goes to the hook, as the twin's gate error does), without a try block's cost on every flow."""
    cdef int r = _set_contains(s, key)
    if r < 0:
        PyErr_Clear()
    return r


cdef tuple NAMES = tuple(f.name for f in fields(Flow))
cdef FlowSlots SLOTS
flow_slots(&SLOTS, Flow, NAMES)


cdef struct Gate:
    bint on
    bint reports       # False: an active-timeout report does not pass
    double min_dur     # 0: not set
    long long min_bytes
    bint answered
    long long min_dport


cdef struct Facts:
    bint times_ok
    double dur
    bint bytes_ok
    long long nbytes
    bint dpkts_ok
    long long dpkts
    bint dport_ok
    long long dport
    bint report


cdef bint as_ll(object v, long long* out) noexcept:
    """`v` as a C long long when it is a plain int that fits (with room to add two of them)."""
    cdef int overflow = 0
    cdef long long x
    if not PyLong_CheckExact(v):
        return False
    x = PyLong_AsLongLongAndOverflow(v, &overflow)
    if overflow or x > (1LL << 61) or x < -(1LL << 61):
        return False
    out[0] = x
    return True


cdef class Counters:
    """engine.Counters, compiled: the calls below add to it in C. On the dataclass, an attribute read
    and write was ~600 instructions, and the engine process makes one or two a message (~100k
    messages a capture). Engine uses this one when the build has it (engine.make_counters)."""

    cdef public long long flows, app_events, alerts, blocks

    def __init__(self, long long flows=0, long long app_events=0, long long alerts=0, long long blocks=0):
        self.flows, self.app_events, self.alerts, self.blocks = flows, app_events, alerts, blocks

    def __repr__(self):
        return (f"Counters(flows={self.flows}, app_events={self.app_events}, alerts={self.alerts}, "
                f"blocks={self.blocks})")


cdef inline int _add(object counters, long long flows, long long events) except -1:
    """counters.flows += flows and counters.app_events += events: in C for a Counters, else (a test's
    counters) through its attributes."""
    if type(counters) is Counters:
        (<Counters>counters).flows += flows
        (<Counters>counters).app_events += events
    else:
        if flows:
            counters.flows += flows
        if events:
            counters.app_events += events
    return 0


cdef class FlowCalls:
    """The `on_flow` hooks with their gates (None: every flow), and where evidence and errors go."""

    cdef readonly list hooks
    cdef readonly object evidence, failed
    cdef list _fns, _protos, _skip
    cdef object _proto, _dport  # the flow being dispatched: its protocol and destination port
    cdef Gate* _gates
    cdef Py_ssize_t n
    cdef bint gated

    def __cinit__(self, hooks, evidence, failed):
        self._gates = NULL

    def __init__(self, hooks, evidence, failed):
        cdef Py_ssize_t i
        self.hooks = list(hooks)
        self.evidence = evidence
        self.failed = failed
        self.n = len(self.hooks)
        self._gates = <Gate*>PyMem_Malloc(max(1, self.n) * sizeof(Gate))
        if self._gates == NULL:
            raise MemoryError()
        self._fns, self._protos, self._skip = [], [], []
        self.gated = False
        for i, (fn, gate) in enumerate(self.hooks):
            self._fns.append(fn)
            self._gates[i].on = False
            self._protos.append(None)
            self._skip.append(None)
            if gate is not None:
                self._load(i, gate)

    cdef void _load(self, Py_ssize_t i, object gate):
        """Gate `i` from a FlowGate; one whose numbers C cannot hold stays off (every flow passes)."""
        cdef Gate g
        try:
            g.reports = bool(gate.reports)
            g.min_dur = float(gate.min_dur)
            g.min_bytes = int(gate.min_bytes)
            g.answered = bool(gate.answered)
            g.min_dport = int(gate.min_dport)
            protos = None if gate.protos is None else frozenset(gate.protos)
            skip = frozenset(gate.skip_dports) if gate.skip_dports else None
        except (TypeError, ValueError, OverflowError):
            return
        g.on = True
        self._gates[i] = g
        self._protos[i] = protos
        self._skip[i] = skip
        self.gated = True

    def __dealloc__(self):
        PyMem_Free(self._gates)

    cdef void _read(self, object flow, Facts* f):
        cdef double d
        cdef long long sb = 0, db = 0
        f.times_ok = f.bytes_ok = f.dpkts_ok = f.dport_ok = f.report = False
        self._proto = self._dport = None
        cdef bint direct = flow_direct(&SLOTS, flow)  # a Flow: its fields read from their slots
        try:
            start = flow_field(&SLOTS, flow, direct, F_START, NAMES)
            end = flow_field(&SLOTS, flow, direct, F_END, NAMES)
            if PyFloat_CheckExact(start) and PyFloat_CheckExact(end):
                d = PyFloat_AS_DOUBLE(end) - PyFloat_AS_DOUBLE(start)
                f.dur = d if d > 0.0 else 0.0  # Flow.dur: max(0.0, end - start)
                f.times_ok = True
            f.bytes_ok = (as_ll(flow_field(&SLOTS, flow, direct, F_SBYTES, NAMES), &sb)
                          and as_ll(flow_field(&SLOTS, flow, direct, F_DBYTES, NAMES), &db))
            f.nbytes = sb + db
            f.dpkts_ok = as_ll(flow_field(&SLOTS, flow, direct, F_DPKTS, NAMES), &f.dpkts)
            dport = flow_field(&SLOTS, flow, direct, F_DPORT, NAMES)
            f.dport_ok = as_ll(dport, &f.dport)
            f.report = bool(flow_field(&SLOTS, flow, direct, F_CLOSED_BY, NAMES) == "active")  # Flow.is_report
            self._proto, self._dport = flow_field(&SLOTS, flow, direct, F_PROTO, NAMES), dport
        except Exception:  # an odd flow: every gate lets it through
            f.times_ok = f.bytes_ok = f.dpkts_ok = f.dport_ok = f.report = False
            self._proto = self._dport = None

    cdef bint _admits(self, Py_ssize_t i, Facts* f) noexcept:
        cdef Gate* g = &self._gates[i]
        proto, dport = self._proto, self._dport
        protos = self._protos[i]
        if protos is not None and proto is not None and _in(protos, proto) == 0:
            return False
        if not g.reports and f.report:
            return False
        if g.min_dur != 0.0 and f.times_ok and f.dur < g.min_dur:
            return False
        if g.min_bytes != 0 and f.bytes_ok and f.nbytes < g.min_bytes:
            return False
        if g.answered and f.dpkts_ok and f.dpkts == 0:
            return False
        if g.min_dport != 0 and f.dport_ok and f.dport < g.min_dport:
            return False
        skip = self._skip[i]
        if skip is not None and dport is not None and _in(skip, dport) == 1:
            return False
        return True

    def run_flows(self, flows, list out, counters):
        """Each of `flows` in order, in one call (Engine._hand_up): a flow that is not an
        active-timeout report counts in counters.flows and goes to `out` (None: nowhere) before
        the hooks see it."""
        self._run_flows(flows, out, counters)

    cdef int _run_flows(self, object flows, list out, object counters) except -1:
        cdef Py_ssize_t n = 0
        try:
            for flow in flows:
                if flow_field(&SLOTS, flow, flow_direct(&SLOTS, flow), F_CLOSED_BY, NAMES) != "active":
                    n += 1
                    if out is not None:
                        out.append(flow)
                self._run(flow)
        finally:
            _add(counters, n, 0)
        return 0

    def run(self, flow):
        self._run(flow)

    cdef int _run(self, object flow) except -1:
        cdef Py_ssize_t i
        cdef Facts f
        cdef bint read = False
        for i in range(self.n):
            fn = self._fns[i]
            if self._gates[i].on:
                if not read:
                    self._read(flow, &f)
                    read = True
                if not self._admits(i, &f):
                    continue
            try:
                evs = fn(flow)
            except Exception as e:
                self.failed(fn, e)
                continue
            if evs:  # most calls find nothing
                for ev in evs:
                    self.evidence(ev)
        return 0


cdef EventSlots EV
event_slots(&EV, AppEvent)
cdef Py_ssize_t MAX_NAMES = _MAX_NAMES
cdef object _Query = Query
cdef object _set = set


cdef object _trusts(object resolvers, object resolver, object port, object client):
    """resolvers.trusts(resolver, port, client): for a detect.resolvers.Resolvers, its test step for
    step in C (a Python call a DNS answer was ~2,700 instructions), the local test through the
    compiled detectors' shared cache (_prefixes.text_local is prefixes.is_local); any other
    object is asked."""
    if type(resolvers) is not _Resolvers:
        return resolvers.trusts(resolver, port, client)
    if port == 53 and (resolver in resolvers.listed or (text_local(resolver) and text_local(client))
                       or resolvers.protected(resolver)):
        return True
    resolvers.untrusted += 1
    return False


cdef class AppCalls:
    """App events to the on_app hooks of their kind, DNS answers' names into ctx.dns_names first
    (dispatch.AppCalls)."""

    cdef readonly dict by_kind
    cdef readonly object other, decode, ctx, failed
    cdef readonly Py_ssize_t max_dns, max_names, names
    cdef object _map  # the names map `names` counts (dispatch.AppCalls)

    def __init__(self, dict by_kind, other, decode, ctx, Py_ssize_t max_dns, failed, max_names=1 << 62):
        self.by_kind, self.other, self.decode, self.ctx = by_kind, other, decode, ctx
        self.max_dns, self.failed = max_dns, failed
        self.max_names = min(max_names, 1 << 62)
        self._map, self.names = None, 0

    def run_packets(self, packets, list out, counters):
        self._run_packets(packets, out, counters)

    cdef int _run_packets(self, object packets, list out, object counters) except -1:
        for ts, ip_packet in packets:
            self._run_packet(ts, ip_packet, out, counters)
        return 0

    cdef int _run_packet(self, object ts, object ip_packet, list out, object counters) except -1:
        try:
            events = self.decode(ip_packet, ts)
        except Exception as e:
            self.failed("app decoder", e)
            return 0
        for event in events:
            self._event(event, out, counters)
        return 0

    def run(self, event, list out, counters):
        self._event(event, out, counters)

    cdef int _learn(self, object answers, object query) except -1:
        """dispatch.AppCalls._learn."""
        names_map = self.ctx.dns_names
        cdef Py_ssize_t size
        if names_map is not self._map:
            self._map, self.names = names_map, sum(len(v) for v in names_map.values())
        for answer in answers:
            names = lru_get(names_map, answer, None)
            if names is None:
                if len(names_map) >= self.max_dns:
                    self._forget_first()
                names = _set()
                names_map[answer] = names
            else:
                lru_to_end(names_map, answer)
            size = PySet_GET_SIZE(names) if type(names) is set else len(names)
            if size < MAX_NAMES and query not in names:
                while self.names >= self.max_names and len(names_map) > 1:
                    self._forget_first()
                if type(names) is set:
                    PySet_Add(names, query)
                else:
                    names.add(query)
                self.names += 1
        return 0

    cdef int _forget_first(self) except -1:
        self.names -= len(self._map.popitem(last=False)[1])
        return 0

    cdef int _event(self, object event, list out, object counters) except -1:
        _add(counters, 0, 1)
        kind = event_field(&EV, event, E_KIND)
        cdef Py_ssize_t size
        if kind == "dns":
            data = event_field(&EV, event, E_DATA)
            query = lru_get(data, "query", "")
            answers = lru_get(data, "answers", ())
            if answers and _trusts(self.ctx.resolvers, event_field(&EV, event, E_SADDR),
                                   event_field(&EV, event, E_SPORT), event_field(&EV, event, E_DADDR)):
                self._learn(answers, query)
            if out is not None and lru_get(data, "response", True):
                out.append(_Query(event_field(&EV, event, E_TS), event_field(&EV, event, E_DADDR), query,
                                  int(lru_get(data, "rcode", None) or 0), tuple(answers)))
        cdef PyObject* found = PyDict_GetItemWithError(self.by_kind, kind)
        calls = self.other if found == NULL else <object>found
        if type(calls) is FlowCalls:
            (<FlowCalls>calls)._run(event)
        else:
            calls.run(event)
        return 0


def run_steps(engine, table, Py_ssize_t last, flows_of):
    """dispatch.run_steps (read it for the rules), the engine's calls made in C: per message a few
    compares and table.seq written (Engine.now too when the message's time is later), where the
    pipeline's Python loop and Engine.step ran ~5,000 instructions of bytecode. For an engine whose
    call lists are this module's (dispatch.steps_for). A Run's messages are read from its bytes in
    place: no tuple, list or number object a message (its app packets and records are made here)."""
    cdef FlowCalls flows = engine._flows
    cdef AppCalls apps = engine._apps
    cdef list out = engine._out
    cdef list app_out = out if engine.export_queries else None
    cdef list flow_out = out if engine.export_flows else None
    cdef list cmds = table.cmds
    cdef Py_ssize_t seq = table.seq, told = table.told, taken = 0
    cdef Run r
    cdef MsgHead h
    cdef Py_ssize_t at
    counters = engine.counters
    msgs = table.msgs
    popleft = msgs.popleft
    now, next_tick = engine.now, engine._next_tick
    while seq < last and msgs and PyList_GET_SIZE(out) == 0 and PyList_GET_SIZE(cmds) <= told:
        msg = msgs[0]
        if type(msg) is not tuple:
            if type(msg) is not Run:
                break  # (the readable twin's Run: the caller's loop takes it)
            r = <Run>msg
            if r.seq != seq + 1:
                break
            at = r._head(&h)
            later = h.now > <double>now
            if (h.now if later else <double>now) >= <double>next_tick:
                break  # a tick is due: Engine.step's _second, the caller's
            r._skip(at, &h)  # taken (as popleft below): past it before its step
            if r.left == 0:
                popleft()
            table.seq = seq + 1
            seq += 1
            taken += 1
            if later:
                now = h.now
                engine.now = now
            _run_parts(r.blob, at, &h, apps, app_out, flows, flow_out, counters, flows_of)
            continue
        number = msg[0]
        if number != seq + 1 or msg[1] != "a":
            break
        t = msg[2]
        later = t > now
        if (t if later else now) >= next_tick:
            break  # a tick is due: Engine.step's _second, the caller's
        popleft()
        table.seq = number
        seq += 1
        taken += 1
        if later:
            now = t
            engine.now = t
        app, recs = msg[3], msg[4]
        if app:
            apps._run_packets(app, app_out, counters)
        if recs:
            fl = flows_of(recs)
            if fl:
                flows._run_flows(fl, flow_out, counters)
    return taken


# --- the pipeline's wire: a run of plain advances in one bytes (slipsq/pipeline.py, "Wire") ------
# A run:       int64 its first message's number, uint32 how many messages; then each message:
# A message:   double now, int64 the capture's offset, uint32 app packets, uint32 bytes of records;
#              then each app packet (double ts, uint32 length, the packet), then the records.
# Native byte order, no padding: both ends are forks of one process (dispatch.pack_messages).

cdef packed struct MsgHead:
    double now
    int64_t offset
    uint32_t apps
    uint32_t recs

cdef enum:
    RUN_HEAD = 12
    APP_HEAD = 12

cdef long long MAX_NUMBER = 1LL << 62  # message numbers a run holds: below this (dispatch._plain)


cdef class Run:
    """A run of plain "a" messages as the table process sent it, taken one by one (dispatch.Run):
    `seq` is the next one's number, `left` how many are left, `now` the next one's time, `take()`
    the next one as the message tuple it stands for."""

    cdef readonly bytes blob
    cdef Py_ssize_t off           # where the next message starts
    cdef readonly long long seq
    cdef readonly Py_ssize_t left

    def __init__(self, bytes blob not None):
        cdef int64_t first
        cdef uint32_t count
        if PyBytes_GET_SIZE(blob) < RUN_HEAD:
            raise ValueError("a run of messages shorter than its head")
        memcpy(&first, PyBytes_AS_STRING(blob), 8)
        memcpy(&count, PyBytes_AS_STRING(blob) + 8, 4)
        self.blob, self.off, self.seq, self.left = blob, RUN_HEAD, first, count

    cdef Py_ssize_t _head(self, MsgHead* h) except -1:
        """The next message's head into *h; where the message starts. ValueError past the bytes."""
        if self.left <= 0 or self.off + <Py_ssize_t>sizeof(MsgHead) > PyBytes_GET_SIZE(self.blob):
            raise ValueError("a run of messages ends inside a message")
        memcpy(h, PyBytes_AS_STRING(self.blob) + self.off, sizeof(MsgHead))
        return self.off

    cdef int _skip(self, Py_ssize_t at, MsgHead* h) except -1:
        """Past the message at `at` (head *h): its app packets' and records' lengths checked."""
        cdef Py_ssize_t p = at + sizeof(MsgHead), n = PyBytes_GET_SIZE(self.blob)
        cdef uint32_t i, length
        cdef const char* b = PyBytes_AS_STRING(self.blob)
        for i in range(h.apps):  # (each length compared with what is left: no sum can wrap)
            if n - p < APP_HEAD:
                raise ValueError("a run of messages ends inside an app packet")
            memcpy(&length, b + p + 8, 4)
            if <uint64_t>length > <uint64_t>(n - p - APP_HEAD):
                raise ValueError("a run of messages ends inside an app packet")
            p += APP_HEAD + <Py_ssize_t>length
        if <uint64_t>h.recs > <uint64_t>(n - p):
            raise ValueError("a run of messages ends inside a message")
        p += <Py_ssize_t>h.recs
        self.off = p
        self.seq += 1
        self.left -= 1
        return 0

    @property
    def now(self):
        cdef MsgHead h
        self._head(&h)
        return h.now

    def take(self):
        """The next message, (number, "a", now, [(ts, packet), ...], records, offset), taken."""
        cdef MsgHead h
        cdef Py_ssize_t at = self._head(&h)
        seq = self.seq
        self._skip(at, &h)
        cdef const char* b = PyBytes_AS_STRING(self.blob)
        cdef Py_ssize_t p = at + sizeof(MsgHead)
        cdef double ts
        cdef uint32_t i
        app = []
        for i in range(h.apps):
            packet = _packet_at(b, &p, &ts)
            app.append((ts, packet))
        return (seq, "a", h.now, app, PyBytes_FromStringAndSize(b + p, h.recs), h.offset)


cdef inline bytes _packet_at(const char* b, Py_ssize_t* p, double* ts):
    """The app packet at b + *p of a message Run._skip checked: its bytes, its time in *ts; *p moved
    past it."""
    cdef uint32_t length
    memcpy(ts, b + p[0], 8)
    memcpy(&length, b + p[0] + 8, 4)
    packet = PyBytes_FromStringAndSize(b + p[0] + APP_HEAD, length)
    p[0] += APP_HEAD + length
    return packet


cdef int _run_parts(bytes blob, Py_ssize_t at, MsgHead* h, AppCalls apps, list app_out, FlowCalls flows,
                    list flow_out, object counters, object flows_of) except -1:
    """Engine.step's hand-up of the message at `at` of a run (already checked by Run._skip): its app
    packets, then its records' flows."""
    cdef const char* b = PyBytes_AS_STRING(blob)
    cdef Py_ssize_t p = at + sizeof(MsgHead)
    cdef double ts
    cdef uint32_t i
    for i in range(h.apps):
        packet = _packet_at(b, &p, &ts)
        apps._run_packet(ts, packet, app_out, counters)
    if h.recs:
        fl = flows_of(PyBytes_FromStringAndSize(b + p, h.recs))
        if fl:
            flows._run_flows(fl, flow_out, counters)
    return 0


cdef bint _int_between(object number, long long low, long long high) noexcept:
    """Whether `number` is an int (not a subclass) with low <= number <= high."""
    cdef int overflow = 0
    cdef long long x
    if type(number) is not int:
        return False
    x = PyLong_AsLongLongAndOverflow(number, &overflow)
    return overflow == 0 and low <= x <= high


cdef bint _plain(object m) noexcept:
    """Whether message `m` is a plain advance a run can hold: (number, "a", float, [(float, bytes),
    ...], bytes, int): its number in [0, 2**62), its offset in int64, its counts and lengths in
    uint32 (dispatch._plain)."""
    if type(m) is not tuple or len(<tuple>m) != 6:
        return False
    number, kind, now, app, recs, offset = <tuple>m
    # (numbers in [0, 2**62): a run's numbers and the next one's stay far from the int64 edge)
    if not (_int_between(number, 0, MAX_NUMBER - 1) and type(kind) is str and kind == "a" and type(now) is float and type(app) is list
            and len(<list>app) <= 0xFFFFFFFF and type(recs) is bytes and len(<bytes>recs) <= 0xFFFFFFFF
            and _int_between(offset, INT64_MIN, INT64_MAX)):
        return False
    for pkt in <list>app:
        if not (type(pkt) is tuple and len(<tuple>pkt) == 2 and type((<tuple>pkt)[0]) is float
                and type((<tuple>pkt)[1]) is bytes and len(<bytes>(<tuple>pkt)[1]) <= 0xFFFFFFFF):
            return False
    return True


def pack_messages(list msgs):
    """dispatch.pack_messages: `msgs` for the wire, each stretch of consecutive plain "a" messages
    as one run's bytes, any other message as it is."""
    cdef list items = []
    cdef Py_ssize_t i = 0, j, n = len(msgs), size, k
    cdef int64_t first
    cdef char* w
    cdef MsgHead h
    cdef uint32_t count, length
    cdef double ts
    while i < n:
        if not _plain(msgs[i]):
            items.append(msgs[i])
            i += 1
            continue
        first = msgs[i][0]
        j = i + 1
        while j < n and _plain(msgs[j]) and msgs[j][0] == first + (j - i):
            j += 1
        size = RUN_HEAD
        for k in range(i, j):
            m = <tuple>msgs[k]
            size += sizeof(MsgHead) + len(<bytes>m[4])
            for pkt in <list>m[3]:
                size += APP_HEAD + len(<bytes>(<tuple>pkt)[1])
        blob = PyBytes_FromStringAndSize(NULL, size)
        w = PyBytes_AS_STRING(blob)
        count = <uint32_t>(j - i)
        memcpy(w, &first, 8)
        memcpy(w + 8, &count, 4)
        w += RUN_HEAD
        for k in range(i, j):
            m = <tuple>msgs[k]
            h.now, h.offset = m[2], m[5]
            h.apps, h.recs = <uint32_t>len(<list>m[3]), <uint32_t>len(<bytes>m[4])
            memcpy(w, &h, sizeof(MsgHead))
            w += sizeof(MsgHead)
            for pkt in <list>m[3]:
                ts = (<tuple>pkt)[0]
                length = <uint32_t>len(<bytes>(<tuple>pkt)[1])
                memcpy(w, &ts, 8)
                memcpy(w + 8, &length, 4)
                memcpy(w + APP_HEAD, PyBytes_AS_STRING((<tuple>pkt)[1]), length)
                w += APP_HEAD + length
            memcpy(w, PyBytes_AS_STRING(m[4]), h.recs)
            w += h.recs
        items.append(blob)
        i = j
    return items
