"""Configuration: one TOML file, every default declared once as an Option, validated at load.

Core options are declared here; each detector declares its own (`Detector.options`), and the wiring
(slipsq.runmode) hands the whole list to `load`: this module knows no detector. Keys are
dotted: `[flowtable] tcp_idle = 300` is `flowtable.tcp_idle`; durations are seconds or text like "5m"
or "4h" (slipsq.durations). An unknown key or a value of the wrong type is a ConfigError naming the
key. This module reads files; it never touches the network.
"""

from __future__ import annotations

import ipaddress
import json
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slipsq.addr import parse_ip, parse_network
from slipsq.durations import parse_duration
from slipsq.errors import ConfigError


@dataclass(frozen=True)
class Option:
    key: str
    default: Any
    help: str
    check: Callable[[Any], bool] | None = None  # extra validation beyond the type
    check_help: str = ""
    duration: bool = False  # seconds, also written as "4h", "15m", "1h30m" (slipsq.durations)


def positive(v: Any) -> bool:
    return bool(v > 0)


def empty_or(parse: Callable[[Any], object]) -> Callable[[Any], bool]:
    """A check for an option that is off as "" and otherwise must parse (parse raises ValueError)."""
    def ok(v: Any) -> bool:
        if v == "":
            return True
        try:
            parse(v)
        except ValueError:
            return False
        return True
    return ok


def positive_count(v: Any) -> bool:
    """> 0 and below 2^31: a count the compiled code keeps in a C int (a larger value passed the
    "> 0" check and then stopped the engine with an OverflowError)."""
    return bool(0 < v < 2**31)


COUNT = "> 0 and below 2147483648"


def port_list(v: Any) -> bool:
    """A list of TCP/UDP port numbers (1-65535)."""
    return all(type(p) is int and 0 < p < 65536 for p in v)


def non_negative(v: Any) -> bool:
    return bool(v >= 0)


def fraction(v: Any) -> bool:
    return bool(0 <= v <= 1)


def _site_networks(v: list[str]) -> bool:
    """network.local: every item an address or a network written exactly (no host bits: a typo in
    the prefix length must not make half the Internet local), IPv4 as IPv4 (an IPv4-mapped form
    would match nothing), and no wider than /8 (IPv4) or /16 (IPv6)."""
    try:
        for item in v:
            net = parse_network(item)
            exact = ipaddress.ip_network(item, strict=True)
            mapped = isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None
            if exact != net or mapped or net.prefixlen < (8 if net.version == 4 else 16):
                return False
    except ValueError:
        return False
    return True


# well-known public resolvers, IPv4 and IPv6, with their filtering (malware, family) and ECS
# variants: Google, Cloudflare (1.1.1.2/3: malware, family), Quad9 (.10 unfiltered, .11 ECS), OpenDNS
# (Cisco; FamilyShield), AdGuard (default, family), CleanBrowsing (security, family)
# (dns.trusted_resolvers; slipsq/detect/resolvers.py says why names need a trusted resolver)
PUBLIC_RESOLVERS = (
    "8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844",
    "1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "1.1.1.2", "1.0.0.2", "2606:4700:4700::1112", "2606:4700:4700::1002",
    "1.1.1.3", "1.0.0.3", "2606:4700:4700::1113", "2606:4700:4700::1003",
    "9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9",
    "9.9.9.10", "149.112.112.10", "2620:fe::10", "2620:fe::fe:10",
    "9.9.9.11", "149.112.112.11", "2620:fe::11", "2620:fe::fe:11",
    "208.67.222.222", "208.67.220.220", "2620:119:35::35", "2620:119:53::53",
    "208.67.222.123", "208.67.220.123",
    "94.140.14.14", "94.140.15.15", "2a10:50c0::ad1:ff", "2a10:50c0::ad2:ff",
    "94.140.14.15", "94.140.15.16", "2a10:50c0::bad1:ff", "2a10:50c0::bad2:ff",
    "185.228.168.9", "185.228.169.9", "2a0d:2a00:1::2", "2a0d:2a00:2::2",
    "185.228.168.168", "185.228.169.168", "2a0d:2a00:1::", "2a0d:2a00:2::",
)


def _every(parse: Callable[[str], Any]) -> Callable[[list[str]], bool]:
    """A check that `parse` takes every item of a list."""
    def check(v: list[str]) -> bool:
        try:
            for item in v:
                parse(item)
        except ValueError:
            return False
        return True
    return check


_addresses = _every(parse_network)  # IP addresses or networks in CIDR, as the allow list reads them
_ips = _every(parse_ip)  # IP addresses only


def toml_value(v: Any) -> str:
    """An option's value as TOML writes it (strings, numbers, booleans, lists of them)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return repr(v)


def flat_toml(values: Mapping[str, Any]) -> str:
    """{"section.key": value} as a TOML file: one table per section (tests, benchmarks, tools)."""
    sections: dict[str, list[str]] = {}
    for key, v in values.items():
        sec, _, name = key.rpartition(".")
        sections.setdefault(sec, []).append(f"{name} = {toml_value(v)}\n")
    return "".join(f"[{sec}]\n" + "".join(lines) for sec, lines in sections.items())


# the longest timed block, by config or `slipsq block --for` (a later expiry has no date to print)
MAX_TIMED_BLOCK = 3650 * 86400.0

CORE_OPTIONS: tuple[Option, ...] = (
    # flow table (timeouts in seconds; like Suricata: per protocol and per state)
    Option("flowtable.tcp_new_idle", 30.0, "idle timeout of a TCP flow not yet established", positive, "> 0",
           duration=True),
    Option("flowtable.tcp_idle", 300.0, "idle timeout of an established TCP flow", positive, "> 0", duration=True),
    Option("flowtable.tcp_closed_linger", 2.0,
           "seconds a TCP flow stays after FIN both ways or RST, to catch the last ACKs", non_negative, ">= 0",
           duration=True),
    Option("flowtable.udp_idle", 60.0, "idle timeout of a UDP flow", positive, "> 0", duration=True),
    Option("flowtable.icmp_idle", 30.0, "idle timeout of an ICMP flow", positive, "> 0", duration=True),
    Option("flowtable.other_idle", 60.0, "idle timeout of flows of other IP protocols", positive, "> 0", duration=True),
    Option("flowtable.active_timeout", 300.0,
           "a flow open this long is reported (not closed) and again every such period", positive, "> 0",
           duration=True),
    Option("flowtable.max_flows", 500_000,
           "hard cap on open flows; at the cap the least recently seen flow is evicted (counted)",
           positive, "> 0"),
    Option("flowtable.expire_batch", 10_000,
           "flows an expiry pass emits at most; a mass expiry (a flood timing out) goes on a tenth of a "
           "second later, so the packet loop never waits for all of it", positive_count, COUNT),
    Option("flowtable.emergency_factor", 0.1,
           "above 90% of max_flows, idle timeouts are multiplied by this (like Suricata's emergency mode)",
           fraction, "between 0 and 1"),
    # letters and Markov models
    Option("letters.variant", "classic", "letters variant: classic (the published models) or slips",
           lambda v: v in ("classic", "slips"), "classic or slips"),
    Option("markov.models", "", "folder of slipsq model files; empty: the models shipped with slipsq"),
    Option("markov.min_letters", 7, "a 4-tuple is matched against models once it has this many characters",
           positive_count, COUNT),
    Option("markov.local_may_block", False, "a match between two local addresses (private ranges, "
           "network.local: a phone polling the NAS) may block"),
    Option("markov.block", "server", "which end of a matched 4-tuple to block: server or client",
           lambda v: v in ("server", "client"), "server or client"),
    # judge
    Option("judge.window", 3600.0, "width of the evidence time window (seconds), as in Slips",
           lambda v: v >= 1, "at least 1 second", duration=True),
    Option("judge.threshold", 1.0,
           "block when an IP's window score (sum of threat_level x confidence per finding, persistent ones "
           "twice: see judge.py) reaches this",
           positive, "> 0"),
    Option("judge.persist_after", 60.0,
           "a finding still reported this many seconds after its first report in a window is persistent",
           positive, "> 0"),
    Option("judge.persist_min", 0.6,
           "a persistent critical finding whose threat_level x confidence reaches this counts twice", fraction,
           "between 0 and 1"),
    Option("judge.block_duration", 14400.0, "how long a block lasts (seconds); 0 means until unblocked",
           lambda v: 0 <= v <= MAX_TIMED_BLOCK, "between 0 and 3650d", duration=True),
    Option("judge.repeat_factor", 2.0, "each new block of a repeat offender lasts this many times longer",
           lambda v: v >= 1, ">= 1"),
    Option("judge.max_block_duration", 604800.0, "the longest a block can grow to (seconds)",
           lambda v: 0 < v <= MAX_TIMED_BLOCK, "> 0 and at most 3650d", duration=True),
    Option("judge.pardon", 86400.0, "after an admin unblocks an address, evidence against it is reported "
           "but cannot block it again for this long (seconds; `slipsq unblock --pardon`); 0: at once",
           lambda v: 0 <= v <= MAX_TIMED_BLOCK, "between 0 and 3650d", duration=True),
    Option("judge.block", True, "false: alert only, never block (an IDS)"),
    Option("judge.max_offenders", 200_000, "offenders whose evidence window and repeat count are kept "
           "(least recently judged forgotten first; never an active block)", positive, "> 0"),
    Option("judge.max_findings", 256, "distinct findings listed per offender per window (more still "
           "add to the score, not to the list `slipsq explain` shows; each piece of evidence is summed "
           "over this list)", positive, "> 0"),
    Option("judge.max_blocks", 65_536, "active blocks at most; past it new blocks are refused (and said "
           "so), never an older one forgotten", positive, "> 0"),
    Option("judge.max_blocks_per_64", 256, "the judge's active blocks in one IPv6 /64 at most (and 16 times "
           "as many in one /48): one more in a full /64 or /48 lifts its oldest there, so that one "
           "network's addresses (a /64 is one host's) cannot fill judge.max_blocks", positive, "> 0"),
    # addresses that are never blocked
    Option("allow.ips", [], "IPs and networks (CIDR) that are never blocked, e.g. the admin's laptop",
           _addresses, "a list of IP addresses and networks, e.g. [\"192.168.1.10\", \"10.0.0.0/8\"]"),
    Option("allow.own_addresses", True, "never block this machine's own addresses (followed while running: "
           "an address gained later, by DHCP, a VPN or IPv6 privacy, is protected within a second)"),
    Option("allow.infrastructure", True, "never block what this gateway depends on: its default gateways, "
           "DNS resolvers (resolv.conf, systemd-resolved), NTP servers (chrony, timesyncd), the servers its "
           "own sockets talk to, and the network and broadcast addresses of its subnets"),
    Option("allow.reread", 30.0, "seconds between re-reads of the protected addresses (address and route "
           "changes are followed at once, through netlink)", positive, "> 0", duration=True),
    # what is "ours": the detectors' local addresses
    Option("network.local", [], "this site's own networks besides the private ranges (RFC 1918, CGNAT, ULA, "
           "link-local), e.g. the LAN's global IPv6 prefix or a public IPv4 LAN: the detectors count their "
           "hosts as local, as they do 192.168.x.x (an upload, DGA lookups or a reconnection storm from one "
           "of them can block; beacons and storms between two of them only alert). `slipsq config init` "
           "fills in the LAN interfaces' networks",
           _site_networks, "a list of IP addresses and networks without host bits, at most /8 (IPv4) or /16 "
           "(IPv6) wide, e.g. [\"2001:db8:1::/64\"]"),
    Option("network.follow_lan", True, "inline: the global IPv6 networks of this gateway's LAN interfaces "
           "(those no route leaves by: no default route in any table, no route via a gateway) are local "
           "too, as if in network.local, followed while running: a new prefix from the ISP counts within "
           "a second. Nothing changes while no IPv6 default route exists"),
    # what DNS answers taught (detectors read it as ctx.dns_names)
    Option("dns.trusted_resolvers", list(PUBLIC_RESOLVERS),
           "public resolvers whose answers teach names (besides your own network's and the allow list's, "
           "which always do): names let traffic pass (beacon.allow_domains, exfil.allow_domains), and any DNS "
           "server can claim any name, so a C&C's own server's answers are not learnt",
           _ips, "a list of IP addresses"),
    Option("dns.queue_gateway", True, "inline: also queue DNS over UDP to and from the gateway itself (its own "
           "resolver: dnsmasq, Pi-hole, unbound), so the names it answers are learnt and DGA and tunnel lookups "
           "are seen; off: only forwarded traffic is queued, and DNS the LAN asks the gateway is never seen"),
    Option("dns.max_addresses", 65_536, "addresses whose DNS names are remembered; the least recently "
           "answered is forgotten first (bounded memory: answers come from the network)", positive, "> 0"),
    Option("dns.max_names", 131_072, "names remembered over all addresses (up to 16 an address); the least "
           "recently answered addresses are forgotten first while there are more", positive, "> 0"),
    # inline mode
    Option("queue.maxlen", 1024,
           "packets the kernel holds for slipsq before fail-open passes the rest uninspected; small, so a "
           "stalled slipsq costs little: 1,024 packets are 0.1 s at 10,000 packets/s", positive, "> 0"),
    Option("daemon.stall_timeout", 10.0,
           "when the packet loop has not run for this many seconds, slipsq exits (the kernel then passes "
           "traffic, systemd restarts it); 0: never", non_negative, ">= 0", duration=True),
    # flow bypass (inline): the kernel forwards the rest of a flow that can tell slipsq nothing more
    Option("bypass.enabled", False, "inline: once a TCP flow has bypass.after packets each way (and the "
           "client's first payload was seen), mark its connection so the kernel forwards the rest without "
           "queueing it; SYN/FIN/RST are still queued and the counts come from conntrack, so detectors see "
           "the same flow; blocks still win. Needs conntrack (nf_conntrack_acct is turned on)"),
    Option("bypass.after", 10, "packets each way a TCP flow sends through the queue before it is bypassed",
           positive, "> 0"),
    Option("bypass.mark", 0x400000, "the (conn)mark bit slipsq owns for bypassed connections", positive, "> 0"),
    Option("bypass.repeat_mark", 0x800000, "the mark bit slipsq owns for a packet it sends back through the "
           "hook to mark its connection (NF_REPEAT); must not share a bit with bypass.mark", positive, "> 0"),
    Option("bypass.max_open", 65_536, "bypassed flows open at once at most (they are never evicted); "
           "at most half of flowtable.max_flows", positive, "> 0"),
    Option("bypass.merge_timeout", 1.0, "seconds to wait for conntrack's counters of a bypassed flow before "
           "it is analysed with the counts slipsq saw (counted as 'unmerged')", positive, "> 0",
           duration=True),
    # outputs
    Option("output.json", False, "print alerts as JSON lines, inline and in replay (--json/--no-json)"),
    Option("output.alerts_log", "auto", "inline: folder for alerts.jsonl (rotated by size); auto: the service's "
           "logs directory ($LOGS_DIRECTORY, /var/log/slipsq) when run by systemd, else none; \"\": none"),
    Option("output.flows_log", "", "inline: a file that every closed flow is appended to as Argus binetflow "
           "CSV (what the detectors saw); \"\": none"),
    Option("output.alerts_log_max_bytes", 10_000_000, "alerts.jsonl is rotated when it would grow past this",
           positive, "> 0"),
    Option("output.alerts_log_files", 5, "rotated alerts.jsonl files kept (alerts.jsonl.1 ... .N)",
           non_negative, ">= 0"),
    Option("output.journal", "auto", "inline: alerts and messages to the systemd journal with SLIPSQ_* fields: "
           "auto (when started by systemd), yes, no (stdout/stderr)",
           lambda v: v in ("auto", "yes", "no"), "auto, yes or no"),
    # small machines
    Option("memory.budget_mb", 0, "inline: lower the flow table's, detectors' and DNS caps to fit this many MB "
           "(e.g. 100 on a Raspberry Pi; at least 48); 0: no budget, each cap as set", non_negative, ">= 0"),
)


def _shown(value: Any) -> str:
    """`value` as a refusal shows it: its repr, cut at 60 characters (a 5,000-digit integer has none)."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's 4,300 digits
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= 60 else text[:57] + "..."


def _same_type(default: Any, value: Any) -> bool:
    """`value` is of `default`'s type; for a list, each item is of the type of the default's items
    (a default with none: plain values, which the option's own check judges)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):  # an empty default leaves the items to the option's own check
        return isinstance(value, list) and all(_same_type(default[0], v) if default else _scalar(v) for v in value)
    return isinstance(value, type(default))


def _scalar(v: Any) -> bool:
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)


def _type_name(default: Any) -> str:
    if isinstance(default, list):
        return f"list of {type(default[0]).__name__}" if default else "list"
    return type(default).__name__


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class Config:
    """Validated values for every declared option, read by key: `config["judge.window"]`."""

    def __init__(self, options: Iterable[Option], values: Mapping[str, Any] | None = None,
                 source: str = "defaults") -> None:
        self.options: dict[str, Option] = {o.key: o for o in options}
        self.source = source
        self._values: dict[str, Any] = {k: o.default for k, o in self.options.items()}
        for key, value in (values or {}).items():
            self.set(key, value)

    def set(self, key: str, value: Any) -> None:
        opt = self.options.get(key)
        where = f" in {self.source}" if self.source != "defaults" else ""
        if opt is None:
            raise ConfigError(f"unknown configuration key '{key}'{where} (see 'slipsq config show')")
        if opt.duration and isinstance(value, str):
            try:
                value = parse_duration(value)
            except ValueError as e:
                raise ConfigError(f"configuration key '{key}'{where}: {e}") from None
        if not _same_type(opt.default, value):
            want = _type_name(opt.default)
            raise ConfigError(f"configuration key '{key}'{where} must be a {want}, not {_shown(value)}")
        if isinstance(opt.default, float):
            try:
                value = float(value)
            except OverflowError:  # an integer past any float
                raise ConfigError(f"configuration key '{key}'{where} must be {opt.check_help or 'a number'}, "
                                  f"not {_shown(value)}") from None
        if opt.check is not None and not opt.check(value):
            raise ConfigError(f"configuration key '{key}'{where} must be {opt.check_help}, not {_shown(value)}")
        self._values[key] = value

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(f"no configuration option {key!r} is declared") from None

    def section(self, prefix: str) -> dict[str, Any]:
        """The options under `prefix.` with the prefix removed."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self._values.items() if k.startswith(p)}

    def items(self) -> list[tuple[str, Any]]:
        return sorted(self._values.items())


def _utf16(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    return head[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(head) == 4 and (head[1] == 0 or head[0] == 0))


def _bom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(3) == b"\xef\xbb\xbf"
    except OSError:
        return False


def load(options: Iterable[Option], path: str | Path | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Read the TOML file at `path` (None: defaults only) against the declared `options` (the wiring,
    slipsq.runmode, hands over the core's and every detector's) and apply `overrides` (CLI flags)."""
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        source = str(p)
        try:
            with p.open("rb") as fh:
                values = _flatten(tomllib.load(fh))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {p} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"configuration file {p} is a directory") from None
        except PermissionError:
            raise ConfigError(f"configuration file {p} cannot be read (permission denied)") from None
        except tomllib.TOMLDecodeError as e:
            hint = " (it starts with a byte-order mark: save it as UTF-8 without BOM)" if _bom(p) else ""
            raise ConfigError(f"configuration file {p} is not valid TOML: {e}{hint}") from None
        except RecursionError:  # [[[[...]]]] thousands deep: no slipsq setting is a table in a table
            raise ConfigError(f"configuration file {p} is nested too deeply to be a slipsq configuration") from None
        except UnicodeDecodeError:
            hint = " (it looks like UTF-16: iconv -f UTF-16 -t UTF-8)" if _utf16(p) else ""
            raise ConfigError(f"configuration file {p} is not UTF-8 text, which TOML must be{hint}") from None
        except ValueError:  # (after UnicodeDecodeError, a ValueError too) an integer of 4,300+ digits
            raise ConfigError(f"configuration file {p} holds a number slipsq cannot read (an integer of more "
                              "than 4,300 digits?)") from None
    cfg = Config(options, values, source)
    for k, v in (overrides or {}).items():
        cfg.set(k, v)
    return cfg
