"""Configuration: one TOML file, every default declared once as an Option, validated at load.

Core options are declared here; each detector declares its own (`Detector.options`), and the wiring
(slipsq.runmode) hands the whole list to `load`: this module knows no detector. Keys are
dotted: `[flowtable] tcp_idle = 300` is `flowtable.tcp_idle`; durations are seconds or text like "5m"
or "4h" (slipsq.durations). An unknown key or a value of the wrong type is a ConfigError naming the
key. This module reads files; it never touches the network.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def non_negative(v: Any) -> bool:
    return bool(v >= 0)


def fraction(v: Any) -> bool:
    return bool(0 <= v <= 1)


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
    Option("flowtable.emergency_factor", 0.1,
           "above 90% of max_flows, idle timeouts are multiplied by this (like Suricata's emergency mode)",
           fraction, "between 0 and 1"),
    # letters and Markov models
    Option("letters.variant", "classic", "letters variant: classic (the published models) or slips",
           lambda v: v in ("classic", "slips"), "classic or slips"),
    Option("markov.models", "", "folder of slipsq model files; empty: the models shipped with slipsq"),
    Option("markov.min_letters", 7, "a 4-tuple is matched against models once it has this many characters",
           positive, "> 0"),
    Option("markov.block", "server", "which end of a matched 4-tuple to block: server or client",
           lambda v: v in ("server", "client"), "server or client"),
    # judge
    Option("judge.window", 3600.0, "width of the evidence time window (seconds), as in Slips", positive, "> 0",
           duration=True),
    Option("judge.threshold", 1.0,
           "block when the sum of threat_level x confidence of an IP's evidence in one window reaches this",
           positive, "> 0"),
    Option("judge.block_duration", 14400.0, "how long a block lasts (seconds); 0 means until unblocked",
           non_negative, ">= 0", duration=True),
    Option("judge.repeat_factor", 2.0, "each new block of a repeat offender lasts this many times longer",
           lambda v: v >= 1, ">= 1"),
    Option("judge.max_block_duration", 604800.0, "the longest a block can grow to (seconds)", positive, "> 0",
           duration=True),
    Option("judge.block", True, "false: alert only, never block (an IDS)"),
    # addresses that are never blocked
    Option("allow.ips", [], "IPs and networks (CIDR) that are never blocked, e.g. the admin's laptop"),
    Option("allow.own_addresses", True, "never block this machine's own addresses (read at start)"),
    # what DNS answers taught (detectors read it as ctx.dns_names)
    Option("dns.max_addresses", 65_536, "addresses whose DNS names are remembered; the least recently "
           "answered is forgotten first (bounded memory: answers come from the network)", positive, "> 0"),
    # inline mode
    Option("queue.maxlen", 4096, "longest the kernel queue may grow before it fails open (--queue-maxlen)",
           lambda v: 1 <= v <= 1 << 20, "between 1 and 1048576"),
    # outputs
    Option("output.json", False, "print alerts as JSON lines, inline and in replay (--json/--no-json)"),
)


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


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
            want = type(opt.default).__name__
            raise ConfigError(f"configuration key '{key}'{where} must be a {want}, not {value!r}")
        if isinstance(opt.default, float):
            value = float(value)
        if opt.check is not None and not opt.check(value):
            raise ConfigError(f"configuration key '{key}'{where} must be {opt.check_help}, not {value!r}")
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
            raise ConfigError(f"configuration file {p} is not valid TOML: {e}") from None
        except UnicodeDecodeError:
            hint = " (it looks like UTF-16: iconv -f UTF-16 -t UTF-8)" if _utf16(p) else ""
            raise ConfigError(f"configuration file {p} is not UTF-8 text, which TOML must be{hint}") from None
    cfg = Config(options, values, source)
    for k, v in (overrides or {}).items():
        cfg.set(k, v)
    return cfg
