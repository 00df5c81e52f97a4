"""slipsq inline never opens the admin's own firewall, on both backends.

A gateway's firewall is the admin's: here a FORWARD policy DROP that lets client A out and answers
back in, and nothing from client B. slipsq's rules used to sit in the filter table ahead of those
rules, and a verdict of the queue (accept), a queue nobody reads (`--queue-bypass`, slipsq dead) and
the bypass rules' ACCEPT each end the table they are in: while slipsq ran, and after it died, B got
through. They now live in the mangle table (slipsq/verdict/backends.py), whose hooks run first, so
the admin's rules see every packet slipsq passes. Checked with real connections through the lab's
gateway: while slipsq runs (with and without flow bypass), and after it was killed with its
diversion left in place (fail open). slipsq must still see the traffic, and its blocks still win
over the admin's ACCEPT.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq
from tests.kernel.lab import CNC, CNC6, LEGIT, Lab

pytestmark = pytest.mark.kernel


def admin_firewall(lab: Lab, backend: str) -> None:
    """The admin's FORWARD rules in the filter table: out from client A's network, answers back in."""
    for cmd, net in (("iptables", "10.71.1.0/24"), ("ip6tables", "fd71:1::/64")):
        ipt = f"{cmd}-{backend}"
        lab.sh(lab.gw, ipt, "-P", "FORWARD", "DROP")
        lab.sh(lab.gw, ipt, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        lab.sh(lab.gw, ipt, "-A", "FORWARD", "-s", net, "-j", "ACCEPT")


def reach(lab: Lab) -> dict[str, bool]:
    """Which client reaches which server (TCP 8080), IPv4 and IPv6."""
    return {"a": lab.connect("a", LEGIT), "a6": lab.connect("a", CNC6, timeout=2),
            "b": lab.connect("b", LEGIT), "b6": lab.connect("b", CNC6, timeout=2)}


ONLY_A = {"a": True, "a6": True, "b": False, "b6": False}


@pytest.mark.parametrize("bypass", [False, True], ids=["plain", "bypass"])
def test_the_admins_forward_policy_holds_while_slipsq_runs_and_after_it_dies(
        lab: Lab, tmp_path: Path, backend: str, bypass: bool) -> None:
    lab.serve()
    lab.connect("a", CNC6, timeout=3)  # the first IPv6 connection waits on neighbour discovery
    admin_firewall(lab, backend)
    assert reach(lab) == ONLY_A  # the admin's firewall, without slipsq
    s = Slipsq(lab, tmp_path / "state", backend, config={"bypass.enabled": bypass})
    s.start()
    before = s.status()["packets"]
    assert reach(lab) == ONLY_A
    assert s.status()["packets"] > before  # slipsq saw the traffic it passed (and B's refused SYNs)
    filt = lab.sh(lab.gw, f"iptables-{backend}", "-S", "FORWARD").stdout
    assert "slipsq" not in filt  # nothing of slipsq's in the admin's table

    # a block wins over the admin's ACCEPT: A may go anywhere, but not to a blocked address
    s.cli("block", CNC, "--for", "10m")
    assert not lab.connect("a", CNC, timeout=0.5) and lab.connect("a", LEGIT)

    # killed: its diversion stays (--queue-bypass: nobody reads the queue), traffic flows, the
    # admin's rules still decide
    s.kill9()
    assert "NFQUEUE" in s.iptables()
    assert reach(lab) == ONLY_A
