"""Argus binetflow: the CSV (or tab-separated) flows that `ra` prints, as files or as a live stream.

Columns are found by their header names (Argus's labels, e.g. `ra -n -c , -s stime dur proto saddr
sport dir daddr dport state stos dtos pkts bytes sbytes spkts`), in any order, so every header
variant of the Stratosphere datasets reads: with or without sTos/dTos, SrcBytes, SrcPkts,
srcUdata/dstUdata and Label. Required: StartTime, Proto, SrcAddr, Sport, DstAddr, Dport, TotBytes
(or SrcBytes and DstBytes), and Dur or LastTime.

* Bytes and packets are the file's own counts: sbytes = SrcBytes, dbytes = TotBytes - SrcBytes (a file
  without SrcBytes gives sbytes = TotBytes, dbytes = 0: the flow's total, which is what letters use).
* Dir: `->`, `<->`, `<?>`, `?>`, `who` and others are kept as they are. `<-` means the destination
  started the flow, so the two sides are swapped (s-side = client, as for every slipsq flow) and Dir
  becomes `->`; `<?` (probably from the destination) is swapped the same way and becomes `?>`.
* ICMP: Argus writes the type (low byte) and code (high byte) in hex in Sport and the echo id in
  Dport; the flow gets sport = type and dport = Dport as written.
* Rows of non-IP protocols (arp, llc, man, ...) are counted as skipped_non_ip; malformed rows are
  counted as bad_rows and skipped. srcUdata/dstUdata may contain the separator: columns after them are
  taken counting from the end of the row.

This module reads; it never sorts the rows (flows come out in input order) nor reads ahead of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from slipsq.errors import InputError
from slipsq.flow import Flow, proto_name
from slipsq.sources.flowfiles.base import (
    ICMP,
    Addresses,
    ArgusTime,
    FlowSource,
    Item,
    count,
    finite,
    port,
    row_error,
)

# Argus labels (lower case) → our column keys; ra prints these for `-s stime ltime dur ...`.
COLUMNS = {
    "starttime": "start", "stime": "start", "lasttime": "last", "ltime": "last", "dur": "dur",
    "proto": "proto", "srcaddr": "saddr", "saddr": "saddr", "sport": "sport", "dir": "dir",
    "dstaddr": "daddr", "daddr": "daddr", "dport": "dport", "state": "state", "stos": "stos",
    "dtos": "dtos", "totpkts": "pkts", "pkts": "pkts", "totbytes": "bytes", "bytes": "bytes",
    "srcbytes": "sbytes", "sbytes": "sbytes", "dstbytes": "dbytes", "dbytes": "dbytes",
    "srcpkts": "spkts", "spkts": "spkts", "dstpkts": "dpkts", "dpkts": "dpkts", "label": "label",
    "srcudata": "udata", "dstudata": "udata", "suser": "udata", "duser": "udata",
}
# Argus protocol names of frames that are not IP (their "addresses" may be MACs or ARP fields).
NON_IP = frozenset({"arp", "rarp", "llc", "man", "lldp", "stp", "ipx", "ipx/spx", "eth", "802.1q", "aarp",
                    "cdp", "lacp", "pppoe"})
IP_NAMES = frozenset({"tcp", "udp", "icmp", "ipv6-icmp", "igmp", "gre", "esp", "ah", "sctp", "pim", "ospf",
                      "ospf-igp", "vrrp", "rsvp", "udt", "rtp", "rtcp", "ipv6", "ipnip", "ipip", "l2tp",
                      "ipv6-frag", "ipv6-route", "ipv6-opts", "ipv6-nonxt", "egp", "dccp", "carp"})


def is_header(line: str) -> bool:
    """A binetflow header: Argus labels separated by commas or tabs, with the addresses and a time."""
    text = line.strip().lstrip("\ufeff")
    if not text or text[0] in "#{":
        return False
    keys = {COLUMNS.get(t.strip().lower()) for t in text.replace("\t", ",").split(",")}
    return text.lower().startswith("starttime") or {"saddr", "daddr", "start"} <= keys


class BinetflowSource(FlowSource):
    format = "binetflow"

    def __init__(self, name: str, header: str, lines: Iterable[str], header_lineno: int = 1) -> None:
        super().__init__(name)
        self._lines = lines
        self._lineno = header_lineno
        self._header = header.rstrip("\r\n")
        text = self._header.lstrip("\ufeff")
        self.sep = "\t" if "\t" in text else ","
        names = [t.strip() for t in text.split(self.sep)]
        self.ncols = len(names)
        self.idx: dict[str, int] = {}
        udata_at = -1
        for i, n in enumerate(names):
            key = COLUMNS.get(n.lower())
            if key == "udata":
                udata_at = i if udata_at < 0 else udata_at
            elif key and key not in self.idx:
                # past the user-data columns, which may hold the separator, count from the row's end
                self.idx[key] = i - self.ncols if 0 <= udata_at < i else i
        self.udata = udata_at >= 0
        self.fast_path = True  # False: every row through the careful parser (the tests compare both)
        missing = [label for key, label in (("start", "StartTime"), ("proto", "Proto"), ("saddr", "SrcAddr"),
                                            ("sport", "Sport"), ("daddr", "DstAddr"), ("dport", "Dport"))
                   if key not in self.idx]
        if "dur" not in self.idx and "last" not in self.idx:
            missing.append("Dur (or LastTime)")
        if "bytes" not in self.idx and not {"sbytes", "dbytes"} <= self.idx.keys():
            missing.append("TotBytes (or SrcBytes and DstBytes)")
        if missing:
            raise InputError(f"{name}:{header_lineno}: binetflow header lacks required column(s): "
                             f"{', '.join(missing)}")

    def _items(self) -> Iterator[Item]:
        counts = self.counts
        parse = self._parser()
        lineno = self._lineno
        header = self._header
        sep = self.sep
        for line in self._lines:
            lineno += 1
            line = line.rstrip("\r\n")
            if not line or line == header:  # blank lines and repeated headers (ra -L)
                continue
            counts["rows"] += 1
            try:
                flow = parse(line.split(sep))
            except (ValueError, IndexError, OverflowError) as e:
                self.bad(lineno, row_error(e))
                continue
            if flow is None:
                counts["skipped_non_ip"] += 1
                continue
            counts["flows"] += 1
            yield flow

    def _parser(self) -> Callable[[list[str]], Flow | None]:
        """A row parser specialised to this header (indexes bound once, not looked up per row).

        Two paths: `fast` handles the common row (a known IP protocol other than ICMP, addresses,
        minute and direction already seen, decimal numbers) with inline checks; anything else, including
        every malformed row, goes to `careful`, which fills the caches and words the error. Both accept
        exactly the same rows and give the same flow (the tests compare them)."""
        ix = self.idx
        get = ix.get
        i_start, i_proto, i_saddr, i_sport, i_daddr, i_dport = (
            ix["start"], ix["proto"], ix["saddr"], ix["sport"], ix["daddr"], ix["dport"])
        i_dur, i_last, i_dir, i_state = get("dur"), get("last"), get("dir"), get("state")
        i_stos, i_dtos, i_pkts, i_bytes = get("stos"), get("dtos"), get("pkts"), get("bytes")
        i_sbytes, i_dbytes, i_spkts, i_dpkts, i_label = (
            get("sbytes"), get("dbytes"), get("spkts"), get("dpkts"), get("label"))
        ncols, udata = self.ncols, self.udata
        addr = Addresses()
        when = ArgusTime()
        non_ip, icmp = NON_IP, ICMP
        protos: dict[str, str] = {}  # raw Proto text → name, for IP protocols other than ICMP
        dirs: dict[str, str] = {}  # raw Dir text → stripped, for directions that are not swapped

        def careful(f: list[str]) -> Flow | None:
            n = len(f)
            if n != ncols and not (udata and n > ncols):
                raise ValueError(f"{n} fields, the header has {ncols}")
            proto = f[i_proto].strip().lower()
            if proto in non_ip:
                return None
            if proto.isdigit():  # Argus prints numbers for protocols it has no name for
                proto = proto_name(int(proto))
            try:
                saddr = addr(f[i_saddr].strip())
                daddr = addr(f[i_daddr].strip())
            except ValueError:
                if proto not in IP_NAMES and not proto.isdigit():
                    return None  # e.g. an ethertype row with MAC addresses
                raise
            start = when(f[i_start].strip())
            if i_dur is not None:
                end = start + finite(f[i_dur], "duration", 1e9)
            else:
                end = when(f[i_last].strip())  # type: ignore[index]
                if end < start:
                    end = start
            sport = port(f[i_sport].strip())
            dport = port(f[i_dport].strip())
            if proto in icmp:
                sport &= 0xFF  # the type; the code is in the high byte
            if i_bytes is not None:
                total = count(f[i_bytes], "TotBytes")
                if i_sbytes is not None:
                    sbytes = count(f[i_sbytes], "SrcBytes")
                    dbytes = total - sbytes
                elif i_dbytes is not None:
                    dbytes = count(f[i_dbytes], "DstBytes")
                    sbytes = total - dbytes
                else:
                    sbytes, dbytes = total, 0
                if dbytes < 0 or sbytes < 0:
                    raise ValueError("SrcBytes/DstBytes larger than TotBytes")
            else:
                sbytes = count(f[i_sbytes], "SrcBytes")  # type: ignore[index]
                dbytes = count(f[i_dbytes], "DstBytes")  # type: ignore[index]
            spkts = count(f[i_spkts], "SrcPkts") if i_spkts is not None else -1
            dpkts = count(f[i_dpkts], "DstPkts") if i_dpkts is not None else -1
            if i_pkts is not None:
                tot = count(f[i_pkts], "TotPkts")
                if spkts < 0:
                    spkts = tot if dpkts < 0 else tot - dpkts
                dpkts = tot - spkts
                if dpkts < 0 or spkts < 0:
                    raise ValueError("SrcPkts larger than TotPkts")
            else:
                spkts, dpkts = max(spkts, 0), max(dpkts, 0)
            d = f[i_dir].strip() if i_dir is not None else "->"
            stos = count(f[i_stos].strip(), "sTos") if i_stos is not None else 0
            dtos = count(f[i_dtos].strip(), "dTos") if i_dtos is not None else 0
            state = f[i_state].strip() if i_state is not None else ""
            label = f[i_label].strip() if i_label is not None else ""
            if d == "<-" or d == "<?":
                # the destination started it: make the s-side the client (ICMP "ports" are not per side)
                if proto not in icmp:
                    sport, dport = dport, sport
                return Flow(start, end, proto, daddr, sport, saddr, dport, dpkts, spkts, dbytes, sbytes,
                            state, "->" if d == "<-" else "?>", dtos, stos, label, "file")
            flow = Flow(start, end, proto, saddr, sport, daddr, dport, spkts, dpkts, sbytes, dbytes,
                        state, d, stos, dtos, label, "file")
            if proto not in icmp:  # remember what this row proved valid, for the fast path
                protos[f[i_proto]] = proto
            if i_dir is not None:
                dirs[f[i_dir]] = d
            return flow

        if (not self.fast_path or i_dur is None or i_bytes is None or i_pkts is None or i_dbytes is not None
                or i_dpkts is not None):
            return careful  # an unusual column set: not worth a fast path
        cache = addr.cache
        minutes = when.minutes
        limit = 1 << 63

        def fast(f: list[str]) -> Flow | None:
            try:
                if len(f) != ncols:
                    raise ValueError
                proto = protos[f[i_proto]]
                saddr = cache[f[i_saddr]]
                daddr = cache[f[i_daddr]]
                s = f[i_start]
                sec = float(s[17:])
                start = minutes[s[:16]] + sec
                dur = float(f[i_dur])
                sport = int(f[i_sport])
                dport = int(f[i_dport])
                total = int(f[i_bytes])
                sbytes = int(f[i_sbytes]) if i_sbytes is not None else total
                pkts = int(f[i_pkts])
                spkts = int(f[i_spkts]) if i_spkts is not None else pkts
                d = dirs[f[i_dir]] if i_dir is not None else "->"
                stos = int(f[i_stos] or 0) if i_stos is not None else 0
                dtos = int(f[i_dtos] or 0) if i_dtos is not None else 0
                if not (s[16] == ":" and 0.0 <= sec < 61.0 and 0.0 <= dur < 1e9
                        and 0 <= sport <= 0xFFFF and 0 <= dport <= 0xFFFF and 0 <= sbytes <= total < limit
                        and 0 <= spkts <= pkts < limit and 0 <= stos < limit and 0 <= dtos < limit):
                    raise ValueError
            except (ValueError, KeyError, IndexError):
                return careful(f)
            return Flow(start, start + dur, proto, saddr, sport, daddr, dport, spkts, pkts - spkts, sbytes,
                        total - sbytes, f[i_state].strip() if i_state is not None else "", d, stos, dtos,
                        f[i_label].strip() if i_label is not None else "", "file")

        return fast

