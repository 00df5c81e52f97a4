"""slipsq.protect: the parsers both ways (what a tool writes is read back; junk never raises), the
gathering from fake tools and files, and ProtectedAddresses keeping an AllowList current without
waiting."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterable

from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq import protect
from slipsq.allow import AllowList
from slipsq.config import CORE_OPTIONS, Config
from slipsq.judge import Judge
from slipsq.records import CRITICAL, Evidence


def not_v4_mapped(a: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # ip_addresses(v=6) draws only IPv6Address (its type says either); ::ffff:a.b.c.d is IPv4 in disguise
    return isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is None


v4 = st.ip_addresses(v=4).map(str)
v6 = st.ip_addresses(v=6).filter(not_v4_mapped).map(str)
addrs = st.one_of(v4, v6)

IP_ADDR = json.dumps([
    {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
    {"ifname": "eth0", "addr_info": [
        {"family": "inet", "local": "192.168.7.1", "prefixlen": 24, "broadcast": "192.168.7.255"},
        {"family": "inet", "local": "100.64.0.9", "prefixlen": 31},
        {"family": "inet6", "local": "2001:db8:7::1", "prefixlen": 64}]},
])


def test_ip_addr_gives_own_addresses_and_subnet_edges() -> None:
    own, edges = protect.parse_ip_addr(IP_ADDR)
    assert own == ["127.0.0.1", "192.168.7.1", "100.64.0.9", "2001:db8:7::1"]
    assert edges["192.168.7.0"] == "the network address of 192.168.7.0/24"
    assert edges["192.168.7.255"] == "the broadcast address of 192.168.7.0/24"
    assert edges["2001:db8:7::"] == "the network address of 2001:db8:7::/64"
    assert not any(a.startswith("100.64.0.") for a in edges)  # a /31 has no network or broadcast


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(addrs, st.integers(0, 128)), max_size=6))
def test_ip_addr_reads_back_what_ip_writes(entries: list[tuple[str, int]]) -> None:
    infos = [{"local": a, "prefixlen": min(p, 32 if ":" not in a else 128)} for a, p in entries]
    own, edges = protect.parse_ip_addr(json.dumps([{"addr_info": infos}]))
    assert own == [str(ipaddress.ip_address(a)) for a, _ in entries]
    for a, reason in edges.items():
        net = ipaddress.ip_network(reason.rsplit(" ", 1)[1])
        assert ipaddress.ip_address(a) in net and ipaddress.ip_address(a) in (net.network_address,
                                                                            net.broadcast_address)


def test_routes_give_every_default_gateway() -> None:
    text = json.dumps([{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
                       {"dst": "default", "nexthops": [{"gateway": "fe80::1"}, {"gateway": "198.51.100.1"}]},
                       {"dst": "default", "dev": "wg0"}])
    assert protect.parse_ip_route(text) == ["192.0.2.1", "fe80::1", "198.51.100.1"]


@settings(max_examples=100, deadline=None)
@given(st.lists(addrs, max_size=5), st.lists(st.sampled_from(["search lan", "# nameserver 9.9.9.9",
                                                             "options edns0", "nameserver", "nameserver x"]),
                                             max_size=4))
def test_resolv_conf_reads_back_its_nameservers(servers: list[str], noise: list[str]) -> None:
    lines = [*noise, *(f"nameserver {a}" for a in servers), *noise]
    assert protect.parse_resolv_conf("\n".join(lines)) == servers


def test_resolv_conf_scope_and_mapped_addresses() -> None:
    text = "nameserver fe80::1%eth0\nnameserver ::ffff:192.0.2.53  # upstream\n"
    assert protect.parse_resolv_conf(text) == ["fe80::1", "192.0.2.53"]


def test_ntp_sources_of_chrony_and_timesyncd() -> None:
    conf = "pool 2.debian.pool.ntp.org iburst\n# server 9.9.9.9\nserver 192.0.2.123 iburst\nmakestep 1 3\n"
    assert protect.parse_chrony_conf(conf) == ["2.debian.pool.ntp.org", "192.0.2.123"]
    sources = ("MS Name/IP address         Stratum Poll Reach LastRx Last sample\n"
               "===============================================================\n"
               "^* 192.0.2.123                   2   6   377    35   +12us[ +20us] +/-   15ms\n"
               "^- 2001:db8::123                 2   6   377    35   +12us[ +20us] +/-   15ms\n"
               "=? 198.51.100.9                  0   6     0     -     +0ns[   +0ns] +/-    0ns\n")
    assert protect.parse_chronyc_sources(sources) == ["192.0.2.123", "2001:db8::123", "198.51.100.9"]
    tsd = "[Time]\nNTP=192.0.2.5 time.example\n#NTP=9.9.9.9\nFallbackNTP=ntp.ubuntu.com\n[Other]\nNTP=1.1.1.1\n"
    assert protect.parse_timesyncd_conf(tsd) == ["192.0.2.5", "time.example", "ntp.ubuntu.com"]
    assert protect.parse_timesync_show("ServerName=x\nServerAddress=192.0.2.5\n") == ["192.0.2.5"]


SS = """tcp   LISTEN 0 128 0.0.0.0:22 0.0.0.0:*
tcp   ESTAB  0 0   192.168.7.1:22 192.168.7.50:51234
tcp   ESTAB  0 0   192.168.7.1:40312 198.51.100.80:443
tcp   ESTAB  0 0   [2001:db8:7::1]:40313 [2001:db8:99::80]:443
udp   UNCONN 0 0   0.0.0.0%eth0:68 0.0.0.0:*
udp   ESTAB  0 0   192.168.7.1%eth0:68 192.168.7.254:67
udp   ESTAB  0 0   192.168.7.1:51000 192.0.2.53:53
"""


def test_ss_gives_the_servers_the_gateway_talks_to_not_clients_calling_in() -> None:
    # the sshd client 192.168.7.50 calls in (port 22 listens); the DHCP server 192.168.7.254 talks
    # to port 68, where an unconnected socket listens: left out the same way (in a real gather it
    # is protected anyway, as the default gateway)
    assert protect.parse_ss(SS) == ["198.51.100.80", "2001:db8:99::80", "192.0.2.53"]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_parsers_never_raise_on_junk(text: str) -> None:
    parsers: tuple[Callable[[str], object], ...] = (
        protect.parse_resolv_conf, protect.parse_chrony_conf, protect.parse_chronyc_sources,
        protect.parse_timesyncd_conf, protect.parse_timesync_show, protect.parse_ss, protect.parse_ip_route)
    for parse in parsers:
        parse(text)
    protect.parse_ip_addr(text)
    protect.parse_ip_addr(json.dumps([{"addr_info": [{"local": text, "prefixlen": text}]}, text]))


def fake_tools(extra_ss: str = "") -> tuple[dict[tuple[str, ...], str], dict[str, str]]:
    runs = {("ip", "-j", "addr"): IP_ADDR,
            ("ip", "-j", "-4", "route", "show", "default"): json.dumps([{"gateway": "192.168.7.254"}]),
            ("ss", "-tunaH"): SS + extra_ss,
            ("timedatectl", "show-timesync"): "ServerAddress=192.0.2.5\n"}
    files = {"/etc/resolv.conf": "nameserver 127.0.0.53\n",
             "/run/systemd/resolve/resolv.conf": "nameserver 192.0.2.53\n",
             "/etc/chrony/chrony.conf": "server ntp.example iburst\n"}
    return runs, files


def test_gather_names_every_reason() -> None:
    runs, files = fake_tools()
    resolved: list[str] = []

    def resolve(hosts: Iterable[str]) -> list[str]:
        resolved.extend(hosts)
        return ["203.0.113.123"]

    got = protect.gather(lambda argv: runs.get(tuple(argv), ""), lambda p: files.get(p, ""), resolve)
    assert got["192.168.7.1"] == protect.OWN
    assert got["192.168.7.254"] == protect.GATEWAY
    assert got["192.0.2.53"] == protect.RESOLVER  # also a socket peer: the first reason wins
    assert got["192.0.2.5"] == got["203.0.113.123"] == protect.NTP
    assert got["198.51.100.80"] == protect.PEER
    assert got["192.168.7.255"] == "the broadcast address of 192.168.7.0/24"
    assert "192.168.7.50" not in got
    assert "ntp.example" in resolved


def test_a_forged_scan_never_blocks_a_protected_server() -> None:
    allow = AllowList()
    allow.set_protected({"192.0.2.53": protect.RESOLVER})
    j = Judge(Config(CORE_OPTIONS), allow)
    d = j.add(Evidence(ts=0.0, detector="portscan", offender="192.0.2.53", src_ip="192.0.2.53",
                       dst_ip="192.168.7.9", dst_port=0, proto="tcp", description="vertical scan",
                       threat_level=CRITICAL, confidence=1.0, key="vscan"))
    assert d.action == "alert" and d.reason == "not blocked: 192.0.2.53 is a DNS resolver of this gateway"
    d = j.add(Evidence(ts=0.0, detector="portscan", offender="::ffff:192.0.2.53", src_ip="x",
                       dst_ip="y", dst_port=0, proto="tcp", description="d", threat_level=CRITICAL,
                       confidence=1.0, key="k"))
    assert d.action == "alert" and "DNS resolver" in d.reason


def test_start_reads_once() -> None:
    """Found by a flaky-test hunt: start() asked the reader for a second read at once (its refresh
    at time 0 found the periodic read due), which raced the tests' read counts under load."""
    p = protect.ProtectedAddresses(AllowList(), lambda: {"192.0.2.1": protect.OWN}, every=5.0, netlink=False)
    p.start(wait=2.0)
    try:
        time.sleep(0.3)  # time for a second read, were one asked for
        assert p.reads == 1
        assert p.refresh(5.0) is False  # due at `every`: the reader reads again
        deadline = time.monotonic() + 5
        while p.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.reads == 2
    finally:
        p.close()


def test_refresh_installs_new_addresses_without_waiting_for_the_reader() -> None:
    allow = AllowList()
    found = {"192.0.2.1": protect.OWN}
    gate = threading.Event()
    gate.set()

    def slow_gather() -> dict[str, str]:
        gate.wait(5)
        return dict(found)

    p = protect.ProtectedAddresses(allow, slow_gather, every=5.0, netlink=False)
    p.start(wait=2.0)
    try:
        assert allow.why_protected("192.0.2.1") == protect.OWN
        # a DHCP renewal: the next read finds a new address, and takes long
        gate.clear()
        found["192.0.2.77"] = protect.OWN
        t0 = time.monotonic()
        assert p.refresh(10.0) is False  # due: the reader is asked, refresh does not wait for it
        assert p.refresh(10.2) is False  # not due again within a second: nothing at all
        assert time.monotonic() - t0 < 0.5
        assert allow.why_protected("192.0.2.77") is None
        gate.set()
        deadline = time.monotonic() + 5
        while p.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert p.refresh(11.0) is True
        assert allow.why_protected("192.0.2.77") == protect.OWN
        # a reload made a new AllowList: the next refresh fills it
        p.allow = fresh = AllowList()
        p.refresh(12.0)
        assert fresh.why_protected("192.0.2.77") == protect.OWN
    finally:
        p.close()


def test_netlink_socket_opens_where_the_kernel_has_it() -> None:
    s = protect._netlink()
    if s is not None:
        assert s.getblocking() is False
        s.close()


# --- network.follow_lan: the LAN's networks, read with the protected addresses ------------------------

ADDR_JSON = json.dumps([
    {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.10", "prefixlen": 24, "scope": "global"},
                                     {"family": "inet6", "local": "2001:db8:ff::2", "prefixlen": 64,
                                      "scope": "global"}]},
    {"ifname": "br-lan", "addr_info": [
        {"family": "inet", "local": "192.168.1.1", "prefixlen": 24, "scope": "global"},
        {"family": "inet6", "local": "2001:db8:1:5::1", "prefixlen": 64, "scope": "global"},
        {"family": "inet6", "local": "fd00:5::1", "prefixlen": 64, "scope": "global"},
        {"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"}]},
    {"ifname": "dmz", "addr_info": [{"family": "inet", "local": "198.51.100.1", "prefixlen": 28, "scope": "global"}]},
])
ROUTES4 = json.dumps([{"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
                      {"dst": "192.0.2.0/24", "dev": "eth0", "scope": "link"}])
ROUTES6 = json.dumps([{"dst": "default", "gateway": "fe80::1", "dev": "eth0"},
                      {"dst": "2001:db8:1:5::/64", "dev": "br-lan"}])


def test_lan_networks_are_the_ipv6_networks_of_interfaces_no_route_leaves_by() -> None:
    # IPv4 (198.51.100.0/28 on dmz) is network.local's: a public IPv4 LAN does not move
    assert protect.parse_lan_networks(ADDR_JSON, ROUTES4, ROUTES6) == ["2001:db8:1:5::/64"]
    # no IPv6 default route (the uplink down or renewing): WAN and LAN cannot be told apart
    assert protect.parse_lan_networks(ADDR_JSON, ROUTES4, "[]") is None
    assert protect.parse_lan_networks(ADDR_JSON, ROUTES4, "") is None
    assert protect.parse_lan_networks("{not json", ROUTES4, ROUTES6) is None  # unreadable: what was known stays


def _uplink2(routes: list[dict[str, object]]) -> list[str] | None:
    """A second uplink `wan2` with its own global prefix, its routes as given."""
    links = [*json.loads(ADDR_JSON), {"ifname": "wan2", "addr_info": [
        {"family": "inet6", "local": "2001:db8:ee::2", "prefixlen": 64, "scope": "global"}]}]
    return protect.parse_lan_networks(json.dumps(links), ROUTES4, json.dumps([*json.loads(ROUTES6), *routes]))


def test_a_second_uplink_never_passes_for_the_lan() -> None:
    """Found by review: interfaces without a default route in the main table were all LAN."""
    lan = ["2001:db8:1:5::/64"]
    # its default in a policy routing table
    assert _uplink2([{"dst": "default", "gateway": "fe80::9", "dev": "wan2", "table": "200"}]) == lan
    # a load-balanced default over both uplinks (its devices only in nexthops)
    assert _uplink2([{"dst": "default", "metric": 5, "nexthops": [
        {"gateway": "fe80::1", "dev": "eth0", "weight": 1},
        {"gateway": "fe80::9", "dev": "wan2", "weight": 1}]}]) == lan
    # a route via a gateway on it
    assert _uplink2([{"dst": "2001:db8:77::/48", "gateway": "fe80::9", "dev": "wan2"}]) == lan
    # the control: no route at all leaves by wan2, so it is taken for a LAN
    assert "2001:db8:ee::/64" in (_uplink2([]) or [])


@settings(max_examples=200, deadline=None)
@given(addr=st.text(max_size=200), route=st.text(max_size=100))
def test_lan_networks_never_raise_on_junk(addr: str, route: str) -> None:
    assert isinstance(protect.parse_lan_networks(addr, route, route), list | None)


def test_a_new_lan_prefix_reaches_on_lan_on_the_refreshing_thread() -> None:
    lan: list[str] | None = ["2001:db8:1::/64"]
    told: list[tuple[list[str], str]] = []
    p = protect.ProtectedAddresses(AllowList(), dict, every=5.0, netlink=False,
                                   lan_fn=lambda: None if lan is None else list(lan))
    p.start(wait=2.0)
    try:
        assert p.lan == ["2001:db8:1::/64"]  # the first read, before anyone listens
        p.on_lan = lambda nets: told.append((nets, threading.current_thread().name))
        lan = ["2001:db8:2::/64"]  # the ISP's new prefix
        p.refresh(10.0)  # asks the reader
        deadline = time.monotonic() + 5
        while p.reads < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.refresh(11.0)
        assert told == [(["2001:db8:2::/64"], threading.current_thread().name)]
        p.refresh(16.0)  # read again, the same networks: nobody is told
        while p.reads < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.refresh(17.0)
        lan = None  # the uplink renews: no default route, WAN and LAN cannot be told apart
        p.refresh(22.0)
        while p.reads < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        p.refresh(23.0)
        assert len(told) == 1 and p.lan == ["2001:db8:2::/64"]  # what was known stays
    finally:
        p.close()
