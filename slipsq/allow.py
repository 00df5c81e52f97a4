"""Addresses slipsq must never block: loopback, link-local, multicast, the gateway's own
addresses, and the configured allow list. Pure data; reading the host's addresses is the caller's job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from slipsq.addr import parse_ip, parse_ip_int, parse_network
from slipsq.errors import ConfigError

IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network

Ranges = dict[int, tuple[tuple[int, int, str], ...]]  # version -> (host bits, network >> host bits, reason)


def _ranges(nets: Iterable[tuple[IPNet, str]]) -> Ranges:
    """Networks as integer tests by version, in order: `value >> bits == top` holds the address."""
    out: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
    for n, reason in nets:
        bits = n.max_prefixlen - n.prefixlen
        out[n.version].append((bits, int(n.network_address) >> bits, reason))
    return {v: tuple(r) for v, r in out.items()}


# What is never a host to block, by the rules of ipaddress's is_loopback, is_link_local, is_multicast
# and is_unspecified (plus the IPv4 broadcast): checked on integers, as every address is, so a flood
# of new addresses costs a C parse and a few shifts each.
_NEVER = _ranges((ipaddress.ip_network(net), reason) for net, reason in (
    ("127.0.0.0/8", "a loopback address"), ("::1/128", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"), ("fe80::/10", "a link-local address"),
    ("224.0.0.0/4", "a multicast address"), ("ff00::/8", "a multicast address"),
    ("0.0.0.0/32", "not a host address"), ("255.255.255.255/32", "not a host address"),
    ("::/128", "not a host address")))


class AllowList:
    """`own`: this machine's addresses at start. `protected`: {address: reason} of what else the
    gateway depends on (slipsq.protect: subnet edges, gateways, resolvers, NTP, its sockets' peers),
    replaced while running by `set_protected`.

    What a compiled reader may copy (the beacon intake answers `listed` in C from them): `own` and
    `networks` are fixed when the list is made; `protected` is a new dict after each
    `set_protected`, so it must be read again each time."""

    def __init__(self, networks: Iterable[str] = (), own: Iterable[str] = (),
                 protected: Mapping[str, str] | None = None) -> None:
        self.networks: list[IPNet] = []
        for n in networks:
            try:
                self.networks.append(parse_network(n))
            except ValueError:
                raise ConfigError(f"configuration key 'allow.ips': '{n}' is not an IP address or network") from None
        self.own = {parse_ip(a) for a in own}
        # the same, on integers (what _reason asks): (version, address) and allow-list ranges
        self._own = {(a.version, int(a)) for a in self.own}
        self._nets = _ranges((n, f"on the allow list ({n})") for n in self.networks)
        self.protected: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, str] = {}
        self._protected: dict[tuple[int, int], str] = {}
        self._cache: dict[str, str | None] = {}
        self.set_protected(protected or {})

    def set_protected(self, protected: Mapping[str, str]) -> None:
        """Replace the protected addresses (from the daemon's loop: a read that finished)."""
        out = {}
        for text, reason in protected.items():
            try:
                out[parse_ip(text)] = reason
            except ValueError:
                continue
        self.protected = out
        self._protected = {(a.version, int(a)): reason for a, reason in out.items()}
        self._cache = {}

    def why_protected(self, ip: str) -> str | None:
        """None when `ip` may be blocked, else the reason it may not (for messages and alerts)."""
        if ip in self._cache:
            return self._cache[ip]
        reason = self._reason(ip)
        if len(self._cache) >= 65536:  # bounded: emptied when full (O(1) amortized), so a flood of
            self._cache.clear()        # invented addresses cannot leave later lookups uncached
        self._cache[ip] = reason
        return reason

    def _reason(self, ip: str) -> str | None:
        # asked for every new address a flow brings: few frames, the ranges tested inline
        parsed = parse_ip_int(ip)
        if parsed is None:
            return f"'{ip}' is not an IP address"
        version, value = parsed
        for bits, top, reason in _NEVER[version]:
            if value >> bits == top:
                return reason
        return self.listed(version, value)

    def listed(self, version: int, value: int) -> str | None:
        """Why an address (as addr.parse_ip_int gives it) is protected beyond the fixed ranges
        (loopback, link-local, multicast, unspecified, broadcast): one of this gateway's own, a
        protected one, or on the allow list; else None. (The beacon detector's compiled intake tests
        the fixed ranges in C and asks only this.)"""
        parsed = (version, value)
        if parsed in self._own:
            return "one of this gateway's own addresses"
        protected = self._protected.get(parsed)
        if protected is not None:
            return protected
        for bits, top, reason in self._nets[version]:
            if value >> bits == top:
                return reason
        return None

    def allowed(self, ip: str) -> bool:
        return self.why_protected(ip) is not None


def own_addresses() -> list[str]:
    """This machine's addresses (all interfaces), from the kernel via `ip -j addr`; [] if unknown."""
    import json
    import shutil
    import subprocess

    ip = shutil.which("ip")
    if ip is None:
        return []
    try:
        out = subprocess.run([ip, "-j", "addr"], capture_output=True, text=True, timeout=5, check=True).stdout
        return [a["local"] for link in json.loads(out) for a in link.get("addr_info", []) if "local" in a]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return []
