"""Never-block list: what is protected and why (the reason is shown to admins)."""

from __future__ import annotations

import pytest

from slipsq.allow import AllowList, own_addresses
from slipsq.errors import ConfigError


@pytest.mark.parametrize("ip, reason", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("169.254.1.1", "link-local"), ("fe80::2", "link-local"),
    ("224.0.0.251", "multicast"), ("ff02::fb", "multicast"), ("255.255.255.255", "not a host"),
    ("0.0.0.0", "not a host"), ("192.0.2.1", "own"), ("10.9.8.7", "allow list"), ("2001:db8::5", "allow list"),
    ("::ffff:127.0.0.1", "loopback"), ("not-an-ip", "not an IP"),
])
def test_protected(ip: str, reason: str) -> None:
    a = AllowList(["10.0.0.0/8", "2001:db8::/32"], own=["192.0.2.1"])
    r = a.why_protected(ip)
    assert r is not None and reason in r


@pytest.mark.parametrize("ip", ["203.0.113.7", "198.51.100.1", "2001:db9::1", "11.0.0.1"])
def test_not_protected(ip: str) -> None:
    assert AllowList(["10.0.0.0/8", "2001:db8::/32"], own=["192.0.2.1"]).why_protected(ip) is None


def test_bad_network_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"allow.ips.*10\.0\.0\.0/33"):
        AllowList(["10.0.0.0/33"])


def test_own_addresses_include_loopback() -> None:
    assert "127.0.0.1" in own_addresses()
