"""The fast address parse (slipsq.addr) against ipaddress, the allow list's integer rules against
the ipaddress properties they stand for, and the local-address test against a prefix set of the
local networks."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.addr import _slow, parse_ip_int
from slipsq.allow import AllowList
from slipsq.detect.prefixes import LOCAL_NETWORKS, build, local_int


def reference_reason(allow: AllowList, text: str) -> str | None:
    """The allow list's rules as they were written on ipaddress objects."""
    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        return f"'{text}' is not an IP address"
    if isinstance(a, ipaddress.IPv6Address) and a.scope_id is not None:
        # the address on one interface ("2001:db8::1%0") is that address: protected as it is (ipaddress
        # compares the zone too, so `in allow.own` would say no; found by hypothesis, 2026-12-06)
        a = ipaddress.IPv6Address(str(a).split("%")[0])
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if a.is_loopback:
        return "a loopback address"
    if a.is_link_local:
        return "a link-local address"
    if a.is_multicast:
        return "a multicast address"
    if a.is_unspecified or a == ipaddress.IPv4Address("255.255.255.255"):
        return "not a host address"
    if a in allow.own:
        return "one of this gateway's own addresses"
    if a in allow.protected:
        return allow.protected[a]
    for net in allow.networks:
        if a.version == net.version and a in net:
            return f"on the allow list ({net})"
    return None


octet = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["00", "01", "256", "-1", "0x1", " 1", "1 ", ""]))
v4_text = st.lists(octet, min_size=3, max_size=5).map(".".join)
v6_text = st.one_of(st.ip_addresses(v=6).map(str), st.ip_addresses(v=6).map(lambda a: a.exploded.upper()),
                    st.ip_addresses(v=4).map(lambda a: f"::ffff:{a}"), st.ip_addresses(v=4).map(lambda a: f"::{a}"),
                    st.ip_addresses(v=6).map(lambda a: f"{a}%eth0"), st.just("::ffff:0:0"), st.just(":::1"))
texts = st.one_of(v4_text, v6_text, st.ip_addresses().map(str), st.ip_addresses().map(lambda a: f" {a}\t"),
                  st.text(max_size=20), st.text(alphabet="0123456789abcdefABCDEF.:%\x00 ", max_size=45))


@given(texts)
@settings(max_examples=800)
def test_fast_parse_is_ipaddress(text: str) -> None:
    assert parse_ip_int(text) == _slow(text)  # ipaddress's judgement, which it used to be


def test_known_answers() -> None:
    assert parse_ip_int("192.0.2.1") == (4, 0xC0000201)
    assert parse_ip_int("::ffff:192.0.2.1") == (4, 0xC0000201)  # the IPv4 host it carries
    assert parse_ip_int("2001:db8::1") == (6, 0x20010DB8 << 96 | 1)
    assert parse_ip_int(" 192.0.2.1 ") == (4, 0xC0000201)  # as ipaddress after strip()
    for bad in ("1.2.3", "01.2.3.4", "1.2.3.256", "", "example.com", "1.2.3.4\x00", "\ud800"):
        assert parse_ip_int(bad) is None, bad


def allow_list() -> AllowList:
    return AllowList(["198.51.100.0/24", "2001:db8:1::/48", "192.0.2.7"], own=["192.0.2.1", "fe80::1", "2001:db8::1"],
                     protected={"203.0.113.53": "the network's DNS resolver", "10.0.0.1": "the default gateway",
                                "127.0.0.5": "protected but loopback first"})
near = st.sampled_from(["127.0.0.1", "127.255.255.255", "128.0.0.0", "169.254.3.4", "169.255.0.0", "224.0.0.1",
                        "239.255.255.255", "240.0.0.0", "0.0.0.0", "0.0.0.1", "255.255.255.255", "::", "::1", "::2",
                        "fe80::5", "febf::1", "fec0::1", "ff02::1", "192.0.2.1", "192.0.2.7", "198.51.100.255",
                        "198.51.101.0", "2001:db8:1:ffff::1", "2001:db8:2::1", "203.0.113.53", "10.0.0.1",
                        "::ffff:127.0.0.1", "::ffff:203.0.113.53", "127.0.0.5", "fe80::1", "2001:db8::1"])


@given(st.one_of(near, texts))
@settings(max_examples=500)
def test_allow_list_on_integers_is_the_ipaddress_rules(text: str) -> None:
    allow = allow_list()  # a new one each time: no answer from its cache
    assert allow.why_protected(text) == reference_reason(allow, text)


LOCAL = build(LOCAL_NETWORKS, True)
edges = [int(a) + d for net in LOCAL_NETWORKS for n in [ipaddress.ip_network(net)]
         for a in (n.network_address, n.broadcast_address) for d in (-1, 0, 1)]


@given(st.one_of(st.integers(0, 2 ** 32 - 1).map(lambda n: (4, n)), st.integers(0, 2 ** 128 - 1).map(lambda n: (6, n)),
                 st.sampled_from(edges).map(lambda n: (4 if n < 2 ** 32 and n >= 0 else 6, n % 2 ** 128)),
                 st.sampled_from(edges).map(lambda n: (6, n % 2 ** 128))))
@settings(max_examples=1500)
def test_local_int_is_the_prefix_set_of_local_networks(addr: tuple[int, int]) -> None:
    assert local_int(*addr) == (LOCAL.lookup_int(*addr) is not None)


def test_local_int_known_answers() -> None:
    for ip in ("10.1.2.3", "172.31.255.255", "192.168.1.1", "100.127.0.1", "127.0.0.1", "169.254.9.9", "239.1.1.1",
               "0.1.2.3", "255.255.255.255", "fd00::1", "fe80::1", "ff02::fb", "::1", "::"):
        assert local_int(*parse_ip_int(ip)), ip  # type: ignore[misc]
    for ip in ("172.32.0.1", "192.169.0.1", "100.128.0.1", "240.0.0.1", "8.8.8.8", "2001:db8::1", "fec0::1", "::2"):
        assert not local_int(*parse_ip_int(ip)), ip  # type: ignore[misc]


def test_shared_space_is_cgnats_block_alone() -> None:
    from slipsq.detect.prefixes import is_local, shared_space

    inside = ("100.64.0.0", "100.72.14.9", "100.127.255.255", "::ffff:100.64.0.1")  # (mapped: the IPv4 host)
    outside = ("100.63.255.255", "100.128.0.0", "10.0.0.1", "fd00::1", "not an address")
    assert all(shared_space(ip) and is_local(ip) for ip in inside)
    assert not any(shared_space(ip) for ip in outside)
