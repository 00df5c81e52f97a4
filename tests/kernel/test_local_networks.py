"""network.follow_lan for real: the daemon in a namespace gateway reads its LAN interfaces' networks
from the kernel and follows them while it runs (an ISP's new IPv6 prefix on the LAN is local within
seconds, a prefix removed is not any more), and `slipsq status` shows them.

The lab's gateway gets default routes out of its `srv` side (its WAN), a second uplink on its `b`
side (a default in routing table 200), and global IPv6 prefixes on its `a` side (its LAN); the ULA
and private addresses the lab already has are local anyway and are never listed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import Lab

BACKEND = "nft" if shutil.which("iptables-nft") else "legacy"  # (the rules are not what is tested here)


def _lan(d: Slipsq) -> list[str]:
    st = d.try_status()
    return [] if st is None else list(st["local_networks"]["lan"])


def test_the_daemon_follows_the_lans_global_prefixes(lab: Lab, tmp_path: Path) -> None:
    side = {k: f"sq{lab.sfx}{k}1" for k in ("a", "b", "srv")}  # the gateway's ends of the veths
    lab.ip(lab.gw, "route", "add", "default", "via", "10.71.3.2")  # srv is the WAN side
    lab.ip(lab.gw, "-6", "route", "add", "default", "via", "fd71:3::2")
    lab.ip(lab.gw, "-6", "addr", "add", "2001:db8:71:1::1/64", "dev", side["a"], "nodad")
    # a second uplink on b: its default lives in a policy routing table, so b is no LAN
    lab.ip(lab.gw, "-6", "route", "add", "default", "via", "fd71:2::2", "table", "200")
    lab.ip(lab.gw, "-6", "addr", "add", "2001:db8:ee::1/64", "dev", side["b"], "nodad")
    lab.ip(lab.gw, "-6", "addr", "add", "2001:db8:7f::1/64", "dev", side["srv"], "nodad")  # the WAN's: not LAN
    d = Slipsq(lab, tmp_path / "state", BACKEND, config={"network.local": ["198.51.100.0/24"]})
    d.start()
    try:
        st = d.status()
        assert st["local_networks"] == {"config": ["198.51.100.0/24"], "lan": ["2001:db8:71:1::/64"]}
        assert "2001:db8:71:1::/64" in d.cli("status").stdout  # and the admin reads it

        # the ISP hands out a new prefix: on the LAN side, local within seconds (netlink wakes the reader)
        lab.ip(lab.gw, "-6", "addr", "add", "2001:db8:71:2::1/64", "dev", side["a"], "nodad")
        assert wait_for(lambda: "2001:db8:71:2::/64" in _lan(d), 10) is not None
        lab.ip(lab.gw, "-6", "addr", "del", "2001:db8:71:1::1/64", "dev", side["a"])
        assert wait_for(lambda: _lan(d) == ["2001:db8:71:2::/64"], 10) is not None
        # the uplink goes down (no IPv6 default route): nothing can be told, what was known stays
        lab.ip(lab.gw, "-6", "route", "del", "default", "via", "fd71:3::2")
        lab.ip(lab.gw, "-6", "route", "del", "default", "via", "fd71:2::2", "table", "200")
        lab.ip(lab.gw, "-6", "addr", "add", "2001:db8:71:3::1/64", "dev", side["a"], "nodad")  # wakes the reader
        assert wait_for(lambda: "2001:db8:71:3::/64" in _lan(d), 3) is None
        assert _lan(d) == ["2001:db8:71:2::/64"]
    finally:
        code, err = d.stop()
    assert code == 0, err
    assert "local networks besides the private ranges now: 198.51.100.0/24, 2001:db8:71:2::/64" in err


def test_follow_lan_off_lists_only_the_config(lab: Lab, tmp_path: Path) -> None:
    lab.ip(lab.gw, "route", "add", "default", "via", "10.71.3.2")
    lab.ip(lab.gw, "-6", "route", "add", "default", "via", "fd71:3::2")
    lab.ip(lab.gw, "-6", "addr", "add", "2001:db8:71:1::1/64", "dev", f"sq{lab.sfx}a1", "nodad")
    d = Slipsq(lab, tmp_path / "state", BACKEND, config={"network.follow_lan": False})
    d.start()
    try:
        assert d.status()["local_networks"] == {"config": [], "lan": []}
    finally:
        code, err = d.stop()
    assert code == 0, err
