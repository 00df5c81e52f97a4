"""The pure-Python flow table: the readable twin of `_flowtable.pyx`, used with SLIPSQ_PURE_PYTHON=1.

Both tables take packets, keep bidirectional flows and emit closed `Flow`s in the same order with the
same fields (a differential test feeds both the same packets). This one is the reference for the
rules; the compiled one is the fast path. It parses with `slipsq.decode.parse` (dpkt) and never
does I/O.

Rules (both tables):
* Key: protocol and the two (address, port) ends, either way round. ICMP: the two addresses, the type
  class (echo request and reply are one class, as are timestamp, information and mask request/reply;
  every other type is its own class) and the identifier (echo-like types) or the code.
* Client (`s*` side): the sender of the first packet, except that a first packet with SYN and ACK
  makes its receiver the client (it answers a SYN we did not see).
* Later IP fragments are counted in `fragments` and belong to no flow (first fragments carry ports
  and count in their flow); malformed packets are counted and belong to no flow.
* Timeout classes, each an LRU list ordered by last packet: 0 TCP not established (tcp_new_idle), 1
  TCP with packets both ways (tcp_idle), 2 TCP closing: FIN both ways or an RST (tcp_closed_linger),
  3 UDP, 4 ICMP, 5 other. When an expiry pass starts above 90% of max_flows, every idle timeout is
  multiplied by emergency_factor for that pass. A list is only read from its old end, so expiry
  costs O(flows expired).
* Expiry emits, smallest deadline first (ties: class order, then the active list), until no deadline
  has passed: idle flows (closed_by "idle", or "fin"/"rst" for closing ones), and active reports
  (a copy with closed_by "active" for a flow open active_timeout seconds; the next report is due
  active_timeout later). The table expires itself whenever packet time reaches the next whole second.
* A SYN without ACK on a closing flow emits that flow at once and starts a new one.
* At max_flows the least recently seen flow (oldest head of the class lists) is emitted, "evict".
* close_all emits in the active list's order (creation order, reported flows moved to its end).
* State: TCP "<flags from client>_<flags from server>" with letters FSRPAUEC as Argus writes them
  ("S_" is an unanswered SYN); UDP and others "CON" (both ways) or "INT"; ICMP "ECO" (unanswered
  echo-like request), "ECR" (answered, or a reply), "URP"/"URH"/"URN"/"URF"/"URO" (unreachable: port,
  host, net, filtered, other), "TXD" (time exceeded), "RED" (redirect), else CON/INT.
* `dir` is "<->" when both sides sent packets, else "->".
* App packets (ts, bytes from the IP header cut to the IP length) are handed up only for the kinds
  someone asked for (`set_app_kinds`, once, from the detectors' `app_kinds`; a table nobody asked
  hands up everything, as `APP_KINDS` all together do). A DNS packet is one with port 53 or 5353 on
  either side (TCP or UDP); "dns-queries" hands up every one, "dns" only responses (QR set) with at
  least one answer (ANCOUNT > 0; over TCP after the 2-byte length) or NXDOMAIN (RCODE 3, no answer).
  A packet from port 53 to another port that begins its flow (an answer to no query this table saw:
  forged, e.g. NXDOMAIN answers sent to get a host blocked for DGA, or the tail of an exchange begun
  before the capture) is never handed up, nor is a DNS response (QR set) on a port-53 flow that
  travels the way the flow's first packet did: an answer comes from the side that was asked, and a
  "response" a host sends toward port 53 is one it wrote itself (e.g. naming its C&C server
  time.windows.com, which beacon.allow_domains would then leave alone).
  The first TCP payload of each direction (DNS ports excluded) is classified by its first bytes:
  "banner" (login services: "SSH-", "220", TPKT with an X.224 Connection Request or Confirm,
  NetBIOS + SMB/SMB2, telnet's IAC negotiation (appdecode.telnet_start), "RFB "), "http" (a request
  method), "tls" (a ClientHello record: 0x16 0x03 .. .. .. 0x01), "tunnel" (a VPN client opening
  its tunnel: OpenVPN's hard reset, appdecode.openvpn_start), anything else no class; it is
  handed up when its class is asked for, and every one when "payload" is. ARP frames (from the ARP
  header) only when "arp" is asked for.
  `app_packets` counts what was handed up.
* Bypass (off until `set_bypass(after, max_open)`, which only the inline run mode calls): a TCP flow
  that has `after` packets each way, whose client has sent payload and PSH and whose server has too
  (or the client has sent 4 x `after` packets: an upload to a silent server), so the first payloads
  the app decoders want were seen and the flags of the flow's state are all in, not on a DNS port,
  not closing, and not carrying SYN/FIN/RST in this packet, gets the verdict BYPASS: the queue marks
  its connection and the kernel forwards the rest without queueing it. From then on it is on no idle
  list (it cannot go idle here: we no longer see its packets) and never evicted; at most `max_open`
  are bypassed at once, so the table stays bounded. The kernel still queues its SYN/FIN/RST packets:
  the first such one gets UNBYPASS (every later packet is queued again, so the close and the flow's
  last packet are seen here) and the flow takes its normal way to closing. A SYN without ACK on a
  bypassed flow is a new connection on the tuple: the old flow is emitted ("idle") and the new one
  starts, unbypassed. A flow that was ever bypassed is emitted into `held` instead of `closed`: its
  counts must first be merged with the kernel's (sources/conntrack.py), which hands it back with
  `put_closed`. `bypassed` counts flows bypassed. Its time is conntrack's too: the merger gives its
  active reports the end conntrack's timer shows, and when that end is an idle timeout ago it hands
  the report back as the idle close and `end_bypassed` forgets the flow here.
  The switch waits for a drained queue (`set_bypass_gate`, which the NFQUEUE source sets): once the
  kernel marks the connection, its next packets are forwarded at once, overtaking any of its packets
  still waiting in the queue; the receiver sees them out of order, and a TCP sender retransmits what
  looks lost (namespace lab, 20 MB upload: a burst of 45-180 segments in 6 of 21 uploads; conntrack
  counts them too; with the wait below, 8 of 79). So a flow that is ready switches only on a packet
  the gate lets through (the queue held no packet at the gate's look, while this one was being
  handled: none of the flow's can be left behind, but for one that arrives between the look and the
  mark), and otherwise waits for its next packet, `BYPASS_MAX_WAITS` packets at most; then it
  switches anyway (a queue that never drains is the load bypass is for). `bypass_waits` counts the
  packets that waited, `bypass_forced` the flows that switched with packets queued, `bypass_late`
  the packets of a bypassed flow that were queued before the kernel saw its mark (the ones its
  forwarded packets may have overtaken).
"""

from __future__ import annotations

import ipaddress
import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

from slipsq.appdecode import (
    APP_KINDS,
    HTTP_METHODS,
    app_kinds_of,
    app_mask,
    openvpn_start,
    rdp_start,
    smb_start,
    telnet_start,
)
from slipsq.config import Config
from slipsq.decode import DNS_PORTS, Packet, ip_str, parse
from slipsq.flow import Flow, proto_name

ACCEPT, DROP = 1, 0
BYPASS, UNBYPASS = 2, 3  # accept and mark the connection bypassed in the kernel / clear that mark
BYPASSED = -2  # _Entry.cls of a bypassed flow: on no idle list, its packets pass the queue by
FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10
FLAG_LETTERS = ((0x01, "F"), (0x02, "S"), (0x04, "R"), (0x08, "P"), (0x10, "A"), (0x20, "U"),
                (0x40, "E"), (0x80, "C"))
ICMP4_CLASS = {8: 1, 0: 1, 13: 2, 14: 2, 15: 3, 16: 3, 17: 4, 18: 4}
ICMP6_CLASS = {128: 1, 129: 1}
STAT_KEYS = ("packets", "bytes", "non_ip", "malformed", "fragments", "dropped", "flows_open",
             "flows_closed", "evicted", "app_packets", "arp", "bypassed", "bypass_waits", "bypass_forced",
             "bypass_late")
BYPASS_MAX_WAITS = 128  # packets a flow ready for bypass waits for a drained queue (set_bypass_gate)
N_CLASSES = 6
ACTIVE = N_CLASSES  # index of the active-report list in tie-breaking
MAX_FLOWS_CAP = 0x7FFFFFFF  # the compiled table finds flows by uint32 index
# app kinds and their bits (appdecode.APP_KINDS; the compiled table uses the same bits)
APP_DNS, APP_DNS_ALL, APP_BANNER, APP_TLS, APP_HTTP, APP_ARP, APP_PAYLOAD, APP_TUNNEL = APP_KINDS.values()
APP_ALL = sum(APP_KINDS.values())


def dns_header(buf: bytes, p: Packet, need: int) -> int:
    """Where the DNS header starts (after TCP's 2-byte length), or -1 when fewer than `need` bytes
    of it are there."""
    end = min(len(buf), p.ip_off + p.ip_len)
    pos = p.ip_off + p.ip_len - p.payload_len + (2 if p.proto == 6 else 0)
    return pos if end - pos >= need else -1


def dns_response(buf: bytes, p: Packet) -> bool:
    """A DNS message with QR set (a response), whatever it answers."""
    pos = dns_header(buf, p, 3)
    return pos >= 0 and bool(buf[pos + 2] & 0x80)


def dns_answer(buf: bytes, p: Packet) -> bool:
    """A DNS response (QR set) with at least one answer, or an NXDOMAIN one (rcode 3, for the DGA
    detector): the header read where the payload starts."""
    pos = dns_header(buf, p, 8)
    return pos >= 0 and bool(buf[pos + 2] & 0x80) and (
        (buf[pos + 6] | buf[pos + 7]) != 0 or (buf[pos + 3] & 0xF) == 3)


def first_payload_class(buf: bytes, p: Packet) -> int:
    """The app kind bit of a connection's first payload from its first bytes (0: none of ours).
    Same tests as `appdecode.service` for the login services, plus VNC's "RFB "."""
    pos = p.ip_off + p.ip_len - p.payload_len
    end = min(len(buf), p.ip_off + p.ip_len)
    b = bytes(buf[pos:end][:8])
    if not b:
        return 0
    if b.startswith((b"SSH-", b"220", b"RFB ")) or telnet_start(b):
        return APP_BANNER
    if rdp_start(b):
        return APP_BANNER  # TPKT, then an X.224 Connection Request or Confirm: RDP
    if smb_start(b):
        return APP_BANNER
    if b.startswith(HTTP_METHODS):
        return APP_HTTP
    if len(b) >= 6 and b[0] == 0x16 and b[1] == 3 and b[5] == 1:
        return APP_TLS
    if openvpn_start(b, end - pos):
        return APP_TUNNEL  # an OpenVPN client's hard reset: its server is a VPN's
    return 0


def icmp_class(proto: int, itype: int) -> int:
    """Request and reply share a class; every other type is a class of its own (256 + type)."""
    return (ICMP4_CLASS if proto == 1 else ICMP6_CLASS).get(itype, 256 + itype)


def flags_str(flags: int) -> str:
    return "".join(c for bit, c in FLAG_LETTERS if flags & bit)


def icmp_state(proto: int, itype: int, code: int, answered: bool) -> str:
    if proto == 1:
        request, reply = itype in (8, 13, 15, 17), itype in (0, 14, 16, 18)
        unreach, timex, redirect = 3, 11, 5
        codes = {3: "URP", 1: "URH", 0: "URN", 13: "URF"}
    else:
        request, reply = itype == 128, itype == 129
        unreach, timex, redirect = 1, 3, 137
        codes = {4: "URP", 3: "URH", 0: "URN", 1: "URF"}
    if request:
        return "ECR" if answered else "ECO"
    if reply:
        return "ECR"
    if itype == unreach:
        return codes.get(code, "URO")
    if itype == timex:
        return "TXD"
    if itype == redirect:
        return "RED"
    return "CON" if answered else "INT"


def _gate_open(gate: Callable[[], bool]) -> bool:
    """A bypass gate's answer. One that raises is reported through sys.unraisablehook and counts as
    closed (the flow waits, at most BYPASS_MAX_WAITS packets): the packet still gets its verdict, as
    in the compiled table, whose gate is called where nothing can propagate."""
    try:
        return bool(gate())
    except Exception as e:
        sys.unraisablehook(SimpleNamespace(exc_type=type(e), exc_value=e, exc_traceback=e.__traceback__,
                                           err_msg="slipsq: the bypass gate failed", object=gate))
        return False


class _Entry:
    __slots__ = ("a", "abytes", "active_due", "aflags", "apkts", "atos", "b", "bbytes", "bflags", "bpkts",
                 "btos", "bypass", "bypass_waits", "closing", "cls", "first", "key", "last", "pa", "pb", "proto",
                 "seen")

    def __init__(self, key: tuple[Any, ...], p: Packet, ts: float, swap: bool, active_due: float) -> None:
        self.key = key
        self.proto = p.proto
        if swap:
            self.a, self.pa, self.b, self.pb = p.dst, p.dport, p.src, p.sport
        else:
            self.a, self.pa, self.b, self.pb = p.src, p.sport, p.dst, p.dport
        self.first = self.last = ts
        self.apkts = self.bpkts = self.abytes = self.bbytes = self.aflags = self.bflags = 0
        self.atos = self.btos = 0
        self.closing = ""      # "", "fin" or "rst"
        self.seen = 0          # bit 0: client sent payload, bit 1: server sent payload
        self.bypass = 0        # 0 never, 1 bypassed now, 2 bypassed until a FIN/RST/SYN
        self.bypass_waits = 0  # packets that found it ready for bypass but the queue not drained
        self.cls = -1
        self.active_due = active_due


class FlowTable:
    """Bidirectional flows from packets; see the module docstring for every rule."""

    bytes_per_flow = 700  # measured with tracemalloc (tests/test_flowtable.py): Python objects per flow

    def __init__(self, config: Config) -> None:
        o = config.section("flowtable")
        self.idle = (o["tcp_new_idle"], o["tcp_idle"], o["tcp_closed_linger"], o["udp_idle"],
                     o["icmp_idle"], o["other_idle"])
        self.active_timeout: float = o["active_timeout"]
        self.max_flows: int = min(o["max_flows"], MAX_FLOWS_CAP)
        self.emergency_factor: float = o["emergency_factor"]
        self.expire_batch: int = o["expire_batch"]
        self.behind = False  # the last expiry pass stopped at expire_batch with more due
        self.flows: dict[tuple[Any, ...], _Entry] = {}
        self.lists: list[OrderedDict[tuple[Any, ...], _Entry]] = [OrderedDict() for _ in range(N_CLASSES)]
        self.active: OrderedDict[tuple[Any, ...], _Entry] = OrderedDict()
        self.blocked: set[bytes] = set()
        self.closed: list[Flow] = []
        self.app: list[tuple[float, bytes]] = []
        self.counts = dict.fromkeys(STAT_KEYS, 0)
        self.app_mask = APP_ALL
        self.now = -math.inf
        self.next_expire = -math.inf
        self.bypass_after = 0
        self.bypass_max = 0
        self.bypass_open = 0
        self.bypass_gate: Callable[[], bool] | None = None
        self.held: list[Flow] = []

    # --- packets ------------------------------------------------------------------------------
    def feed(self, buf: bytes, ts: float, linktype: int) -> int:
        c = self.counts
        c["packets"] += 1
        ts = float(ts)  # the compiled table keeps C doubles
        if ts > self.now:
            self.now = ts
        if ts >= self.next_expire:
            self._expire(ts)
            self.next_expire = ts + 0.1 if self.behind else math.floor(ts) + 1.0  # see the compiled twin
        p = parse(buf, linktype)
        if p.arp:
            c["arp"] += 1
            if self.app_mask & APP_ARP:
                c["app_packets"] += 1
                self.app.append((ts, bytes(buf[p.ip_off:])))
            return ACCEPT
        if p.family == 0:
            c["malformed" if p.malformed else "non_ip"] += 1
            return ACCEPT
        if self.blocked and (p.src in self.blocked or p.dst in self.blocked):
            c["dropped"] += 1
            return DROP
        if p.malformed:
            c["malformed"] += 1
            return ACCEPT
        if p.frag:
            c["fragments"] += 1
            if p.frag == 2:
                return ACCEPT
        c["bytes"] += p.ip_len
        return self._update(p, ts, buf)

    def _key(self, p: Packet) -> tuple[Any, ...]:
        if (p.proto == 1 and p.family == 4) or (p.proto == 58 and p.family == 6):
            a, b = sorted((p.src, p.dst))
            return (p.proto, a, b, icmp_class(p.proto, p.sport), p.dport)
        lo, hi = sorted(((p.src, p.sport), (p.dst, p.dport)))
        return (p.proto, lo, hi)

    def _update(self, p: Packet, ts: float, buf: bytes) -> int:
        key = self._key(p)
        e = self.flows.get(key)
        verdict = ACCEPT
        syn_only = p.proto == 6 and p.tcp_flags & (SYN | ACK) == SYN
        if e is not None and (e.closing or e.bypass == 1) and syn_only:
            if e.bypass == 1:
                verdict = UNBYPASS  # a new connection on a bypassed tuple: queue it from the start
            self._emit(e, e.closing or "idle")
            self._remove(e)
            e = None
        if e is None:
            if len(self.flows) >= self.max_flows:
                self._evict()
            swap = p.proto == 6 and p.tcp_flags & (SYN | ACK) == SYN | ACK
            e = _Entry(key, p, ts, swap, ts + self.active_timeout)
            self.flows[key] = e
            self.active[key] = e
        icmp = len(key) == 5
        if icmp:
            forward = p.src == e.a
        else:
            forward = p.src == e.a and p.sport == e.pa
        if forward:
            e.apkts += 1
            e.abytes += p.ip_len
            e.aflags |= p.tcp_flags
            if e.apkts == 1:
                e.atos = p.tos
        else:
            e.bpkts += 1
            e.bbytes += p.ip_len
            e.bflags |= p.tcp_flags
            if e.bpkts == 1:
                e.btos = p.tos
        if ts > e.last:
            e.last = ts
        proto = e.proto
        if proto == 6:
            if not e.closing:
                if (e.aflags | e.bflags) & RST:
                    e.closing = "rst"
                elif e.aflags & FIN and e.bflags & FIN:
                    e.closing = "fin"
            cls = 2 if e.closing else 1 if e.apkts and e.bpkts else 0
        else:
            cls = 3 if proto == 17 else 4 if icmp else 5
        if self.bypass_after and proto == 6:
            v = self._bypass_verdict(e, p)
            if v != ACCEPT:
                verdict = v
        if e.cls >= 0:
            del self.lists[e.cls][key]
        if e.bypass == 1:
            e.cls = BYPASSED
        else:
            e.cls = cls
            self.lists[cls][key] = e
        if proto in (6, 17):
            mask = self.app_mask
            hand_up = False
            if p.sport in DNS_PORTS or p.dport in DNS_PORTS:
                # on port 53, what travels the way the flow's first packet did is never an answer:
                # from port 53 it began its flow (no query seen), a response toward port 53 the
                # host wrote itself
                if not (forward and ((p.sport == 53 and p.dport != 53) or (
                        53 in (p.sport, p.dport) and dns_response(buf, p)))):
                    hand_up = bool(mask & APP_DNS_ALL) or (bool(mask & APP_DNS) and dns_answer(buf, p))
            elif proto == 6 and p.payload_len > 0:
                bit = 1 if forward else 2
                if not e.seen & bit:
                    e.seen |= bit  # the first payload, handed up or not: later ones are not first
                    hand_up = bool(mask & APP_PAYLOAD) or bool(first_payload_class(buf, p) & mask)
            if hand_up:
                self.counts["app_packets"] += 1
                self.app.append((ts, bytes(buf[p.ip_off:p.ip_off + p.ip_len])))
        return verdict

    def _bypass_verdict(self, e: _Entry, p: Packet) -> int:
        """See "Bypass" in the module docstring. Why these conditions: `after` packets each way
        covers the handshake and the first exchanges the app decoders and banner checks read; the
        client's payload must have been seen (an idle-open connection is never bypassed before it
        says anything), with its PSH flag; the server's too, unless the client has sent 4 x
        `after` packets without an answer (an upload): a flag first set in the bypassed middle
        would be missing from the flow's state (PSH is the one every talking side sets); DNS never
        (every answer feeds ctx.dns_names); SYN/FIN/RST never, so the kernel rule (which matches no
        such packet) and this table agree on what is seen."""
        flags = p.tcp_flags
        if e.bypass == 1:
            if flags & (FIN | RST | SYN):
                e.bypass = 2
                self.bypass_open -= 1
                return UNBYPASS
            self.counts["bypass_late"] += 1  # queued before the kernel saw the mark: the flow's forwarded
            return ACCEPT                    # packets may have overtaken it (counted here and by conntrack)
        if (e.bypass == 0 and not e.closing and not flags & (FIN | RST | SYN)
                and e.apkts >= self.bypass_after and e.bpkts >= self.bypass_after
                and e.seen & 1 and e.aflags & PSH
                and ((e.seen & 2 and e.bflags & PSH) or (not e.seen & 2 and e.apkts >= 4 * self.bypass_after))
                and self.bypass_open < self.bypass_max
                and p.sport not in DNS_PORTS and p.dport not in DNS_PORTS):
            if self.bypass_gate is not None and not _gate_open(self.bypass_gate):
                if e.bypass_waits < BYPASS_MAX_WAITS:
                    e.bypass_waits += 1
                    self.counts["bypass_waits"] += 1
                    return ACCEPT
                self.counts["bypass_forced"] += 1
            e.bypass = 1
            self.bypass_open += 1
            self.counts["bypassed"] += 1
            return BYPASS
        return ACCEPT

    # --- time ---------------------------------------------------------------------------------
    def expire(self, now: float) -> None:
        now = float(now)
        if now > self.now:
            self.now = now
        self._expire(now)

    @property
    def expiry_behind(self) -> bool:
        return self.behind

    def _expire(self, now: float) -> None:
        active_timeout = self.active_timeout
        # decided once per pass: an emergency pass runs until the emergency timeouts are met
        factor = self.emergency_factor if len(self.flows) * 10 > self.max_flows * 9 else 1.0
        self.behind = False
        emitted = 0
        while True:
            best, best_due = -1, math.inf
            for i, lst in enumerate(self.lists):
                if lst:
                    e = next(iter(lst.values()))
                    due = e.last + self.idle[i] * factor
                    if due < best_due:
                        best, best_due = i, due
            if self.active:
                e = next(iter(self.active.values()))
                if e.active_due < best_due:
                    best, best_due = ACTIVE, e.active_due
            if best < 0 or best_due > now:
                return
            if emitted >= self.expire_batch:
                self.behind = True
                return
            emitted += 1
            if best == ACTIVE:
                e = next(iter(self.active.values()))
                self._emit(e, "active")
                e.active_due = now + active_timeout
                self.active.move_to_end(e.key)
            else:
                e = next(iter(self.lists[best].values()))
                self._emit(e, e.closing or "idle")
                self._remove(e)

    def close_all(self, now: float) -> None:
        if now > self.now:
            self.now = now
        for e in list(self.active.values()):
            self._emit(e, e.closing or "end")
            self._remove(e)

    def _evict(self) -> None:
        best: _Entry | None = None
        for lst in self.lists:
            if lst:
                e = next(iter(lst.values()))
                if best is None or e.last < best.last:
                    best = e
        if best is not None:
            self.counts["evicted"] += 1
            self._emit(best, "evict")
            self._remove(best)

    def _remove(self, e: _Entry) -> None:
        del self.flows[e.key]
        del self.active[e.key]
        if e.bypass == 1:
            self.bypass_open -= 1
        if e.cls >= 0:
            del self.lists[e.cls][e.key]

    def _emit(self, e: _Entry, closed_by: str) -> None:
        if closed_by != "active":
            self.counts["flows_closed"] += 1
        proto = e.proto
        if proto == 6:
            state = flags_str(e.aflags) + "_" + flags_str(e.bflags)
        elif len(e.key) == 5:
            state = icmp_state(proto, e.pa, e.pb, e.bpkts > 0)
        else:
            state = "CON" if e.apkts and e.bpkts else "INT"
        (self.held if e.bypass else self.closed).append(Flow(
            start=e.first, end=e.last, proto=proto_name(proto), saddr=ip_str(e.a), sport=e.pa,
            daddr=ip_str(e.b), dport=e.pb, spkts=e.apkts, dpkts=e.bpkts, sbytes=e.abytes,
            dbytes=e.bbytes, state=state, dir="<->" if e.apkts and e.bpkts else "->", stos=e.atos,
            dtos=e.btos, closed_by=closed_by))

    # --- results ------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self.closed or self.app)

    def pop_closed(self) -> list[Flow]:
        out, self.closed = self.closed, []
        return out

    def pop_app(self) -> list[tuple[float, bytes]]:
        out, self.app = self.app, []
        return out

    def set_bypass(self, after: int, max_open: int) -> None:
        """Bypass TCP flows after `after` packets each way (0: never), at most `max_open` at once."""
        self.bypass_after = max(0, after)
        self.bypass_max = max(0, max_open)

    def set_bypass_gate(self, gate: Callable[[], bool] | None) -> None:
        """`gate()`: may a flow that is ready for bypass switch now? The NFQUEUE source answers True
        only while its queue holds no packet (see "Bypass" in the module docstring); None: always."""
        self.bypass_gate = gate

    @property
    def bypass_gated(self) -> bool:
        """Whether a gate holds ready flows back."""
        return self.bypass_gate is not None

    def pop_held(self) -> list[Flow]:
        out, self.held = self.held, []
        return out

    def put_closed(self, flow: Flow) -> None:
        """A held flow, its counts merged: analysed like any closed flow from now on."""
        self.closed.append(flow)

    def end_bypassed(self, saddr: str, sport: int, daddr: str, dport: int) -> bool:
        """Forget the bypassed TCP flow of this connection without emitting it. The conntrack merger
        calls it when the kernel's timer shows the connection silent for an idle timeout: without
        bypass this table would have closed it as idle, and with bypass it cannot (it sees none of
        the packets, and none stop coming), so the merger hands the flow's last report back as that
        idle close. True when such a flow was open."""
        try:
            a, b = ipaddress.ip_address(saddr).packed, ipaddress.ip_address(daddr).packed
        except ValueError:
            return False
        lo, hi = sorted(((a, sport), (b, dport)))
        e = self.flows.get((6, lo, hi))
        if e is None or e.bypass != 1:
            return False
        self.counts["flows_closed"] += 1
        self._remove(e)
        return True

    def set_app_kinds(self, kinds: Iterable[str]) -> None:
        """Hand up from now on only the app packets of these kinds (see APP_KINDS)."""
        self.app_mask = app_mask(kinds)

    @property
    def app_kinds(self) -> frozenset[str]:
        return app_kinds_of(self.app_mask)

    # --- blocked addresses --------------------------------------------------------------------
    def block(self, ip: str) -> None:
        self.blocked.add(ipaddress.ip_address(ip).packed)

    def unblock(self, ip: str) -> None:
        self.blocked.discard(ipaddress.ip_address(ip).packed)

    def is_blocked(self, ip: str) -> bool:
        return ipaddress.ip_address(ip).packed in self.blocked

    def stats(self) -> dict[str, int]:
        out = dict(self.counts)
        out["flows_open"] = len(self.flows)
        return out
