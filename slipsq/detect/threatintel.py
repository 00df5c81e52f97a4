"""Threat intelligence: local lists of bad IPs and networks, matched on both ends of every flow.

`threatintel.folder` (empty: off) holds the lists; every regular, non-hidden file in it is read,
in name order:
* `*.csv`: the IP column is found by its header name (ip, ip_address, address, network, cidr,
  indicator, ioc, dst_ip, ...; a commented header such as abuse.ch's `# "first_seen_utc","dst_ip"`
  counts), else by the first column of the first row that holds an address. `#` lines are comments.
* anything else: plain text, one IP or CIDR per line; `#` and `;` start comments (whole-line or
  trailing), blank lines are skipped, and only the first word counts ("1.2.3.0/24 ; SBL123").
Bad lines are counted and the first few reported as "file:line: why". Networks wider than /8 (IPv4)
or /16 (IPv6) are refused: one bad line must not make every address "malicious".

Lookup: an exact-address dict plus one dict per prefix length present (prefixes.PrefixSet), so a
match costs a few dict probes whatever the list size. Each listed IP is reported once per judge
window: threat critical × confidence 1.0 = 1.0, which blocks it by itself (a list entry is a
deliberate decision of whoever keeps the list); a listed IP that slipsq must never block (own,
allow-listed, private ranges on a sloppy list) is reported with may_block=False.
This module reads files only when loading (at start, `reload()`, `slipsq ti update`); the per-flow
path does no I/O and never blocks anything itself.
"""

from __future__ import annotations

import csv
import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from slipsq.config import Option
from slipsq.detect.base import NO_EVIDENCE, Context, Detector, FlowGate
from slipsq.detect.prefixes import Memo, PrefixSet
from slipsq.errors import ConfigError, InputError
from slipsq.flow import Flow
from slipsq.records import CRITICAL, Evidence, printable

log = logging.getLogger("slipsq.threatintel")

IP_COLUMNS = ("ip", "ip_address", "ipaddress", "ip_addr", "address", "addr", "network", "cidr", "subnet",
              "prefix", "indicator", "ioc", "dst_ip", "dstip", "src_ip", "srcip", "value", "host")
MIN_PREFIX = {4: 8, 6: 16}
MAX_WARNINGS = 10


@dataclass
class IntelStats:
    files: int = 0
    addresses: int = 0
    networks: int = 0
    bad_lines: int = 0
    warnings: list[str] = field(default_factory=list)

    def warn(self, where: str, why: str) -> None:
        self.bad_lines += 1
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(f"{where}: {why}")

    def summary(self) -> str:
        s = (f"{self.files} list files: {self.addresses} addresses, {self.networks} networks, "
             f"{self.bad_lines} bad lines skipped")
        return s + ("".join(f"\n  {w}" for w in self.warnings) if self.warnings else "")


class IntelSet:
    """Listed addresses and networks; `lookup(ip)` says which list line holds it (or None)."""

    def __init__(self) -> None:
        self.prefixes: PrefixSet[str] = PrefixSet()

    def add(self, entry: str, source: str) -> str | None:
        """Add an IP or CIDR; returns why it was refused, or None."""
        try:
            net = ipaddress.ip_network(entry, strict=False)
        except ValueError:  # (the entry as text: a downloaded list must not drive the admin's terminal)
            return f"'{printable(entry[:60])}' is not an IP address or network"
        if net.prefixlen < MIN_PREFIX[net.version]:
            return f"network {net} is wider than /{MIN_PREFIX[net.version]}: refused"
        mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
        if mapped is not None and net.prefixlen == 128:  # lookups fold ::ffff:a.b.c.d to a.b.c.d too
            net = ipaddress.ip_network(mapped)
        self.prefixes.add(net, f"{source} ({net if net.num_addresses > 1 else net.network_address})")
        return None

    def lookup(self, ip: str) -> str | None:
        return self.prefixes.lookup(ip)

    def __len__(self) -> int:
        return len(self.prefixes)


def _read_text(path: Path, name: str, intel: IntelSet, stats: IntelStats) -> None:
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            body = line.split("#", 1)[0].split(";", 1)[0].strip()
            if not body:
                continue
            entry = body.split()[0].strip(",")
            why = intel.add(entry, f"{name}:{lineno}")
            if why:
                stats.warn(f"{name}:{lineno}", why)


def _column(header: list[str]) -> int | None:
    names = [h.strip().strip('"').strip().lstrip("#").strip().strip('"').lower() for h in header]
    for want in IP_COLUMNS:
        if want in names:
            return names.index(want)
    return None


def _read_csv(path: Path, name: str, intel: IntelSet, stats: IntelStats) -> None:
    with path.open(encoding="utf-8", errors="replace", newline="") as fh:
        col: int | None = None
        header_seen = False
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or not "".join(row).strip():
                continue
            if row[0].lstrip().startswith("#"):
                if not header_seen and len(row) > 1:  # a commented header line (abuse.ch style)
                    c = _column(row)
                    if c is not None:
                        col, header_seen = c, True
                continue
            if not header_seen:
                header_seen = True
                col = _column(row)
                if col is not None:
                    continue
                col = next((i for i, v in enumerate(row) if _is_network(v.strip())), None)
                if col is None:
                    stats.warn(f"{name}:{lineno}", "no IP column (by header name or content); file skipped")
                    return
            if col is None or col >= len(row):
                stats.warn(f"{name}:{lineno}", "row has no IP column")
                continue
            why = intel.add(row[col].strip(), f"{name}:{lineno}")
            if why:
                stats.warn(f"{name}:{lineno}", why)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def load_lists(folder: str | os.PathLike[str]) -> tuple[IntelSet, IntelStats]:
    """Read every list in `folder`. InputError (one line) when the folder or a file cannot be read."""
    root = Path(folder)
    if not root.exists():
        raise InputError(f"threat intelligence folder {root} does not exist")
    if not root.is_dir():
        raise InputError(f"threat intelligence folder {root} is not a folder")
    try:
        paths = sorted(p for p in root.iterdir() if not p.name.startswith(".") and p.is_file())
    except PermissionError:
        raise InputError(f"threat intelligence folder {root} cannot be read (permission denied)") from None
    intel, stats = IntelSet(), IntelStats()
    for p in paths:
        try:
            (_read_csv if p.suffix.lower() == ".csv" else _read_text)(p, p.name, intel, stats)
        except OSError as e:
            raise InputError(f"threat intelligence list {p} cannot be read: {e.strerror or e}") from None
        except csv.Error as e:  # a field past csv's limit (128 KiB): not a list this reads
            raise InputError(f"threat intelligence list {p} is not a CSV file slipsq can read: {e}") from None
        stats.files += 1
    stats.addresses, stats.networks = intel.prefixes.n_addresses, intel.prefixes.n_networks
    return intel, stats


_NO_FLOWS = FlowGate(protos=frozenset())  # admits no flow


class ThreatIntel(Detector):
    name = "threatintel"
    evidence_kinds = ("blacklisted-ip",)
    options = (
        Option("threatintel.folder", "", "folder of IP/network lists (.txt one per line, .csv with an IP "
               "column); empty: off. `slipsq ti update` reloads it"),
    )

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.folder: str = self.opt("folder")
        self.window: float = self.cfg["judge.window"]
        self.intel = IntelSet()
        self.empty = True  # no lists loaded: every flow returns at once (len() of the sets is not free)
        self.flow_gate: FlowGate | None = _NO_FLOWS  # and the engine does not even call (see reload)
        self.stats = IntelStats()
        self._lookup: Callable[[str], str | None] = Memo(self.intel.lookup).__getitem__
        self._index = -1
        self._reported: set[str] = set()
        if self.folder:
            try:
                self.reload()
            except InputError as e:
                raise ConfigError(f"configuration key 'threatintel.folder': {e}") from None

    def reload(self) -> IntelStats:
        """Read the folder again; on error the lists in use stay as they were (and the error is raised)."""
        intel, stats = load_lists(self.folder)
        self.intel, self.stats, self._lookup = intel, stats, Memo(intel.lookup).__getitem__
        self.empty = len(intel) == 0
        # no lists: no flow can match, and the engine skips the call in C (it reads the gate when it
        # is built; a daemon reload builds new detectors, so the gate follows the lists)
        self.flow_gate = _NO_FLOWS if self.empty else None
        log.info("threat intelligence: %s", stats.summary())
        if stats.bad_lines:
            log.warning("threat intelligence: %d bad lines skipped (first: %s)", stats.bad_lines,
                        "; ".join(stats.warnings[:3]))
        return stats

    def on_flow(self, flow: Flow) -> Sequence[Evidence]:
        if self.empty:
            return NO_EVIDENCE
        out: list[Evidence] | None = None
        for ip in (flow.saddr, flow.daddr):
            source = self._lookup(ip)
            if source is None:
                continue
            index = int(flow.start // self.window)
            if index != self._index:
                self._index, self._reported = index, set()
            if ip in self._reported:
                continue
            self._reported.add(ip)
            protected = self.ctx.allow.why_protected(ip)
            role = "source" if ip == flow.saddr else "destination"
            desc = (f"{ip} is on a threat intelligence list: {source}; seen as {role} of "
                    f"{flow.saddr} -> {flow.daddr}:{flow.dport}/{flow.proto}")
            if protected:
                desc += f" (never blocked: {protected})"
            ev = Evidence(ts=flow.start, detector=self.name, offender=ip, src_ip=flow.saddr,
                          dst_ip=flow.daddr, dst_port=flow.dport, proto=flow.proto, description=desc,
                          threat_level=CRITICAL, confidence=1.0, label=source.split(":", 1)[0],
                          may_block=protected is None, key=f"threatintel:{ip}", flows=(flow,))
            out = [ev] if out is None else [*out, ev]
        return out or NO_EVIDENCE
