"""Suricata eve.json: `flow` events give flows, `dns` answers give "dns" AppEvents, the rest is counted.

Flow events: src is the side that sent the first packet (the client), so sbytes/spkts are
bytes_toserver/pkts_toserver and dbytes/dpkts the toclient ones, as Suricata counts them (whole
packets: used as given, like every flow file's counts). start/end are flow.start/flow.end (ISO 8601
with a UTC offset); state is flow.state (new, established, closed, bypassed). ICMP flows carry
icmp_type/icmp_code in sport/dport.

DNS events become the events decode.py makes from the packets: a query (saddr = src_ip, response
False) or an answer (sent by the server: saddr = dest_ip, as Suricata writes the flow's direction,
client first; response True). Both answer layouts are read: v1 (one event per answer record, rdata)
and v2 and later (`answers` list and `grouped`; v3 `queries`). data: query (lower case), qtype (int),
answers (the IP addresses), rcode (int), response.

Other event types (alert, http, tls, stats, ...) are counted in other_events and skipped. This module
reads; it never sorts events nor reads ahead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain
from typing import Any

from slipsq.errors import InputError
from slipsq.flow import AppEvent, Flow, proto_name
from slipsq.sources.flowfiles.base import ICMP, Addresses, FlowSource, Item, first_record

# DNS names → numbers, as on the wire (RFC 1035, 3596, 2782, 6891, 9460; RFC 1035/6895 rcodes)
QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "HINFO": 13, "MX": 15, "TXT": 16, "AAAA": 28,
          "SRV": 33, "NAPTR": 35, "DS": 43, "RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "SVCB": 64, "HTTPS": 65,
          "OPT": 41, "AXFR": 252, "ANY": 255, "CAA": 257}
RCODES = {"NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5, "YXDOMAIN": 6,
          "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10}
ADDRESS_TYPES = ("A", "AAAA")


def is_eve(record: Any) -> bool:
    return isinstance(record, dict) and "event_type" in record


def _time(text: Any) -> float:
    if not isinstance(text, str):
        raise ValueError(f"bad timestamp {str(text)[:40]!r}")
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset {text[:40]!r}")
    return t.timestamp()


def _count(v: Any, what: str) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not (0 <= v < 1 << 63):
        raise ValueError(f"bad {what} {str(v)[:30]!r}")
    return v


def _proto(v: Any) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        return proto_name(v)
    if not isinstance(v, str) or not v:
        raise ValueError(f"bad proto {str(v)[:20]!r}")
    return v.lower()


def _code(table: dict[str, int], v: Any) -> int | None:
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v in table:
            return table[v]
        if v.upper().startswith("TYPE") and v[4:].isdigit():  # Suricata writes unknown types as TYPE65
            return int(v[4:])
    raise ValueError(f"unknown DNS code {str(v)[:20]!r}")


class SuricataSource(FlowSource):
    format = "suricata"

    def __init__(self, name: str, first: str, lines: Iterable[str], first_lineno: int = 1) -> None:
        super().__init__(name)
        if not is_eve(first_record(first)):
            raise InputError(f"{name}:{first_lineno}: not a Suricata eve.json (no event_type)")
        self._first = first
        self._lines = lines
        self._lineno = first_lineno
        self.addr = Addresses()
        self.counts["dns_queries"] = 0

    def _items(self) -> Iterator[Item]:
        yield from self.json_rows(chain([self._first], self._lines), self._lineno - 1, self._event)

    def _event(self, r: dict[str, Any]) -> Flow | list[AppEvent] | None:
        kind = r.get("event_type")
        if kind == "flow":
            flow = self._flow(r)
            self.counts["flows"] += 1
            return flow
        if kind == "dns":
            events = self._dns(r)
            self.counts["app_events"] += len(events)
            return events
        self.counts["other_events"] += 1
        return None

    def _ends(self, r: dict[str, Any]) -> tuple[str, int, str, int, str]:
        proto = _proto(r["proto"])
        saddr = self.addr(r["src_ip"])
        daddr = self.addr(r["dest_ip"])
        if proto in ICMP:
            sport, dport = _count(r.get("icmp_type"), "icmp_type"), _count(r.get("icmp_code"), "icmp_code")
        else:
            sport, dport = _count(r.get("src_port"), "src_port"), _count(r.get("dest_port"), "dest_port")
        if sport > 0xFFFF or dport > 0xFFFF:
            raise ValueError("bad port")
        return saddr, sport, daddr, dport, proto

    def _flow(self, r: dict[str, Any]) -> Flow:
        f = r["flow"]
        if not isinstance(f, dict):
            raise ValueError("flow is not an object")
        saddr, sport, daddr, dport, proto = self._ends(r)
        start = _time(f["start"])
        end = _time(f["end"]) if "end" in f else start
        return Flow(start, max(start, end), proto, saddr, sport, daddr, dport,
                    _count(f.get("pkts_toserver"), "pkts_toserver"),
                    _count(f.get("pkts_toclient"), "pkts_toclient"),
                    _count(f.get("bytes_toserver"), "bytes_toserver"),
                    _count(f.get("bytes_toclient"), "bytes_toclient"),
                    str(f.get("state", "")), "->", 0, 0, "", "file")

    def _dns(self, r: dict[str, Any]) -> list[AppEvent]:
        d = r["dns"]
        if not isinstance(d, dict):
            raise ValueError("dns is not an object")
        kind = d.get("type")
        if kind not in ("query", "request", "answer", "response"):
            raise ValueError(f"unknown dns type {str(kind)[:20]!r}")
        saddr, sport, daddr, dport, proto = self._ends(r)
        ts = _time(r["timestamp"])
        query, qtype = d.get("rrname"), d.get("rrtype")
        queries = d.get("queries")
        if query is None and isinstance(queries, list) and queries and isinstance(queries[0], dict):
            query, qtype = queries[0].get("rrname"), queries[0].get("rrtype")  # eve dns v3
        if kind in ("query", "request"):
            self.counts["dns_queries"] += 1
            data = {"query": str(query or "").lower(), "qtype": _code(QTYPES, qtype) or 0, "answers": [],
                    "rcode": 0, "response": False}
            return [AppEvent(ts, "dns", saddr, sport, daddr, dport, proto, data)]
        rdata: list[Any] = []
        if "answers" in d or "grouped" in d:  # v2 and later
            grouped = d.get("grouped")
            if isinstance(grouped, dict):
                for t in ADDRESS_TYPES:
                    rdata.extend(grouped.get(t) or ())
            elif isinstance(d.get("answers"), list):
                rdata = [a.get("rdata") for a in d["answers"]
                         if isinstance(a, dict) and a.get("rrtype") in ADDRESS_TYPES]
        elif d.get("rdata") is not None and d.get("rrtype") in ADDRESS_TYPES:  # v1: one record per event
            rdata = [d["rdata"]]
        valid = self.addr.valid
        answers = [a for a in (valid(x) for x in rdata if isinstance(x, str)) if a is not None]
        data = {"query": str(query or "").lower(), "qtype": _code(QTYPES, qtype) or 0, "answers": answers,
                "rcode": _code(RCODES, d.get("rcode", "NOERROR")), "response": True}
        # the answer travels server → client: the packet's sender is the flow's destination
        return [AppEvent(ts, "dns", daddr, dport, saddr, sport, proto, data)]
