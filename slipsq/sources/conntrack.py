"""Conntrack, for flow bypass: the counts of the packets that passed slipsq by.

A bypassed TCP flow (see "Bypass" in slipsq/flowtable.py) is forwarded by the kernel without being
queued once its first packets were seen, so the flow table only counts its prefix (and its
SYN/FIN/RST packets and whatever follows them, which are queued again). When the table emits such a
flow it holds it (`pop_held`); this module asks conntrack for the connection's counters
(nf_conntrack_acct) and hands the flow back (`put_closed`) with the kernel's counts, so the flow the
detectors see has the same packets and bytes as without bypass. Its start, end and flags were seen
by the table itself.

Library: pyroute2 (kept, pure Python, already the usual netlink library on Debian) encodes the
request and decodes the answer (`nfct_msg`); the socket is a plain non-blocking netlink socket of
our own, because pyroute2 0.9's sockets run their own asyncio loop and this module must be one more
fd in the packet loop's poll: it never waits on I/O. A request whose answer does not come within
`bypass.merge_timeout` seconds, or that conntrack answers with an error (the entry is gone: NAT
rewrote the tuple, or accounting was off when the connection began), gives the flow back with the
table's own counts and is counted as `unmerged`: never a lost flow.

Time, too: the table sees none of a bypassed connection's middle, so the end of its active-timeout
reports would be the last packet queued (long connections would look short), and a connection that
falls silent without FIN or RST would be reported again every active timeout instead of closing as
idle. Conntrack knows: every packet of an ESTABLISHED connection restarts its timer at
nf_conntrack_tcp_timeout_established, so the timer's remaining seconds (CTA_TIMEOUT) tell when the
last packet passed (`last_packet`, to a second). A report gets that end; a report whose connection
has been silent for `flowtable.tcp_idle` becomes the idle close the table would have made (the table
forgets the flow: `end_bypassed`).

Pending requests are bounded (`MAX_PENDING`, oldest given back first when full), O(1) each.
This module decides nothing about traffic.
"""

from __future__ import annotations

import dataclasses
import errno
import math
import select
import socket
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipsq.addr import parse_ip_int
from slipsq.errors import SystemSetupError
from slipsq.flow import Flow

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET = 0, 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
MAX_PENDING = 65_536
ACCT_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_acct"
TCP_SYSCTL = "/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_"
TCP_CONNTRACK_ESTABLISHED = 3


@dataclass(frozen=True)
class Counters:
    """One conntrack entry's counters: `orig` is the direction of its first packet (saddr:sport)."""

    saddr: str
    sport: int
    orig_pkts: int
    orig_bytes: int
    reply_pkts: int
    reply_bytes: int
    timeout: int | None = None  # CTA_TIMEOUT, seconds left, of an ESTABLISHED connection (else None)


@dataclass(frozen=True)
class Timers:
    """This namespace's conntrack TCP timeouts (seconds) that `last_packet` reads the timer by."""

    established: int
    short: int  # the longer of unacknowledged and max_retrans: a timer at or under it says nothing

    @classmethod
    def read(cls, prefix: str = TCP_SYSCTL) -> Timers | None:
        try:
            est, unack, retrans = (int(Path(prefix + name).read_text()) for name in
                                   ("established", "unacknowledged", "max_retrans"))
        except (OSError, ValueError):
            return None
        return cls(est, max(unack, retrans))


def last_packet(c: Counters, now: float, timers: Timers) -> float | None:
    """When the connection's last packet passed, from its conntrack timer: each packet of an
    ESTABLISHED connection sets it to `established`, so it was `established - timeout` seconds ago.
    None when the timer cannot tell: not ESTABLISHED, or at most `short` left (conntrack shortens
    the timer of a connection with unacknowledged data or retransmissions, so it reads as both
    recent and long ago)."""
    if c.timeout is None or not timers.short < c.timeout <= timers.established:
        return None
    return now - (timers.established - c.timeout)


def merge(flow: Flow, c: Counters | None) -> Flow:
    """The flow with the kernel's counts. Conntrack counts every packet of the connection, queued
    or not, so each count is the larger of the two (the table's is larger only for packets the
    table counted that conntrack had not yet, i.e. never by more than a packet in flight)."""
    if c is None:
        return flow
    same = parse_ip_int(c.saddr) == parse_ip_int(flow.saddr) and c.sport == flow.sport
    sp, sb, dp, db = ((c.orig_pkts, c.orig_bytes, c.reply_pkts, c.reply_bytes) if same
                      else (c.reply_pkts, c.reply_bytes, c.orig_pkts, c.orig_bytes))
    spkts, dpkts = max(flow.spkts, sp), max(flow.dpkts, dp)
    return dataclasses.replace(flow, spkts=spkts, dpkts=dpkts, sbytes=max(flow.sbytes, sb),
                               dbytes=max(flow.dbytes, db), dir="<->" if spkts and dpkts else "->")


def get_request(seq: int, flow: Flow) -> bytes:
    """IPCTNL_MSG_CT_GET for the flow's connection, by its original tuple (the client's side)."""
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple, nfct_msg

    family = socket.AF_INET6 if ":" in flow.saddr else socket.AF_INET
    t = NFCTAttrTuple(family=family, saddr=flow.saddr, daddr=flow.daddr, proto=6, sport=flow.sport,
                      dport=flow.dport)
    msg = nfct_msg()
    msg["header"]["type"] = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET
    msg["header"]["flags"] = NLM_F_REQUEST
    msg["header"]["sequence_number"] = seq
    msg["nfgen_family"] = family
    msg["attrs"] = [["CTA_TUPLE_ORIG", {"attrs": t.attrs()}]]
    msg.encode()
    return bytes(msg.data)


def parse_answers(data: bytes) -> list[tuple[int, Counters | None]]:
    """(sequence number, counters) per netlink message in `data`; None for an error answer or an
    entry without counters. Truncated or malformed input ends the list, never raises."""
    from pyroute2.netlink.nfnetlink.nfctsocket import nfct_msg

    out: list[tuple[int, Counters | None]] = []
    pos = 0
    while pos + 16 <= len(data):
        length, mtype, _flags, seq = struct.unpack_from("=IHHI", data, pos)
        if length < 16 or pos + length > len(data):
            break
        if mtype == NLMSG_ERROR:
            out.append((seq, None))
        elif mtype == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW:
            out.append((seq, _counters(nfct_msg, data[pos:pos + length])))
        pos += (length + 3) & ~3
    return out


def _counters(cls: Any, raw: bytes) -> Counters | None:
    try:
        m = cls(raw)
        m.decode()
        tup = m.get_attr("CTA_TUPLE_ORIG")
        ip, proto = tup.get_attr("CTA_TUPLE_IP"), tup.get_attr("CTA_TUPLE_PROTO")
        saddr = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
        co, cr = m.get_attr("CTA_COUNTERS_ORIG"), m.get_attr("CTA_COUNTERS_REPLY")
        if co is None or cr is None or saddr is None:
            return None
        info = m.get_attr("CTA_PROTOINFO")
        tcp = info.get_attr("CTA_PROTOINFO_TCP") if info is not None else None
        established = tcp is not None and tcp.get_attr("CTA_PROTOINFO_TCP_STATE") == TCP_CONNTRACK_ESTABLISHED
        timeout = m.get_attr("CTA_TIMEOUT") if established else None
        return Counters(str(saddr), int(proto.get_attr("CTA_PROTO_SRC_PORT")),
                        int(co.get_attr("CTA_COUNTERS_PACKETS")), int(co.get_attr("CTA_COUNTERS_BYTES")),
                        int(cr.get_attr("CTA_COUNTERS_PACKETS")), int(cr.get_attr("CTA_COUNTERS_BYTES")),
                        None if timeout is None else int(timeout))
    except Exception:  # pyroute2 raises various kinds on a message it cannot decode
        return None


def enable_accounting(path: str = ACCT_SYSCTL) -> None:
    """nf_conntrack_acct=1 in this network namespace (a per-namespace sysctl): without it conntrack
    keeps no counters, and only connections that begin after it is on have them."""
    try:
        with open(path) as fh:
            if fh.read().strip() == "1":
                return
        with open(path, "w") as fh:
            fh.write("1\n")
    except OSError as e:
        raise SystemSetupError(f"bypass needs conntrack accounting, and {path} cannot be set: {e} "
                               "(set bypass.enabled = false, or load nf_conntrack)") from None


class Merger:
    """Gives the table's held (bypassed) flows back with the kernel's counts. `poll(now)` from the
    packet loop: never blocks; `fd` belongs in its poll set."""

    def __init__(self, table: Any, timeout: float = 1.0, max_pending: int = MAX_PENDING, *,
                 idle: float = math.inf, timers: Timers | None = None) -> None:
        """`idle`: flowtable.tcp_idle; `timers`: conntrack's (None: unknown, so reports keep the
        table's end and are never closed here)."""
        self.table = table
        self.timeout = timeout
        self.max_pending = max_pending
        self.idle, self.timers = idle, timers
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            self.sock.bind((0, 0))
            self.sock.setblocking(False)
        except OSError as e:
            raise SystemSetupError(f"cannot open a conntrack netlink socket: {e}") from None
        self._waiting = select.poll()  # the socket holds answers (or an error): _read reads it then
        self._waiting.register(self.sock.fileno(), select.POLLIN)
        self.pending: OrderedDict[int, tuple[Flow, float]] = OrderedDict()
        self.seq = 0
        self.merged = self.unmerged = self.ended_idle = 0

    @property
    def fd(self) -> int:
        return self.sock.fileno()

    def poll(self, now: float) -> int:
        """Answers in, held flows out as requests, late ones given back as they are. Returns how
        many flows went back to the table."""
        back = self._read(now)
        for flow in self.table.pop_held():
            if len(self.pending) >= self.max_pending:
                self._give_back(self.pending.popitem(last=False)[1][0], None, now)
                back += 1
            self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
            try:
                self.sock.send(get_request(self.seq, flow))
            except OSError:  # EAGAIN, ENOBUFS: never wait; the flow goes on with what the table has
                self._give_back(flow, None, now)
                back += 1
                continue
            self.pending[self.seq] = (flow, now + self.timeout)
        while self.pending:
            seq, (flow, due) = next(iter(self.pending.items()))
            if due > now:
                break
            del self.pending[seq]
            self._give_back(flow, None, now)
            back += 1
        return back

    def flush(self) -> None:
        """At stop: every flow still held or waiting goes back as it is."""
        for flow, _ in self.pending.values():
            self._give_back(flow, None, 0.0)
        self.pending.clear()
        for flow in self.table.pop_held():
            self._give_back(flow, None, 0.0)

    def _read(self, now: float) -> int:
        back = 0
        if not self._waiting.poll(0):  # most turns of the packet loop: no recv, nor its BlockingIOError
            return back
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return back
            except OSError as e:
                if e.errno == errno.ENOBUFS:  # answers were lost: their flows time out to "unmerged"
                    continue
                return back
            for seq, counters in parse_answers(data):
                item = self.pending.pop(seq, None)
                if item is not None:
                    self._give_back(item[0], counters, now)
                    back += 1

    def _give_back(self, flow: Flow, counters: Counters | None, now: float) -> None:
        if counters is None:
            self.unmerged += 1
        else:
            self.merged += 1
            flow = merge(flow, counters)
            if flow.is_report and self.timers is not None:
                flow = self._timed(flow, counters, now, self.timers)
        self.table.put_closed(flow)

    def _timed(self, report: Flow, c: Counters, now: float, timers: Timers) -> Flow:
        """A bypassed flow's report, its end read off conntrack's timer (see the module doc); the
        idle close instead when that end is an idle timeout ago."""
        last = last_packet(c, now, timers)
        if last is None:
            return report
        if last > report.end:
            report = dataclasses.replace(report, end=min(last, now))
        if now - report.end >= self.idle and self.table.end_bypassed(report.saddr, report.sport, report.daddr,
                                                                     report.dport):
            self.ended_idle += 1
            return dataclasses.replace(report, closed_by="idle")
        return report

    def stats(self) -> dict[str, int]:
        return {"merged": self.merged, "unmerged": self.unmerged, "waiting": len(self.pending),
                "ended_idle": self.ended_idle}

    def status(self, queue: dict[str, int]) -> dict[str, int]:
        """`slipsq status`'s bypass counters: flows bypassed, of those switched before the queue
        drained (`forced`), packets queued before the kernel saw a switch's mark (`late`; the
        table's counts), merges, and the marks its queue (`queue`: the source's stats) set."""
        t = self.table.stats()
        return {"bypassed": t["bypassed"], "forced": t["bypass_forced"], "late": t["bypass_late"], **self.stats(),
                "marks": queue["bypass_marks"],
                "unmarks": queue["unbypass_marks"], "mark_errors": queue["mark_errors"]}

    def close(self) -> None:
        self.flush()
        self.sock.close()


def marks(cfg: Any) -> tuple[int, int]:
    """(bypass.mark, bypass.repeat_mark), refused with a message when they share a bit."""
    mark, repeat = int(cfg["bypass.mark"]), int(cfg["bypass.repeat_mark"])
    if mark & repeat or mark > 0xFFFFFFFF or repeat > 0xFFFFFFFF:
        raise SystemSetupError(f"bypass.mark {mark:#x} and bypass.repeat_mark {repeat:#x} must be distinct "
                               "32-bit masks that share no bit")
    return mark, repeat


def bypass_settings(cfg: Any) -> dict[str, Any] | None:
    """What bypass needs, checked and prepared once for the daemon (None when bypass.enabled is
    off): the marks, conntrack loaded and accounting on in this network namespace. Plain numbers,
    so they can also cross the wire to queue workers (`start_merger` in each)."""
    if not cfg["bypass.enabled"]:
        return None
    mark, repeat = marks(cfg)
    # a request loads nf_conntrack_netlink (and nf_conntrack) when they are modules, so the
    # accounting sysctl exists
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as s:
            s.bind((0, 0))
            s.send(get_request(0, Flow(0.0, 0.0, "tcp", "0.0.0.0", 0, "0.0.0.0", 0)))
    except OSError as e:
        raise SystemSetupError(f"cannot open a conntrack netlink socket: {e}") from None
    enable_accounting()
    return {"after": int(cfg["bypass.after"]),
            "max_open": min(int(cfg["bypass.max_open"]), int(cfg["flowtable.max_flows"]) // 2),
            "merge_timeout": float(cfg["bypass.merge_timeout"]), "idle": float(cfg["flowtable.tcp_idle"]),
            "mark": mark, "repeat": repeat}


def start_merger(settings: dict[str, Any], table: Any) -> Merger:
    """Bypass on `table` (the daemon's, or a queue worker's own) with `bypass_settings`: its bypass
    rule and its conntrack merger."""
    merger = Merger(table, float(settings["merge_timeout"]), idle=float(settings["idle"]), timers=Timers.read())
    table.set_bypass(int(settings["after"]), int(settings["max_open"]))
    return merger


def start_bypass(cfg: Any, table: Any) -> Merger | None:
    """Bypass on `table` as configured (None when bypass.enabled is off)."""
    settings = bypass_settings(cfg)
    return None if settings is None else start_merger(settings, table)


def accounting_on(path: str = ACCT_SYSCTL) -> bool:
    try:
        with open(path) as fh:
            return fh.read().strip() == "1"
    except OSError:
        return False


__all__ = ["Counters", "Merger", "accounting_on", "enable_accounting", "get_request", "merge",
           "parse_answers"]
