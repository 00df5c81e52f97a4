"""slipsq inline never opens or bypasses the admin's own firewall, on both backends.

A gateway's firewall is the admin's: here a FORWARD policy DROP in the filter table that lets client A
out and answers back in, and nothing from client B; and in the mangle table the TCPMSS clamp a PPPoE
router has (for IPv4 and IPv6: python-iptables could not read a table holding both, and slipsq would
not start on the legacy backend). A verdict of the queue (accept), a queue nobody reads
(`--queue-bypass`, slipsq dead) and the bypass rules' ACCEPT each end the table they are in: from the
filter table (until 2026-12-06) B got through while slipsq ran and after it died; from mangle (for a
day) the clamp never saw a packet. slipsq's rules now live in the security table, which runs after
both (slipsq/verdict/backends.py). Checked with real connections through the lab's gateway: while
slipsq runs (with and without flow bypass), and after it was killed with its diversion left in place
(fail open). slipsq must still see the traffic, and its blocks still win over the admin's ACCEPT.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CNC, CNC6, LEGIT, Lab

pytestmark = pytest.mark.kernel


def admin_firewall(lab: Lab, backend: str) -> None:
    """The admin's FORWARD rules in the filter table (out from client A's network, answers back in)
    and the MSS clamp in the mangle table, both families."""
    for cmd, net in (("iptables", "10.71.1.0/24"), ("ip6tables", "fd71:1::/64")):
        ipt = f"{cmd}-{backend}"
        lab.sh(lab.gw, ipt, "-P", "FORWARD", "DROP")
        lab.sh(lab.gw, ipt, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
        lab.sh(lab.gw, ipt, "-A", "FORWARD", "-s", net, "-j", "ACCEPT")
        lab.sh(lab.gw, ipt, "-t", "mangle", "-A", "FORWARD", "-p", "tcp", "--tcp-flags", "SYN,RST", "SYN",
               "-j", "TCPMSS", "--clamp-mss-to-pmtu")


def clamped(lab: Lab, backend: str) -> int:
    """SYNs the admin's MSS clamp saw, both families."""
    n = 0
    for cmd in ("iptables", "ip6tables"):
        out = lab.sh(lab.gw, f"{cmd}-{backend}", "-t", "mangle", "-L", "FORWARD", "-v", "-x", "-n").stdout
        n += sum(int(line.split()[0]) for line in out.splitlines() if "TCPMSS" in line)
    return n


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
    before, syns = s.status()["packets"], clamped(lab, backend)
    assert reach(lab) == ONLY_A
    assert s.status()["packets"] > before  # slipsq saw the traffic it passed
    assert clamped(lab, backend) >= syns + 4  # the admin's mangle rule saw every SYN too (A's and B's)
    for table in ("filter", "mangle"):  # nothing of slipsq's in the admin's tables
        assert "slipsq" not in lab.sh(lab.gw, f"iptables-{backend}", "-t", table, "-S").stdout

    # a block wins over the admin's ACCEPT: A may go anywhere, but not to a blocked address
    s.cli("block", CNC, "--for", "10m")
    assert not lab.connect("a", CNC, timeout=0.5) and lab.connect("a", LEGIT)

    # killed: its diversion stays (--queue-bypass: nobody reads the queue), traffic flows, the
    # admin's rules still decide
    s.kill9()
    assert "NFQUEUE" in s.iptables()
    syns = clamped(lab, backend)
    assert reach(lab) == ONLY_A
    assert clamped(lab, backend) >= syns + 4


def test_rules_and_blocks_wiped_by_someone_else_come_back(lab: Lab, tmp_path: Path, backend: str) -> None:
    """Debian's nftables.conf starts with `flush ruleset`: an nftables reload while slipsq runs wiped
    iptables-nft's tables, and with them slipsq's rules, so blocks stopped applying and traffic went
    uninspected until slipsq restarted. The daemon's worker checks every 10 s and puts back what is
    gone, rules and set members alike (here: the whole ruleset, or the table's chains, and the set)."""
    lab.serve()
    s = Slipsq(lab, tmp_path / "state", backend, config={})
    s.start()
    s.cli("block", CNC, "--for", "10m")
    assert not lab.connect("a", CNC, timeout=0.5)
    if backend == "nft" and shutil.which("nft"):
        lab.sh(lab.gw, "nft", "flush", "ruleset")
    else:
        for cmd in ("iptables", "ip6tables"):
            lab.sh(lab.gw, f"{cmd}-{backend}", "-t", "security", "-F")
    lab.sh(lab.gw, "ipset", "flush", "slipsq-block4")
    assert "NFQUEUE" not in s.iptables() and lab.connect("a", CNC)  # gone: the block no longer applies
    assert wait_for(lambda: "NFQUEUE" in s.iptables() and CNC in s.set_members(), timeout=25, step=0.5) is not None
    assert not lab.connect("a", CNC, timeout=0.5)  # the block applies again
    before = s.status()["packets"]
    assert lab.connect("a", LEGIT)
    assert s.status()["packets"] > before  # and traffic is inspected again
    r = s.cli("rules", "remove", check=False)  # the admin's way is refused while it runs: it would fight it
    assert r.returncode == 1 and "stop it first" in r.stderr and "NFQUEUE" in s.iptables()
    code, err = s.stop()
    assert code == 0 and "removed by someone else" in err
    assert "1 blocks were missing from the kernel sets; put back" in err
    assert "NFQUEUE" not in s.iptables()  # the stop took the diversion out, and nothing put it back
