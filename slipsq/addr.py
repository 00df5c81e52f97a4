"""IP address text to (version, integer), fast: the one parse that per-flow code uses.

Detectors and the allow list ask about every address they meet for the first time (is it local? on a
threat list? protected?). The stdlib `ipaddress.ip_address` costs about 5 µs an address, which was a
third of replay's per-flow detector time on traffic with many distinct addresses (and exactly that
traffic is what a flood of invented addresses looks like). `socket.inet_pton` does the same parse in
C: about 0.3 µs. It accepts a subset of what `ipaddress` accepts (no surrounding blanks, no IPv6
scope "%eth0"), so whatever it refuses goes to `ipaddress`, which then decides; the two are held
equal by a property test (tests/test_addr.py). Data only: no I/O.
"""

from __future__ import annotations

import ipaddress
from socket import AF_INET, AF_INET6, inet_pton

_MAPPED = b"\0" * 10 + b"\xff\xff"  # ::ffff:a.b.c.d carries an IPv4 address


def parse_ip_int(text: str) -> tuple[int, int] | None:
    """(version, integer) of an address, an IPv4-mapped IPv6 address folded to the IPv4 address it
    carries; None when `text` is not an address (`ipaddress`'s rules, blanks around it allowed)."""
    try:
        if ":" not in text:
            return 4, int.from_bytes(inet_pton(AF_INET, text), "big")
        b = inet_pton(AF_INET6, text)
    except (OSError, ValueError):  # not the plain form (or a NUL, a lone surrogate): the slow judge
        return _slow(text)
    if b[:12] == _MAPPED:
        return 4, int.from_bytes(b[12:], "big")
    return 6, int.from_bytes(b, "big")


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address, or a ValueError whose message a person can read. An IPv4-mapped IPv6 address
    (::ffff:1.2.3.4) is the IPv4 address it maps: that is the host, and how slipsq prints it."""
    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ValueError(f"'{text}' is not an IP address") from None
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or a network in CIDR (host bits allowed: 10.0.0.1/8 is 10.0.0.0/8), as the allow
    list and its config key read them; ValueError for anything else (a number too: ipaddress would
    take 1 for 0.0.0.1)."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an IP address or network")
    return ipaddress.ip_network(text, strict=False)


def _slow(text: str) -> tuple[int, int] | None:
    try:
        a = parse_ip(text)
    except ValueError:
        return None
    return a.version, int(a)
