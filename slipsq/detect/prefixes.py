"""IP sets with networks: exact addresses in one dict, networks in one dict per prefix length.

Lookup of an address costs one dict probe for the exact set plus one probe per prefix length that is
actually present (longest first), so at most 33 probes for IPv4 and 129 for IPv6, and in practice a
handful: threat lists use few distinct lengths. No dependency: `slipsq.addr` parses (in C, through
inet_pton), and integers do the masking. (pytricia/py-radix would do the same in C, but are not packaged for Debian's
Python 3.11 here and the few-lengths dict is as fast for lists of this shape.)

Also `is_local(ip)`: the address ranges detectors treat as "this network, not the Internet" (the
private ranges, and the site's own networks the config adds: `set_site_networks`); and
`Memo`, the bounded per-address memo it uses (detectors use it for their own per-address answers).
This module holds data only; it never reads files (threatintel.py does).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from slipsq.addr import parse_ip_int, parse_network

V = TypeVar("V")
IPNet = ipaddress.IPv4Network | ipaddress.IPv6Network


class PrefixSet(Generic[V]):
    """Addresses and networks, each with a value (e.g. the list it came from)."""

    def __init__(self) -> None:
        self._exact: dict[tuple[int, int], V] = {}
        # version -> prefix length -> network integer (host bits shifted out) -> value
        self._nets: dict[int, dict[int, dict[int, V]]] = {4: {}, 6: {}}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}  # present lengths, longest first

    def add(self, net: IPNet | str, value: V) -> None:
        """Add an address or network; a /32 (/128) goes to the exact set. The first value added wins."""
        n = ipaddress.ip_network(net, strict=False) if isinstance(net, str) else net
        bits = n.max_prefixlen
        if n.prefixlen == bits:
            self._exact.setdefault((n.version, int(n.network_address)), value)
            return
        table = self._nets[n.version].get(n.prefixlen)
        if table is None:
            table = self._nets[n.version][n.prefixlen] = {}
            self._lengths[n.version] = sorted(self._nets[n.version], reverse=True)
        table.setdefault(int(n.network_address) >> (bits - n.prefixlen), value)

    def lookup(self, ip: str) -> V | None:
        """The value of the exact address, else of the longest network holding it, else None.
        An IPv4-mapped IPv6 address (::ffff:a.b.c.d) is looked up as the IPv4 address it carries."""
        parsed = parse_ip_int(ip)
        if parsed is None:
            return None
        return self.lookup_int(*parsed)

    def lookup_int(self, version: int, value: int) -> V | None:
        hit = self._exact.get((version, value))
        if hit is not None:
            return hit
        bits = 32 if version == 4 else 128
        nets = self._nets[version]
        for plen in self._lengths[version]:
            hit = nets[plen].get(value >> (bits - plen))
            if hit is not None:
                return hit
        return None

    def __contains__(self, ip: str) -> bool:
        return self.lookup(ip) is not None

    @property
    def n_addresses(self) -> int:
        return len(self._exact)

    @property
    def n_networks(self) -> int:
        return sum(len(t) for v in self._nets.values() for t in v.values())

    def __len__(self) -> int:
        return self.n_addresses + self.n_networks


def build(networks: Iterable[str], value: V) -> PrefixSet[V]:
    s: PrefixSet[V] = PrefixSet()
    for n in networks:
        s.add(n, value)
    return s


# Not the Internet: RFC 1918, CGNAT, loopback, link-local, multicast, ULA, "this network".
# (ipaddress's is_private also counts the documentation ranges, which tests and examples use as
# stand-ins for Internet hosts, so it is not used here.)
LOCAL_NETWORKS = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8",
                  "169.254.0.0/16", "224.0.0.0/4", "0.0.0.0/8", "255.255.255.255/32",
                  "fc00::/7", "fe80::/10", "ff00::/8", "::1/128", "::/128")


_CGNAT_TOP = 0x191  # 100.64.0.0/10 (RFC 6598's shared space): its top 10 bits


def local_int(version: int, n: int) -> bool:
    """True when the address (version, integer) is in LOCAL_NETWORKS: the same answer as a PrefixSet
    of them (tests/test_addr.py holds it so), in a few integer tests instead of a probe per prefix
    length (each new address a flow brings is asked about: a flood of them must stay cheap)."""
    if version == 4:
        top = n >> 24
        return (top == 10 or top == 127 or top == 0 or n >> 28 == 0xE or n >> 20 == 0xAC1
                or n >> 16 == 0xC0A8 or n >> 16 == 0xA9FE or n >> 22 == _CGNAT_TOP or n == 0xFFFFFFFF)
    return n >> 121 == 0x7E or n >> 118 == 0x3FA or n >> 120 == 0xFF or n <= 1


def shared_space(ip: str) -> bool:
    """`ip` is in CGNAT's shared address space, 100.64.0.0/10 (RFC 6598): local to LOCAL_NETWORKS,
    though an ISP's other customers (and Tailscale's peers) are in it too."""
    parsed = parse_ip_int(ip)
    return parsed is not None and parsed[0] == 4 and parsed[1] >> 22 == _CGNAT_TOP


# The site's own networks beyond LOCAL_NETWORKS (the config's `network.local`: a LAN's global IPv6
# prefix, a public IPv4 LAN), set by the engine from its config. None when there are none: the test
# is then LOCAL_NETWORKS' integer tests alone.
_site: PrefixSet[bool] | None = None
_on_change: list[Callable[[], None]] = []  # caches of is_local's answers (the compiled detectors')


def _local(ip: str) -> bool:
    parsed = parse_ip_int(ip)
    return parsed is not None and (local_int(*parsed) or (_site is not None and _site.lookup_int(*parsed) is not None))


MEMO_SIZE = 65536  # addresses a Memo holds before it is emptied


class Memo(dict[str, V]):
    """address -> fn(address), filled on first ask; emptied when it reaches `size` addresses (a scan
    of many addresses must not grow it without end). Call its bound `__getitem__`: a hit is one
    C-level dict lookup (detectors ask per flow, and functools.lru_cache's bookkeeping costs half again
    more)."""

    def __init__(self, fn: Callable[[str], V], size: int = MEMO_SIZE) -> None:
        super().__init__()
        self.fn, self.size = fn, size

    def __missing__(self, ip: str) -> V:
        if len(self) >= self.size:
            self.clear()
        value = self[ip] = self.fn(ip)
        return value


_memo: Memo[bool] = Memo(_local)
is_local = _memo.__getitem__
"""True for addresses of the local network (private, link-local, loopback, multicast, and the
site's own networks: set_site_networks)."""


def set_site_networks(networks: Iterable[str]) -> None:
    """Make `networks` (addresses or CIDR, as `network.local` gives them) local too, in place of the
    ones set before, for every detector of this process (one site a process: the engine sets it
    from its config each time it is configured). Each answer cached before is forgotten."""
    global _site
    site: PrefixSet[bool] = PrefixSet()
    for n in networks:
        site.add(parse_network(n), True)
    _site = site if len(site) else None
    _memo.clear()
    for clear in _on_change:
        clear()


def site_networks() -> int:
    """How many networks set_site_networks made local (the compiled cache asks: none, no lookup)."""
    return 0 if _site is None else len(_site)
