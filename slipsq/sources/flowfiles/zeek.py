"""Zeek logs: conn.log gives flows, dns.log gives "dns" AppEvents; TSV (with its `#` header) or JSON lines.

Sizes: letters.md defines a flow's size as the sum of the IP total lengths of its packets, both
directions. Zeek's `orig_ip_bytes + resp_ip_bytes` are exactly that (IP header included, no link
layer), so they are what slipsq uses; `orig_bytes`/`resp_bytes` are payload bytes (taken from TCP
sequence numbers, unset for short connections, inflated by gaps) and are used only by a log that
lacks the `*_ip_bytes` columns. Other mappings: duration `-` → 0, conn_state → state, ICMP type and
code stay in sport and dport (Zeek's orig_p/resp_p), a `label` column (Stratosphere's labelled logs)
→ the flow's label.

DNS: a dns.log line is a transaction; it gives the events decode.py makes from its packets: the
query (sent by orig_h, response False, rcode 0) and, when a response was seen (rcode set), the
response (sent by resp_h at ts + rtt, response True). data: query (lower case), qtype (int), answers
(the IP addresses among the answers), rcode (int), response — as decode.py gives them.

TSV: `#separator` is honoured (`\\x09` escapes), `#set_separator`, `#unset_field`, `#empty_field`,
`#fields` (columns found by name; a second header later in the file replaces the first), `#path`
(conn or dns), `#close` ignored. This module reads; it never sorts rows nor reads ahead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from slipsq.errors import InputError
from slipsq.flow import AppEvent, Flow
from slipsq.sources.flowfiles.base import (
    ICMP,
    Addresses,
    FlowSource,
    Item,
    count,
    finite,
    first_record,
    port,
    row_error,
)

CONN_REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
DNS_REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "query")
Parser = Callable[[list[str]], Item | list[AppEvent] | None]


def log_kind(keys: Iterable[str], path: str = "") -> str | None:
    """'conn' or 'dns' from a log's #path or its field names; None for other Zeek logs."""
    if path in ("conn", "dns"):
        return path
    if path:
        return None
    keys = set(keys)
    if "query" in keys or "qtype" in keys:
        return "dns"
    if "conn_state" in keys or "orig_ip_bytes" in keys or "duration" in keys:
        return "conn"
    return None


def is_zeek_json(record: Any) -> bool:
    return isinstance(record, dict) and "ts" in record and ("uid" in record or "id.orig_h" in record)


def _ts(v: Any) -> float:
    if isinstance(v, str):  # JSON logs written with JSON::TS_FORMAT iso8601 (UTC)
        t = datetime.fromisoformat(v)
        return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
    return float(_number(v, "ts"))


def _number(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (0 <= v < 1e15):
        raise ValueError(f"bad {what} {str(v)[:40]!r}")
    return v


def _proto(proto: str, saddr: str) -> str:
    proto = proto.lower()
    return "ipv6-icmp" if proto == "icmp" and ":" in saddr else proto


_HEX_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")


class ZeekSource(FlowSource):
    """One Zeek log (conn or dns), TSV or JSON lines."""

    format = "zeek"

    def __init__(self, name: str, first: str, lines: Iterable[str], first_lineno: int = 1,
                 counts: dict[str, int] | None = None, problems: list[str] | None = None) -> None:
        super().__init__(name, counts, problems)
        self._first = first
        self._lines = lines
        self._lineno = first_lineno
        self.json = first.lstrip().startswith("{")
        self.addr = Addresses()
        self.kind = ""
        self.fast_path = True  # False: every conn row through the careful parser (the tests compare both)
        if self.json:
            record = first_record(first)
            if not is_zeek_json(record):
                raise InputError(f"{name}:{first_lineno}: not a Zeek JSON log (no ts, uid, id.orig_h)")
            kind = log_kind(record)
            if kind is None:
                raise InputError(f"{name}: a Zeek log that is neither conn.log nor dns.log: slipsq reads "
                                 "flows from conn.log and DNS from dns.log")
            self.kind = kind
        elif not first.startswith("#"):
            raise InputError(f"{name}:{first_lineno}: not a Zeek TSV log (no #separator/#fields header)")

    def _items(self) -> Iterator[Item]:
        lines = chain([self._first], self._lines)
        if self.json:
            make = self._conn_json if self.kind == "conn" else self._dns_json
            yield from self.json_rows(lines, self._lineno - 1, make)
        else:
            yield from self._tsv(lines)

    def _conn_json(self, r: dict[str, Any]) -> Flow:
        saddr = self.addr(r["id.orig_h"])
        daddr = self.addr(r["id.resp_h"])
        start = _ts(r["ts"])
        dur = r.get("duration")
        end = start + (float(_number(dur, "duration")) if dur is not None else 0.0)
        if "orig_ip_bytes" in r or "resp_ip_bytes" in r:
            sbytes, dbytes = r.get("orig_ip_bytes", 0), r.get("resp_ip_bytes", 0)
        else:
            sbytes, dbytes = r.get("orig_bytes", 0), r.get("resp_bytes", 0)
        flow = Flow(start, end, _proto(str(r["proto"]), saddr), saddr, _port(r["id.orig_p"]), daddr,
                    _port(r["id.resp_p"]), _int(r.get("orig_pkts", 0)), _int(r.get("resp_pkts", 0)),
                    _int(sbytes), _int(dbytes), str(r.get("conn_state", "")), "->", 0, 0,
                    str(r.get("label", "")), "file")
        self.counts["flows"] += 1
        return flow

    def _dns_json(self, r: dict[str, Any]) -> list[AppEvent]:
        answers = r.get("answers") or []
        if not isinstance(answers, list):
            raise ValueError("answers is not a list")
        rcode = r.get("rcode")
        rtt = r.get("rtt")
        return self._dns(_ts(r["ts"]), r["id.orig_h"], r["id.orig_p"], r["id.resp_h"], r["id.resp_p"],
                         str(r.get("proto", "udp")), str(r.get("query", "")), _int(r.get("qtype", 0)),
                         [str(a) for a in answers], None if rcode is None else _int(rcode),
                         0.0 if rtt is None else float(_number(rtt, "rtt")))

    def _dns(self, ts: float, oh: str, op: Any, rh: str, rp: Any, proto: str, query: str, qtype: int,
             answers: list[str], rcode: int | None, rtt: float) -> list[AppEvent]:
        """The query (client → server) and, when one was seen, the response (server → client), like
        the two packets decode.py would turn into events."""
        orig, resp = self.addr(oh), self.addr(rh)
        oport, rport = _port(op), _port(rp)
        proto, query = proto.lower(), query.lower()
        events = [AppEvent(ts, "dns", orig, oport, resp, rport, proto,
                           {"query": query, "qtype": qtype, "answers": [], "rcode": 0, "response": False})]
        if rcode is not None:
            valid = self.addr.valid
            ips = [a for a in map(valid, answers) if a is not None]
            events.append(AppEvent(ts + rtt, "dns", resp, rport, orig, oport, proto,
                                   {"query": query, "qtype": qtype, "answers": ips, "rcode": rcode,
                                    "response": True}))
        self.counts["app_events"] += len(events)
        return events

    # --- TSV -------------------------------------------------------------------------------------
    def _tsv(self, lines: Iterable[str]) -> Iterator[Item]:
        counts = self.counts
        sep, set_sep, unset, empty, path = "\t", ",", "-", "(empty)", ""
        parse: Parser | None = None
        nfields = 0
        unusable = ""  # why the rows under the current header are bad (a later header slipsq cannot read)
        lineno = self._lineno - 1
        for line in lines:
            lineno += 1
            line = line.rstrip("\r\n")
            if line[:1] == "#":
                if line.startswith("#separator"):
                    sep = self._separator(line, lineno)
                    continue
                key, _, value = line.partition(sep)
                if key == "#set_separator":
                    set_sep = value
                elif key == "#unset_field":
                    unset = value
                elif key == "#empty_field":
                    empty = value
                elif key == "#path":
                    path = value
                elif key == "#fields":
                    names = value.split(sep)
                    nfields = len(names)
                    try:
                        parse = self._tsv_parser(names, path, lineno, unset, empty, set_sep)
                        unusable = ""
                    except InputError as e:
                        if parse is None:  # the first header: this is no log slipsq can read
                            raise
                        # a later one (logs concatenated, a damaged line): what came before was read,
                        # the rows under it are bad rows until a header slipsq can read
                        why = e.message.removeprefix(f"{self.name}:{lineno}: ")
                        unusable = f"under the #fields header of line {lineno}, which slipsq cannot use ({why})"
                continue
            if not line:
                continue
            counts["rows"] += 1
            if unusable:
                self.bad(lineno, unusable)
                continue
            if parse is None:
                raise InputError(f"{self.name}:{lineno}: data before the #fields header")
            f = line.split(sep)
            try:
                if len(f) != nfields:
                    f = self._fix_fields(f, nfields)
                item = parse(f)
            except (ValueError, IndexError, OverflowError) as e:
                self.bad(lineno, row_error(e))
                continue
            if isinstance(item, list):
                yield from item
            elif item is not None:
                yield item
        if parse is None:
            raise InputError(f"{self.name}: no #fields header: not a Zeek TSV log")

    def _separator(self, line: str, lineno: int) -> str:
        # Zeek writes the separator as \xHH (a tab: "#separator \x09"); a literal character is accepted too
        value = line[len("#separator"):].strip(" ") or "\\x09"
        if _HEX_ESCAPES.fullmatch(value):
            sep = bytes.fromhex(value.replace("\\x", "")).decode("latin-1")
        else:
            sep = value if len(value) == 1 else ""
        if not sep or sep in "\r\n":
            raise InputError(f"{self.name}:{lineno}: bad #separator {value[:20]!r}")
        return sep

    @staticmethod
    def _fix_fields(f: list[str], nfields: int) -> list[str]:
        # Stratosphere's labelled logs separate the last columns (label, detailed-label) by 3 spaces
        if len(f) < nfields and "   " in f[-1]:
            f = f[:-1] + f[-1].split("   ")
        if len(f) != nfields:
            raise ValueError(f"{len(f)} fields, the header has {nfields}")
        return f

    def _tsv_parser(self, names: list[str], path: str, lineno: int, unset: str, empty: str,
                    set_sep: str) -> Parser:
        kind = log_kind(names, path)
        if kind is None:
            raise InputError(f"{self.name}:{lineno}: a Zeek {path or 'unknown'} log: slipsq reads flows "
                             "from conn.log and DNS from dns.log")
        self.kind = kind
        ix = {n: i for i, n in enumerate(names)}
        need = CONN_REQUIRED if kind == "conn" else DNS_REQUIRED
        missing = [n for n in need if n not in ix]
        if missing:
            raise InputError(f"{self.name}:{lineno}: Zeek {kind} log lacks required field(s): "
                             f"{', '.join(missing)}")
        i_ts, i_oh, i_op = ix["ts"], ix["id.orig_h"], ix["id.orig_p"]
        i_rh, i_rp = ix["id.resp_h"], ix["id.resp_p"]
        addr = self.addr
        counts = self.counts

        def num(f: list[str], i: int | None, what: str) -> int:
            if i is None:
                return 0
            v = f[i]
            return 0 if v == unset else count(v, what)

        if kind == "dns":
            i_proto, i_query, i_qtype, i_rcode, i_ans = (ix.get("proto"), ix["query"], ix.get("qtype"),
                                                         ix.get("rcode"), ix.get("answers"))
            i_rtt = ix.get("rtt")

            def dns(f: list[str]) -> list[AppEvent]:
                q = f[i_query]
                a = f[i_ans] if i_ans is not None else unset
                answers = [] if a in (unset, empty) else a.split(set_sep)
                rcode = None if i_rcode is None or f[i_rcode] == unset else count(f[i_rcode], "rcode")
                qtype = 0 if i_qtype is None or f[i_qtype] == unset else count(f[i_qtype], "qtype")
                rtt = 0.0 if i_rtt is None or f[i_rtt] == unset else finite(f[i_rtt], "rtt", 1e6)
                proto = f[i_proto] if i_proto is not None else "udp"
                return self._dns(finite(f[i_ts], "ts", 1e11), f[i_oh], f[i_op], f[i_rh], f[i_rp], proto,
                                 "" if q in (unset, empty) else q, qtype, answers, rcode, rtt)
            return dns

        i_proto, i_dur = ix["proto"], ix.get("duration")
        i_state, i_label = ix.get("conn_state"), ix.get("label")
        i_spkts, i_dpkts = ix.get("orig_pkts"), ix.get("resp_pkts")
        if "orig_ip_bytes" in ix or "resp_ip_bytes" in ix:
            i_sbytes, i_dbytes = ix.get("orig_ip_bytes"), ix.get("resp_ip_bytes")
        else:
            i_sbytes, i_dbytes = ix.get("orig_bytes"), ix.get("resp_bytes")

        protos: dict[str, str] = {}  # raw proto text → name, for protocols other than ICMP

        def careful(f: list[str]) -> Item | None:
            saddr = addr(f[i_oh])
            daddr = addr(f[i_rh])
            start = finite(f[i_ts], "ts", 1e11)
            d = f[i_dur] if i_dur is not None else unset
            end = start if d == unset else start + finite(d, "duration", 1e9)
            state = f[i_state] if i_state is not None else ""
            label = f[i_label] if i_label is not None else ""
            proto = _proto(f[i_proto], saddr)
            flow = Flow(start, end, proto, saddr, port(f[i_op]), daddr, port(f[i_rp]),
                        num(f, i_spkts, "orig_pkts"), num(f, i_dpkts, "resp_pkts"),
                        num(f, i_sbytes, "orig bytes"), num(f, i_dbytes, "resp bytes"),
                        "" if state == unset else state, "->", 0, 0,
                        "" if label in (unset, empty) else label, "file")
            if proto not in ICMP:  # proven valid: the fast path may take it
                protos[f[i_proto]] = proto
            counts["flows"] += 1
            return flow

        if (not self.fast_path or i_dur is None or i_spkts is None or i_dpkts is None or i_sbytes is None
                or i_dbytes is None or i_state is None):
            return careful
        cache = addr.cache
        limit = 1 << 63

        def fast(f: list[str]) -> Item | None:
            """The common row with inline checks; anything unusual or wrong goes to `careful`, which
            accepts exactly the same rows (the tests compare both)."""
            try:
                proto = protos[f[i_proto]]
                saddr = cache[f[i_oh]]
                daddr = cache[f[i_rh]]
                start = float(f[i_ts])
                v = f[i_dur]
                dur = 0.0 if v == unset else float(v)
                sport = int(f[i_op])
                dport = int(f[i_rp])
                v = f[i_spkts]
                spkts = 0 if v == unset else int(v)
                v = f[i_dpkts]
                dpkts = 0 if v == unset else int(v)
                v = f[i_sbytes]
                sbytes = 0 if v == unset else int(v)
                v = f[i_dbytes]
                dbytes = 0 if v == unset else int(v)
                if not (0.0 <= start < 1e11 and 0.0 <= dur < 1e9 and 0 <= sport <= 0xFFFF
                        and 0 <= dport <= 0xFFFF and 0 <= spkts < limit and 0 <= dpkts < limit
                        and 0 <= sbytes < limit and 0 <= dbytes < limit):
                    raise ValueError
            except (ValueError, KeyError):
                return careful(f)
            state = f[i_state]
            label = f[i_label] if i_label is not None else ""
            counts["flows"] += 1
            return Flow(start, start + dur, proto, saddr, sport, daddr, dport, spkts, dpkts, sbytes, dbytes,
                        "" if state == unset else state, "->", 0, 0,
                        "" if label in (unset, empty) else label, "file")
        return fast


def _port(v: Any) -> int:
    if isinstance(v, str):
        return port(v)
    return port(str(_int(v)))


def _int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ValueError(f"bad number {str(v)[:30]!r}")
    if v < 0 or v >= 1 << 63:
        raise ValueError(f"bad number {v}")
    return v

