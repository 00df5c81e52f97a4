"""What is "ours": the private ranges, and the site's own networks the config adds (`network.local`).

A LAN on global IPv6 (no NAT) is in no private range: before `network.local`, the detectors saw its
hosts as Internet hosts. An upload from an infected one never blocked ("not known to be ours"), and
a phone polling the NAS looked like a beacon to a C&C on the Internet, which blocked the NAS. The
same NAS polling over IPv4 still got the NAS blocked by a Markov match (an HTTP C&C model): the one
detector without the LAN rule that beacons and storms follow. Each case is replayed from the corpus
(tools/gen_corpus.py) beside its control: the same traffic without the setting, or with the rule
turned off, which blocks.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import detection

from slipsq import gateway
from slipsq.addr import parse_ip, parse_ip_int
from slipsq.detect import prefixes
from slipsq.engine import Engine
from slipsq.errors import ConfigError
from slipsq.runmode import all_options, load_config
from tools import gen_corpus


@pytest.fixture(autouse=True)
def _no_site_left() -> Iterator[None]:
    """The site's networks are one per process (the engine sets them): leave none to other tests."""
    yield
    prefixes.set_site_networks([])


def _replay(name: str, tmp_path: Path, config: dict[str, Any] | None) -> detection.Result:
    return detection.run_scenario(gen_corpus.BY_NAME[name], tmp_path, config)


# --- the corpus ----------------------------------------------------------------------------------

def test_a_phone_polling_the_nas_blocks_no_one(tmp_path: Path) -> None:
    r = _replay("nas-polling", tmp_path, None)
    assert r.blocked == [], [a["description"] for a in r.blocks]
    markov = [a for a in r.alerts if a["detector"] == "stratosphere" and a["offender"] == gen_corpus.NAS]
    assert markov and all("both ends local" in a["description"] for a in markov)


def test_the_nas_polling_blocks_the_nas_when_lan_matches_may_block(tmp_path: Path) -> None:
    """The control: the rule (and only the rule) is what keeps the NAS unblocked."""
    r = _replay("nas-polling", tmp_path, {"markov.local_may_block": True})
    assert r.blocked == [gen_corpus.NAS]
    assert r.blocks[0]["detector"] == "stratosphere"


def test_an_ipv6_lan_named_in_network_local_is_lan_traffic(tmp_path: Path) -> None:
    r = _replay("ipv6-lan-nas-polling", tmp_path, gen_corpus.V6_SITE)
    assert r.blocked == [], [a["description"] for a in r.blocks]
    beacons = [a for a in r.alerts if a["detector"] == "beacon"]
    assert beacons and all("both ends local" in a["description"] for a in beacons)


def test_without_network_local_the_ipv6_nas_was_blocked(tmp_path: Path) -> None:
    r = _replay("ipv6-lan-nas-polling", tmp_path, None)
    assert r.blocked == [gen_corpus.V6_NAS]


def test_an_upload_from_an_ipv6_lan_host_blocks_its_destination(tmp_path: Path) -> None:
    r = _replay("ipv6-lan-exfil", tmp_path, gen_corpus.V6_SITE)
    assert r.blocked == [gen_corpus.CNC6]
    assert r.blocks[0]["detector"] == "exfil"


def test_without_network_local_the_ipv6_upload_only_alerted(tmp_path: Path) -> None:
    r = _replay("ipv6-lan-exfil", tmp_path, None)
    assert r.blocked == []
    (exfil,) = [a for a in r.alerts if a["detector"] == "exfil"]
    assert "not a local address (a private range or network.local)" in exfil["description"]


def test_an_outside_monitor_polling_a_forwarded_port_blocks_no_one(tmp_path: Path) -> None:
    """Found by review: the Markov detector had no inbound rule (beacon ignores inbound polling), so
    an uptime monitor polling the NAS's forwarded port every 30 s got the NAS blocked."""
    r = _replay("uptime-monitor", tmp_path, None)
    assert r.blocked == [], [a["description"] for a in r.blocks]
    markov = [a for a in r.alerts if a["detector"] == "stratosphere" and a["offender"] == gen_corpus.NAS]
    assert markov and all("inbound" in a["description"] for a in markov)


# --- the mechanism ---------------------------------------------------------------------------------

SITE = ["2001:db8:1::/64", "203.0.113.0/28"]
addresses = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
    st.integers(0, 2**16 - 1).map(lambda n: f"2001:db8:1::{n:x}"),  # in the site's IPv6 network
    st.integers(0, 255).map(lambda n: f"203.0.113.{n}"),  # half in, half out of the /28
    st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
)


def _want(ip: str) -> bool:
    """Worked out with ipaddress's networks (not PrefixSet, which is under test)."""
    a = parse_ip(ip)  # an IPv4-mapped address as the IPv4 one
    nets = [ipaddress.ip_network(n) for n in (*prefixes.LOCAL_NETWORKS, *SITE)]
    return any(a in n for n in nets if n.version == a.version)


@settings(max_examples=300, deadline=None)
@given(ip=addresses)
def test_is_local_and_the_compiled_cache_add_the_site_networks(ip: str) -> None:
    c_prefixes = pytest.importorskip("slipsq.detect._prefixes")
    prefixes.set_site_networks(SITE)
    assert prefixes.is_local(ip) is _want(ip)
    assert c_prefixes.cached_local(ip) is _want(ip)
    prefixes.set_site_networks([])  # and forgotten again, by both
    parsed = parse_ip_int(ip)
    assert parsed is not None
    assert prefixes.is_local(ip) is c_prefixes.cached_local(ip) is prefixes.local_int(*parsed)


def test_network_local_takes_exact_networks_and_single_addresses(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[network]\nlocal = ["147.32.0.0/16", "2001:db8:1:5::/64", "203.0.113.7", "2001:db8::1"]\n')
    assert load_config(path)["network.local"][0] == "147.32.0.0/16"


def test_each_engine_sets_the_networks_of_its_config() -> None:
    Engine(load_config(overrides={"network.local": ["2001:db8:1::/64"]}), detectors=[])
    assert prefixes.is_local("2001:db8:1::99") and prefixes.site_networks() == 1
    Engine(load_config(), detectors=[])  # a reload (or the next replay) with none
    assert not prefixes.is_local("2001:db8:1::99") and prefixes.site_networks() == 0


@pytest.mark.parametrize("bad", [
    ["2001:db8:1::/64", "nope"], ["10.0.0.0/33"], [5],
    ["2a02:8071:1234:5600::/5"],  # a typo in the prefix length: host bits set, and half the Internet
    ["147.32.0.1/16"],  # host bits
    ["::ffff:147.32.0.0/112"],  # the IPv4 network, written as IPv6: it would match nothing
    ["0.0.0.0/0"], ["2000::/3"],  # wider than /8 or /16
])
def test_network_local_refuses_what_is_no_network(bad: list[Any], tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f"[network]\nlocal = {json.dumps(bad)}\n")
    with pytest.raises(ConfigError, match=r"network\.local"):
        load_config(path)


# --- config init: the guess ------------------------------------------------------------------------

def test_config_init_puts_the_lans_global_networks_in_network_local() -> None:
    m = gateway.Machine(wan=["eth0"], upstream=["192.0.2.1"],
                        lan={"br-lan": ["192.168.1.0/24", "2001:db8:1:5::/64", "fd00:5::/64"],
                             "eth2": ["198.51.100.0/27"]})
    assert gateway.site_networks(m) == ["2001:db8:1:5::/64", "198.51.100.0/27"]
    text = gateway.initial_config(all_options(), m)
    assert tomllib.loads(text)["network"]["local"] == ["2001:db8:1:5::/64", "198.51.100.0/27"]
    assert "network.local below" in text


def test_config_init_with_private_lans_only_leaves_network_local_alone() -> None:
    m = gateway.Machine(wan=["eth0"], lan={"br-lan": ["192.168.1.0/24", "fd00:5::/64"]})
    assert gateway.site_networks(m) == []
    assert "local" not in tomllib.loads(gateway.initial_config(all_options(), m)).get("network", {})


def test_the_daemons_lan_networks_are_local_with_the_configs_and_survive_a_reload() -> None:
    e = Engine(load_config(overrides={"network.local": ["198.51.100.0/24"]}), detectors=[])
    e.follow_lan(["2001:db8:1:5::/64"])
    assert prefixes.is_local("2001:db8:1:5::7") and prefixes.is_local("198.51.100.7")
    assert e.local_networks == {"config": ["198.51.100.0/24"], "lan": ["2001:db8:1:5::/64"]}
    e.reconfigure(load_config(), [], e.allow)  # a reload without network.local: the LAN's stay
    assert prefixes.is_local("2001:db8:1:5::7") and not prefixes.is_local("198.51.100.7")
    e.follow_lan(["2001:db8:1:6::/64"])  # a new prefix: the old one is the Internet's again
    assert prefixes.is_local("2001:db8:1:6::7") and not prefixes.is_local("2001:db8:1:5::7")


def test_config_init_leaves_a_delegated_prefix_to_the_daemon() -> None:
    """Found by review: a prefix the ISP delegates (an address with a lifetime) written into
    network.local stays local after the ISP gave it to somebody else."""
    links = [
        {"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.10", "prefixlen": 24,
                                          "scope": "global", "dynamic": True}]},
        {"ifname": "wan2", "addr_info": [{"family": "inet", "local": "198.51.100.2", "prefixlen": 24,
                                          "scope": "global"}]},
        {"ifname": "br-lan", "addr_info": [
            {"family": "inet", "local": "192.168.1.1", "prefixlen": 24, "scope": "global"},
            {"family": "inet", "local": "203.0.113.1", "prefixlen": 28, "scope": "global"},
            {"family": "inet6", "local": "2001:db8:1:5::1", "prefixlen": 64, "scope": "global", "dynamic": True,
             "valid_life_time": 86000},
            {"family": "inet6", "local": "2001:db8:99::1", "prefixlen": 64, "scope": "global"}]},
    ]
    routes4 = [{"dst": "default", "metric": 5, "nexthops": [{"gateway": "192.0.2.1", "dev": "eth0"},
                                                            {"gateway": "198.51.100.1", "dev": "wan2"}]}]
    outputs = {"addr": links, "-4": routes4, "-6": [{"dst": "default", "gateway": "fe80::1", "dev": "eth0"}]}

    def run(*cmd: str) -> str:
        return json.dumps(outputs["addr" if cmd[2] == "addr" else cmd[2]])

    m = gateway.read_machine(run)
    assert m.wan == ["eth0", "wan2"] and m.upstream == ["192.0.2.1", "198.51.100.1", "fe80::1"]
    text = gateway.initial_config(all_options(), m)
    assert tomllib.loads(text)["network"]["local"] == ["203.0.113.0/28", "2001:db8:99::/64"]
    assert "2001:db8:1:5::/64 has a lifetime" in text
