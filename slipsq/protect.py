"""The addresses this gateway depends on, which forged traffic must never get blocked: its own
addresses, the network and broadcast addresses of its subnets, its default gateways, its DNS
resolvers (/etc/resolv.conf and systemd-resolved's), its NTP servers (chrony, systemd-timesyncd),
and the servers its own sockets talk to (`ss`). A scan "from" the upstream resolver is made of
packets anyone can forge; if it got the resolver blocked, the whole LAN would lose DNS.

Three layers, like verdict/firewall.py:
* pure parsers (`parse_*`): text or JSON in, addresses out; they never raise on bad input, they
  skip what they cannot read (a config line, an address) and keep the rest;
* `gather()`: runs `ip`, `ss`, `chronyc`, `timedatectl`, reads the files, and returns
  {address: reason}; every source is optional (a missing tool or file gives nothing, not an error);
* `ProtectedAddresses`: keeps the map current while the daemon runs (a DHCP renewal, a new VPN
  interface, an IPv6 privacy address) without the packet loop ever waiting: `gather()` runs in a
  background thread, woken by the kernel's address and route notifications (a netlink socket read
  without blocking) and every `every` seconds; `refresh(now)`, called from the loop, costs one
  comparison when not due and installs a finished result into the AllowList.

No dependency beyond the standard library: `ip -j` and `ss` are on every Linux gateway, and one
NETLINK_ROUTE socket subscribed to the address and route groups is all pyroute2's IPRoute events
would give here (the message contents do not matter: any change means read again).
"""

from __future__ import annotations

import ipaddress
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from slipsq.allow import AllowList

OWN = "one of this gateway's own addresses"
GATEWAY = "a default gateway of this gateway"
RESOLVER = "a DNS resolver of this gateway"
NTP = "an NTP server of this gateway"
PEER = "a server this gateway's own sockets talk to"

# rtnetlink multicast groups (linux/rtnetlink.h): links, IPv4/IPv6 addresses and routes
_RTMGRP = 0x1 | 0x10 | 0x40 | 0x100 | 0x400


def _addr(text: str) -> str | None:
    """The canonical text of an address ("%scope" dropped, IPv4-mapped IPv6 as IPv4), or None."""
    text = text.strip().strip("[]").split("%", 1)[0]
    try:
        a = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    return str(a)


def _json_list(text: str) -> list[Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return []
    return data if isinstance(data, list) else []


# --- pure parsers --------------------------------------------------------------------------------

def parse_ip_addr(text: str) -> tuple[list[str], dict[str, str]]:
    """`ip -j addr` → (own addresses, {network or broadcast address: reason}) of every subnet:
    IPv4 prefixes up to /30 give their network and broadcast address, IPv6 prefixes up to /126
    their network (subnet-router anycast) address."""
    own: list[str] = []
    edges: dict[str, str] = {}
    for link in _json_list(text):
        infos = link.get("addr_info", []) if isinstance(link, dict) else []
        for info in infos if isinstance(infos, list) else []:
            if not isinstance(info, dict):
                continue
            local = _addr(str(info.get("local", "")))
            if local is None:
                continue
            own.append(local)
            try:
                net = ipaddress.ip_network(f"{local}/{int(info.get('prefixlen', -1))}", strict=False)
            except (ValueError, TypeError):
                continue
            if net.max_prefixlen - net.prefixlen < 2:  # /31, /32, /127, /128: every address is a host
                continue
            edges.setdefault(str(net.network_address), f"the network address of {net}")
            if net.version == 4:
                edges.setdefault(str(net.broadcast_address), f"the broadcast address of {net}")
            brd = _addr(str(info.get("broadcast", "")))
            if brd is not None:
                edges.setdefault(brd, f"the broadcast address of {net}")
    return own, edges


def parse_ip_route(text: str) -> list[str]:
    """`ip -j route show default` (either family) → the gateways, multipath next hops included."""
    out: list[str] = []
    for route in _json_list(text):
        if not isinstance(route, dict):
            continue
        hops = route.get("nexthops")
        for hop in [route, *(hops if isinstance(hops, list) else [])]:
            if isinstance(hop, dict):
                gw = _addr(str(hop.get("gateway", "")))
                if gw is not None:
                    out.append(gw)
    return out


def parse_resolv_conf(text: str) -> list[str]:
    """resolv.conf (/etc/resolv.conf, /run/systemd/resolve/resolv.conf) → its nameservers."""
    out: list[str] = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            a = _addr(parts[1])
            if a is not None:
                out.append(a)
    return out


def parse_chrony_conf(text: str) -> list[str]:
    """chrony.conf → the hosts of its server, pool and peer lines (names or addresses)."""
    out = []
    for line in text.splitlines():
        parts = line.split("#", 1)[0].split("!", 1)[0].split()
        if len(parts) >= 2 and parts[0] in ("server", "pool", "peer"):
            out.append(parts[1])
    return out


def parse_chronyc_sources(text: str) -> list[str]:
    """`chronyc -n sources` → the addresses of its servers and peers (lines starting ^ or =)."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0][:1] in ("^", "="):
            a = _addr(parts[1])
            if a is not None:
                out.append(a)
    return out


def parse_timesyncd_conf(text: str) -> list[str]:
    """timesyncd.conf (and its .d/*.conf) → the hosts of NTP= and FallbackNTP= in [Time]."""
    out: list[str] = []
    section = ""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("[") and s.endswith("]"):
            section = s[1:-1]
        elif section == "Time" and "=" in s and not s.startswith(("#", ";")):
            key, _, value = s.partition("=")
            if key.strip() in ("NTP", "FallbackNTP"):
                out.extend(value.split())
    return out


def parse_timesync_show(text: str) -> list[str]:
    """`timedatectl show-timesync` → the server systemd-timesyncd is using (ServerAddress=)."""
    out = []
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ServerAddress":
            a = _addr(value)
            if a is not None:
                out.append(a)
    return out


_SS_END = re.compile(r"^(?P<host>\[[^\]]*\]|[^\s]*?)(?:%[^:\s]*)?:(?P<port>\d+|\*)$")


def _ss_end(text: str) -> tuple[str, int] | None:
    m = _SS_END.match(text)
    if m is None or m["port"] == "*":
        return None
    a = _addr(m["host"])
    return None if a is None else (a, int(m["port"]))


def parse_ss(text: str) -> list[str]:
    """`ss -tunaH` → the remote addresses of this machine's outgoing TCP/UDP sockets: its own
    connections to servers. A connection whose local port is one of the machine's listening ports
    is a client calling in, not a server this gateway depends on, and is left out (an attacker
    must not become unblockable by connecting to the gateway's sshd)."""
    listening: set[tuple[str, int]] = set()
    conns: list[tuple[str, int, str]] = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0] not in ("tcp", "udp"):
            continue
        local, peer = _ss_end(parts[4]), parts[5]
        if local is None:
            continue
        if parts[1] == "LISTEN" or peer.endswith(":*"):
            listening.add((parts[0], local[1]))
            continue
        remote = _ss_end(peer)
        if remote is not None:
            conns.append((parts[0], local[1], remote[0]))
    return [r for proto, lport, r in conns if (proto, lport) not in listening]


def merge(groups: Iterable[tuple[str, Iterable[str]]]) -> dict[str, str]:
    """{address: reason}, the first group naming an address giving its reason."""
    out: dict[str, str] = {}
    for reason, addrs in groups:
        for a in addrs:
            out.setdefault(a, reason)
    return out


# --- I/O ----------------------------------------------------------------------------------------

def _run(argv: list[str]) -> str:
    exe = shutil.which(argv[0])
    if exe is None:
        return ""
    try:
        return subprocess.run([exe, *argv[1:]], capture_output=True, text=True, timeout=5,
                              check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _read(path: str | Path) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _resolve(hosts: Iterable[str]) -> list[str]:
    """Addresses of NTP server names (best effort: a name that does not resolve gives nothing)."""
    out = []
    for h in hosts:
        a = _addr(h)
        if a is not None:
            out.append(a)
            continue
        try:
            infos = socket.getaddrinfo(h, 123, proto=socket.IPPROTO_UDP)
        except (OSError, UnicodeError):
            continue
        out.extend(a for info in infos if (a := _addr(str(info[4][0]))) is not None)
    return out


def gather(run: Callable[[list[str]], str] = _run, read: Callable[[str], str] = _read,
           resolve: Callable[[Iterable[str]], list[str]] = _resolve) -> dict[str, str]:
    """Every address this gateway depends on, read now: {address: reason}. Blocking I/O (tools,
    files, DNS for NTP names): run it off the packet loop (ProtectedAddresses does)."""
    own, edges = parse_ip_addr(run(["ip", "-j", "addr"]))
    gateways = parse_ip_route(run(["ip", "-j", "-4", "route", "show", "default"]))
    gateways += parse_ip_route(run(["ip", "-j", "-6", "route", "show", "default"]))
    resolvers = parse_resolv_conf(read("/etc/resolv.conf"))
    resolvers += parse_resolv_conf(read("/run/systemd/resolve/resolv.conf"))
    ntp_names = parse_chrony_conf(read("/etc/chrony/chrony.conf") or read("/etc/chrony.conf"))
    ntp = parse_chronyc_sources(run(["chronyc", "-n", "sources"]))
    ntp += parse_timesync_show(run(["timedatectl", "show-timesync"]))
    ntp_names += parse_timesyncd_conf(read("/etc/systemd/timesyncd.conf"))
    confd = Path("/etc/systemd/timesyncd.conf.d")
    if confd.is_dir():
        for p in sorted(confd.glob("*.conf")):
            ntp_names += parse_timesyncd_conf(read(str(p)))
    ntp += resolve(ntp_names)
    peers = parse_ss(run(["ss", "-tunaH"]))
    return merge([(OWN, own), (GATEWAY, gateways), (RESOLVER, resolvers), (NTP, ntp), (PEER, peers),
                  *((reason, [a]) for a, reason in edges.items())])


def parse_lan_networks(addr_json: str, routes4_json: str, routes6_json: str) -> list[str] | None:
    """`ip -j addr` and `ip -j -4|-6 route show table all` → the global IPv6 networks of the LAN
    interfaces: what `network.follow_lan` makes local (the prefix an ISP delegates, which changes).
    An interface any route leaves by (a default route in any table, a route via a gateway, a
    multipath hop) is WAN (gateway.parse_away_devices). IPv4 is left to network.local: a public IPv4
    LAN does not move, and a second uplink's segment must never pass for the LAN's.
    None when it cannot tell the WAN from the LAN (no IPv6 default route: the uplink is down or
    renewing, or the output unreadable): the caller keeps what it knew."""
    from slipsq import gateway

    try:
        if not gateway.parse_default_routes(routes6_json):
            return None
        machine = gateway.machine_of(addr_json, [routes4_json, routes6_json], strict=True)
    except gateway.UNREADABLE:
        return None
    return gateway.site_networks(machine, version=6)


def lan_networks(run: Callable[[list[str]], str] = _run) -> list[str] | None:
    """This gateway's LAN IPv6 networks now (parse_lan_networks of what `ip` says). Blocking I/O."""
    return parse_lan_networks(*(run(cmd) for cmd in (["ip", "-j", "addr"],
                                                      ["ip", "-j", "-4", "route", "show", "table", "all"],
                                                      ["ip", "-j", "-6", "route", "show", "table", "all"])))


def for_config(allow: AllowList, config: Any) -> ProtectedAddresses:
    """The daemon's ProtectedAddresses for its config (allow.own_addresses, allow.infrastructure,
    allow.reread), started; it reads the LAN's networks too (network.follow_lan: the daemon decides,
    and a reload may turn it on)."""
    own, infra = bool(config["allow.own_addresses"]), bool(config["allow.infrastructure"])

    def pick() -> dict[str, str]:
        if not (own or infra):
            return {}
        found = gather()
        return {a: r for a, r in found.items() if (r == OWN and own) or (r != OWN and infra)}

    # the LAN is read even when network.follow_lan is off: a reload that turns it on finds it known
    p = ProtectedAddresses(allow, pick, every=float(config["allow.reread"]), lan_fn=lan_networks)
    p.start()
    return p


def _netlink() -> socket.socket | None:
    """A non-blocking NETLINK_ROUTE socket told of address, link and route changes, or None."""
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except (OSError, AttributeError):
        return None
    try:
        s.bind((0, _RTMGRP))
        s.setblocking(False)
    except OSError:
        s.close()
        return None
    return s


class ProtectedAddresses:
    """Keeps `allow`'s protected addresses current (see the module docstring).

    In the daemon:  p = ProtectedAddresses(allow); p.start()  at start (waits up to `wait` s for
    the first read), `p.refresh(now)` once per loop turn, `p.close()` at shutdown, and
    `p.allow = new_allow` after a reload (the next refresh installs the current map into it).
    With `lan_fn` (network.follow_lan) the same reads also take the LAN's networks: `p.lan`, and
    `p.on_lan(networks)` called from refresh (the packet loop) when they change."""

    def __init__(self, allow: AllowList, gather_fn: Callable[[], Mapping[str, str]] = gather,
                 every: float = 30.0, netlink: bool = True,
                 lan_fn: Callable[[], list[str] | None] | None = None) -> None:
        self.allow = allow
        self.lan: list[str] = []  # the LAN networks lan_fn read last (network.follow_lan)
        self.on_lan: Callable[[list[str]], None] | None = None  # told of each change, on the loop
        self._lan_fn = lan_fn
        self._ready_lan: list[str] | None = None
        self.every = every
        self.current: dict[str, str] = {}
        self.reads = 0  # finished reads (for status and tests)
        self.changes = 0  # reads that changed the map
        self._gather = gather_fn
        self._sock = _netlink() if netlink else None
        self._wake = threading.Event()
        self._first = threading.Event()  # set after the first read
        self._lock = threading.Lock()
        self._ready: dict[str, str] | None = None
        self._closed = False
        self._next = 0.0  # next time refresh looks at anything
        self._periodic = 0.0  # next periodic re-read
        self._installed_into: AllowList | None = None
        self._thread = threading.Thread(target=self._work, name="slipsq-protect", daemon=True)

    def start(self, wait: float = 2.0) -> None:
        """Start the reader thread and wait up to `wait` s for the first map (installed at once)."""
        self._thread.start()
        self._wake.set()
        self._first.wait(wait)
        self._periodic = self.every  # the read just done is this period's (not a second one at once)
        self.refresh(0.0, force=True)

    def refresh(self, now: float, force: bool = False) -> bool:
        """From the packet loop: at most once a second, look for address changes (one non-blocking
        netlink read) and ask the thread to read again when there were some or `every` s passed;
        install a finished read into the AllowList. Never waits. True when the map changed."""
        if now < self._next and not force:
            return False
        self._next = now + 1.0
        if self._changed() or now >= self._periodic:
            self._periodic = now + self.every
            self._wake.set()
        with self._lock:
            ready, self._ready = self._ready, None
            lan, self._ready_lan = self._ready_lan, None
        if lan is not None and lan != self.lan:
            self.lan = lan
            if self.on_lan is not None:
                self.on_lan(lan)
        if ready is not None and (ready != self.current or self._installed_into is not self.allow):
            self.changes += ready != self.current
            self.current = ready
            self.allow.set_protected(ready)
            self._installed_into = self.allow
            return True
        if self._installed_into is not self.allow and self.current:  # a reload made a new AllowList
            self.allow.set_protected(self.current)
            self._installed_into = self.allow
        return False

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _changed(self) -> bool:
        s = self._sock
        if s is None:
            return False
        changed = False
        while True:
            try:
                if not s.recv(65536):
                    return changed
                changed = True
            except BlockingIOError:
                return changed
            except OSError:  # ENOBUFS: we missed some, so something changed
                return True

    def _work(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._closed:
                return
            try:
                found = dict(self._gather())
                lan = None if self._lan_fn is None else self._lan_fn()  # None: keep what is known
            except Exception:  # a reader's bug must not stop the others next time
                continue
            with self._lock:
                self._ready = found
                if lan is not None:
                    self._ready_lan = list(lan)
            self.reads += 1
            self._first.set()


def status_line(p: ProtectedAddresses) -> str:
    kinds: dict[str, int] = {}
    for reason in p.current.values():
        kind = reason.split(" of ", 1)[0] if reason.startswith("the ") else reason
        kinds[kind] = kinds.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "none"


__all__ = ["ProtectedAddresses", "gather", "lan_networks", "merge", "parse_chrony_conf", "parse_chronyc_sources",
           "parse_ip_addr", "parse_ip_route", "parse_lan_networks", "parse_resolv_conf", "parse_ss",
           "parse_timesync_show", "parse_timesyncd_conf", "status_line"]
