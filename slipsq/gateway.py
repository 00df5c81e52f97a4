"""The gateway's first configuration: what `slipsq config init` (run by the installer) writes to
/etc/slipsq/slipsq.toml when there is none.

Every option is in the file with its help as a comment; options left at their default are commented
out (`# tcp_idle = 300.0`), so a later release's better default still applies to them, and
uncommenting a line gives exactly the default. What can be guessed from the machine is filled in:

* the WAN interface (the one with the default route) and its next hop, the LAN interfaces (the other
  ones with an address) and their networks, said in the file's header;
* `network.local`: the LAN interfaces' networks outside the private ranges (a public IPv4 LAN, a
  static global IPv6 prefix; a delegated prefix the ISP may change is left to the daemon, which
  follows it), so the detectors count the LAN's hosts as ours on every address they use. An
  interface any route leaves by (a default route in any table, a route via a gateway) is WAN;
* `allow.ips`: the admin's SSH client address (from $SSH_CONNECTION / $SSH_CLIENT, or `who` when
  sudo dropped them) and the upstream router, so the first start can never lock the admin out or
  cut the gateway off its uplink. The gateway's own addresses are protected anyway
  (allow.own_addresses).

Parsing (`ip -j` JSON, `who` lines) and rendering are pure functions; `probe` runs the commands.
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from slipsq.config import Option, toml_value


@dataclass
class Machine:
    wan: list[str] = field(default_factory=list)  # interfaces a route leaves by (default, or via a gateway)
    upstream: list[str] = field(default_factory=list)  # the default routes' next hops
    lan: dict[str, list[str]] = field(default_factory=dict)  # other interfaces -> their networks
    admins: list[str] = field(default_factory=list)  # SSH client addresses
    rotating: set[str] = field(default_factory=set)  # networks of addresses with a lifetime (DHCP, PD, RA)


def _hops(r: dict[str, Any]) -> list[dict[str, Any]]:
    """A route and its multipath next hops (`nexthops`), each a dict that may name dev and gateway."""
    more = r.get("nexthops")
    return [r, *(h for h in more if isinstance(h, dict))] if isinstance(more, list) else [r]


def parse_default_routes(text: str) -> list[tuple[str, str]]:
    """(device, next hop) of each default route in `ip -j route show [table all]` output, multipath
    next hops included (a load-balanced default names its devices only in `nexthops`)."""
    out = []
    for r in json.loads(text or "[]"):
        if isinstance(r, dict) and r.get("dst") == "default":
            out += [(str(h["dev"]), str(h.get("gateway", ""))) for h in _hops(r) if h.get("dev")]
    return out


def parse_away_devices(text: str) -> list[str]:
    """The devices any route leaves by, from `ip -j route show table all`: those of default routes
    and of routes via a gateway, in every table (a second uplink's default often lives in a policy
    routing table) and every multipath hop. Such an interface leads to somebody else's network: its
    networks are never guessed to be the LAN's."""
    out: list[str] = []
    for r in json.loads(text or "[]"):
        if not isinstance(r, dict):
            continue
        hops = _hops(r)
        if r.get("dst") == "default" or any(h.get("gateway") for h in hops):
            out += [str(h["dev"]) for h in hops if h.get("dev") and str(h["dev"]) not in out]
    return out


def parse_addresses(text: str, rotating: set[str] | None = None) -> dict[str, list[str]]:
    """Interface -> its global networks (CIDR), from `ip -j addr show`; loopback and link-local
    addresses left out (they are never blocked anyway). `rotating`, when given, receives the networks
    of addresses with a lifetime (`dynamic`: from DHCP, a delegated prefix, an RA), which may change."""
    out: dict[str, list[str]] = {}
    for link in json.loads(text or "[]"):
        name = str(link.get("ifname", ""))
        for a in link.get("addr_info", []):
            if a.get("scope") != "global" or "local" not in a:
                continue
            net = str(ipaddress.ip_interface(f"{a['local']}/{a.get('prefixlen', 32)}").network)
            out.setdefault(name, []).append(net)
            if rotating is not None and a.get("dynamic"):
                rotating.add(net)
    return out


_WHO_HOST = re.compile(r"\(([0-9a-fA-F.:]+)(?:%[^)]*)?\)\s*$")


def ssh_clients(env: Mapping[str, str], who: str = "") -> list[str]:
    """The admin's SSH client address: $SSH_CONNECTION or $SSH_CLIENT when set, else the remote
    hosts `who` lists (sudo resets the environment; `who` still knows where the sessions come from).
    Only syntactically valid IP addresses are kept."""
    found: list[str] = []
    for var in ("SSH_CONNECTION", "SSH_CLIENT"):
        first = env.get(var, "").split()
        if first:
            found.append(first[0])
            break
    if not found:
        for line in who.splitlines():
            m = _WHO_HOST.search(line)
            if m:
                found.append(m.group(1))
    out: list[str] = []
    for a in found:
        try:
            ip = str(ipaddress.ip_address(a))
        except ValueError:
            continue
        if ip not in out:
            out.append(ip)
    return out


def guess(routes: Sequence[tuple[str, str]], addresses: Mapping[str, Sequence[str]],
          admins: Sequence[str], away: Iterable[str] = (), rotating: Iterable[str] = ()) -> Machine:
    """The WAN: interfaces of the default routes and of `away` (parse_away_devices); the LAN: the
    other interfaces with an address."""
    m = Machine(admins=list(admins), rotating=set(rotating))
    for dev, hop in routes:
        if dev not in m.wan:
            m.wan.append(dev)
        if hop and hop not in m.upstream:
            m.upstream.append(hop)
    m.wan += [dev for dev in away if dev not in m.wan]
    m.lan = {dev: list(nets) for dev, nets in addresses.items() if dev not in m.wan}
    return m


def _run(*cmd: str) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


UNREADABLE = (ValueError, AttributeError, TypeError, KeyError)  # what a parser raises on text it cannot read


def machine_of(addr_json: str, routes_json: Iterable[str], admins: Sequence[str] = (),
               strict: bool = False) -> Machine:
    """The machine `ip -j addr` and `ip -j -4|-6 route show table all` describe; an output that
    cannot be read is left out (nothing guessed from it), or with `strict` raises (UNREADABLE)."""
    routes: list[tuple[str, str]] = []
    away: list[str] = []
    rotating: set[str] = set()
    addrs: dict[str, list[str]] = {}
    for text in routes_json:
        try:
            routes += parse_default_routes(text)
            away += parse_away_devices(text)
        except UNREADABLE:
            if strict:
                raise
    try:
        addrs = parse_addresses(addr_json, rotating)
    except UNREADABLE:
        if strict:
            raise
    return guess(routes, addrs, admins, away, rotating)


def read_machine(run: Callable[..., str] = _run, admins: Sequence[str] = ()) -> Machine:
    """This machine's interfaces and routes as `ip` tells them (every table, both families)."""
    return machine_of(run("ip", "-j", "addr", "show"),
                      [run("ip", "-j", fam, "route", "show", "table", "all") for fam in ("-4", "-6")], admins)


def probe(env: Mapping[str, str]) -> Machine:
    """This machine, as far as `ip` and `who` tell (nothing guessed when they are missing)."""
    return read_machine(_run, ssh_clients(env, _run("who")))


def header(m: Machine) -> list[str]:
    lines = ["# slipsq configuration (written by 'slipsq config init'; edit freely, the installer keeps it).",
             "# Every option is here with what it does; commented-out lines show the default.",
             "# Reload after editing: systemctl reload slipsq",
             "#"]
    lines.append(f"# This machine: WAN {', '.join(m.wan) or '(no default route found)'}"
                 + (f" via {', '.join(m.upstream)}" if m.upstream else ""))
    for dev, nets in m.lan.items():
        lines.append(f"#               LAN {dev} {', '.join(nets)}")
    if m.admins:
        lines.append(f"# Installed from an SSH session from {', '.join(m.admins)}: on the allow list below.")
    else:
        lines.append("# No SSH session found: put your admin host on the allow list below before starting.")
    return lines


def allow_list(m: Machine) -> list[str]:
    out: list[str] = []
    for ip in [*m.admins, *m.upstream]:
        if ip not in out:
            out.append(ip)
    return out


def site_networks(m: Machine, version: int | None = None, lasting: bool = False) -> list[str]:
    """The LAN interfaces' networks the detectors would not call local by themselves (a global IPv6
    prefix, a public IPv4 LAN): of one IP version when given; with `lasting`, not those of an
    address with a lifetime (a delegated IPv6 prefix the ISP may change: the daemon follows those)."""
    from slipsq.detect.prefixes import local_int  # (detectors' module: imported only when asked)

    out: list[str] = []
    for nets in m.lan.values():
        for text in nets:
            net = ipaddress.ip_network(text, strict=False)
            if (local_int(net.version, int(net.network_address)) or text in out
                    or (version is not None and net.version != version) or (lasting and text in m.rotating)):
                continue
            out.append(text)
    return out


def render(options: Iterable[Option], values: Mapping[str, Any], head: Sequence[str] = ()) -> str:
    """The commented TOML file: every option under its section, its help as a comment, the line
    active only where `values` gives something other than the default."""
    out = list(head)
    by_section: dict[str, list[Option]] = {}
    for o in sorted(options, key=lambda o: o.key):
        by_section.setdefault(o.key.rpartition(".")[0], []).append(o)
    for sec, opts in by_section.items():
        out += ["", f"[{sec}]"]
        for o in opts:
            name = o.key.rpartition(".")[2]
            out.append(f"# {o.help}" + (f" ({o.check_help})" if o.check_help else ""))
            if o.key in values and values[o.key] != o.default:
                out.append(f"{name} = {toml_value(values[o.key])}")
            else:
                out.append(f"# {name} = {toml_value(o.default)}")
    return "\n".join(out) + "\n"


def initial_config(options: Iterable[Option], m: Machine, extra_allow: Sequence[str] = ()) -> str:
    allow = allow_list(m)
    for ip in extra_allow:
        if ip not in allow:
            allow.append(ip)
    lan_nets = [n for nets in m.lan.values() for n in nets]
    head = header(m)
    if lan_nets:
        head.append("# To never block your whole LAN (slipsq then only blocks outside hosts), add: "
                    f"{', '.join(lan_nets)}")
    values: dict[str, Any] = {"allow.ips": allow} if allow else {}
    site = site_networks(m, lasting=True)
    if site:
        values["network.local"] = site
        head.append(f"# network.local below: the LAN's networks outside the private ranges ({', '.join(site)}), "
                    "so the detectors count their hosts as ours (replays too).")
    moving = [n for n in site_networks(m, version=6) if n not in site]
    if moving:
        head.append(f"# The LAN's IPv6 prefix {', '.join(moving)} has a lifetime (your ISP may change it): not "
                    "written below; the daemon follows the LAN's IPv6 prefixes while it runs (network.follow_lan). "
                    "For replays, add the current one to network.local.")
    return render(options, values, head)
