"""Packets forged with a LAN host's address never get that host blocked (queue.skip_spoofed).

IPv6 has no NAT, and Debian's reverse-path filter is loose (IPv4) or absent (IPv6): from outside,
anyone can send a gateway packets that bear a LAN host's address and are forwarded into the LAN.
Queued, they were flows *of that host*: a hundred forged SYNs to unanswering addresses were a port
scan by it, and slipsq blocked the LAN host. Here the server's namespace plays the Internet and
forges, with scapy, client A's IPv4 and IPv6 addresses; the gateway's kernel filter is off (as loose
as it gets). With the setting off (the control) slipsq blocks A, which shows the attack is real;
with it on (the default) the forged packets are counted and passed unqueued, A is not blocked, and
A's own traffic is still inspected.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CLIENT_A, CNC, Lab

pytestmark = pytest.mark.kernel

CLIENT_A6 = "fd71:1::2"
HOSTS = 100
CONFIG = {"judge.block_duration": 600.0, "flowtable.tcp_new_idle": 1.0, "flowtable.tcp_closed_linger": 0.5}
FORGE = r"""
import sys
from scapy.all import IP, IPv6, TCP, send
a4, a6, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
pkts = [IP(src=a4, dst=f"10.71.4.{i}") / TCP(sport=40000 + i, dport=23, flags="S") for i in range(1, n + 1)]
pkts += [IPv6(src=a6, dst=f"fd71:4::{i:x}") / TCP(sport=40000 + i, dport=23, flags="S") for i in range(1, n + 1)]
send(pkts, verbose=0)
print("sent", len(pkts))
"""


def forge_scan(lab: Lab) -> None:
    """From the Internet side (the server's namespace): SYNs bearing A's addresses to HOSTS addresses
    the gateway routes to client B, which does not forward and never answers."""
    gw = lab.gw
    for k in ("all", "default", *(f"sq{lab.sfx}{side}1" for side in ("a", "b", "srv"))):
        lab.sh(gw, "sysctl", "-qw", f"net.ipv4.conf.{k}.rp_filter=0")
    lab.ip(gw, "route", "add", "10.71.4.0/24", "via", "10.71.2.2")
    lab.ip(gw, "-6", "route", "add", "fd71:4::/64", "via", "fd71:2::2")
    r = lab.sh(lab.ns["srv"], sys.executable, "-c", FORGE, CLIENT_A, CLIENT_A6, str(HOSTS), timeout=120)
    assert r.stdout.split() == ["sent", str(2 * HOSTS)], r.stderr


@pytest.mark.parametrize("skip", [True, False], ids=["skip-spoofed", "control"])
def test_a_scan_forged_with_a_lan_hosts_address_does_not_block_it(
        lab: Lab, tmp_path: Path, backend: str, skip: bool) -> None:
    lab.serve()
    s = Slipsq(lab, tmp_path / "state", backend, config={**CONFIG, "queue.skip_spoofed": skip})
    s.start()
    assert lab.connect("a", CNC)
    forge_scan(lab)

    def blocked() -> bool:
        return any(b["ip"] in (CLIENT_A, CLIENT_A6) for b in s.blocks())

    if not skip:  # the control: the attack works without the rule
        assert wait_for(blocked, timeout=30, step=0.5) is not None, __import__("json").dumps(s.status())
        return
    # the forged flows would have closed after 1 s and been judged within a second or two more
    assert wait_for(blocked, timeout=8, step=0.5) is None, s.blocks()
    st = s.status()
    assert st["spoofed_skipped"]["packets"] >= 2 * HOSTS
    assert not any(a.get("offender") in (CLIENT_A, CLIENT_A6) for a in st["last_alerts"]), st["last_alerts"]
    rules = s.iptables()
    assert "rpfilter --invert" in rules and "slipsq queue 5 spoofed" in rules
    shown = s.cli("rules", "show").stdout  # what the admin reads: the table, and the rule that counted them
    assert f"iptables backend {backend}, table mangle" in shown
    assert any("PREROUTING" in line and "spoofed" in line for line in shown.splitlines()), shown
    # A's own traffic is still inspected, and A still gets through
    before = st["packets"]
    assert lab.connect("a", CNC)
    assert s.status()["packets"] > before
