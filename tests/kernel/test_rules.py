"""slipsq's firewall rules in a real namespace, on both iptables backends: install is idempotent,
blocks drop, `slipsq rules remove` removes only what slipsq made (a foreign rule and chain survive)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.kernel.lab import ROOT, Lab

pytestmark = pytest.mark.kernel

SCRIPT = r"""
import json, sys
from slipsq.allow import AllowList
from slipsq.verdict.firewall import Firewall
fw = Firewall(AllowList(["10.9.0.0/16"], own=["10.71.1.1"]), backend=sys.argv[1])
fw.install(queue=4)
fw.install(queue=4)
refused = fw.block([("203.0.113.7", 60), ("2001:db8::7", None), ("10.9.1.1", 60), ("10.71.1.1", 60)])
print(json.dumps({"refused": [ip for ip, _ in refused], "members": fw.members(),
                  "rules": [[f, r.chain, r.position, r.target] for f, r in fw.rules()]}))
"""


def ipt(lab: Lab, backend: str, fam: int = 4, table: str = "security") -> str:
    """`iptables -t TABLE -S` of one backend and family in the gateway (security: slipsq's table)."""
    cmd = ("iptables" if fam == 4 else "ip6tables") + ("-nft" if backend == "nft" else "-legacy")
    return lab.sh(lab.gw, cmd, "-t", table, "-S").stdout


def test_install_block_and_remove_only_what_slipsq_made(lab: Lab, backend: str, tmp_path: Path) -> None:
    cmd = "iptables-nft" if backend == "nft" else "iptables-legacy"
    # the admin's own chain and rule, which slipsq must never touch; and, as a slipsq until 2026-12-06
    # left them, its chain, jump and diversion in the filter table, which must go
    lab.sh(lab.gw, cmd, "-N", "ADMIN")
    lab.sh(lab.gw, cmd, "-A", "ADMIN", "-s", "192.0.2.1", "-j", "DROP")
    lab.sh(lab.gw, cmd, "-A", "FORWARD", "-j", "ADMIN")
    lab.sh(lab.gw, cmd, "-N", "SLIPSQ")
    lab.sh(lab.gw, cmd, "-I", "FORWARD", "1", "-m", "comment", "--comment", "slipsq queue 4", "-j", "NFQUEUE",
           "--queue-num", "4", "--queue-bypass")
    lab.sh(lab.gw, cmd, "-I", "FORWARD", "1", "-m", "comment", "--comment", "slipsq", "-j", "SLIPSQ")
    lab.sh(lab.gw, cmd, "-t", "mangle", "-N", "SLIPSQ")  # and, as slipsq did for a day, in mangle
    lab.sh(lab.gw, cmd, "-t", "mangle", "-I", "FORWARD", "1", "-m", "comment", "--comment", "slipsq", "-j", "SLIPSQ")
    env = ["env", f"PYTHONPATH={ROOT}"]
    out = json.loads(lab.sh(lab.gw, *env, sys.executable, "-c", SCRIPT, backend).stdout)
    assert out["refused"] == ["10.9.1.1", "10.71.1.1"]
    assert out["members"] == {"203.0.113.7": out["members"]["203.0.113.7"], "2001:db8::7": 0}
    assert 55 <= out["members"]["203.0.113.7"] <= 60
    # twice installed, once present, in the security table: jump 1st, diversion 2nd
    fwd = [line for line in ipt(lab, backend).splitlines() if line.startswith("-A FORWARD")]
    assert len(fwd) == 2 and "-j SLIPSQ" in fwd[0] and "NFQUEUE" in fwd[1]
    # the filter table is the admin's alone again: the old rules went, the admin's stayed
    filt = ipt(lab, backend, table="filter")
    assert "slipsq" not in filt and "SLIPSQ" not in filt
    assert "slipsq" not in ipt(lab, backend, table="mangle") and "SLIPSQ" not in ipt(lab, backend, table="mangle")
    assert [x for x in filt.splitlines() if x.startswith("-A FORWARD")] == ["-A FORWARD -j ADMIN"]
    assert "slipsq-block6" in ipt(lab, backend, 6)
    # the other backend's tables hold nothing of slipsq's
    other = "legacy" if backend == "nft" else "nft"
    assert "slipsq" not in ipt(lab, other) and "slipsq" not in ipt(lab, other, table="filter")

    r = lab.sh(lab.gw, *env, f"SLIPSQ_IPTABLES_BACKEND={backend}", sys.executable, "-m", "slipsq",
               "rules", "remove", "--state-dir", str(tmp_path))
    assert "removed" in r.stdout
    left = ipt(lab, backend) + ipt(lab, backend, table="filter")
    assert "slipsq" not in left and "SLIPSQ" not in left
    assert "-N ADMIN" in left and "-A ADMIN -s 192.0.2.1/32 -j DROP" in left and "-A FORWARD -j ADMIN" in left
    assert "slipsq" not in ipt(lab, backend, 6)
    assert lab.sh(lab.gw, "ipset", "list", "-n").stdout.strip() == ""
    # removing again is harmless
    lab.sh(lab.gw, *env, f"SLIPSQ_IPTABLES_BACKEND={backend}", sys.executable, "-m", "slipsq",
           "rules", "remove", "--state-dir", str(tmp_path))


UNBLOCK_LOST = r"""
import json, sys
from slipsq.allow import AllowList
from slipsq.control import Admin
from slipsq.verdict.firewall import Firewall
from slipsq.verdict.store import BlockStore
fw = Firewall(AllowList(), backend=sys.argv[1])
fw.install(None)
fw.block([("203.0.113.8", 600)])
before = sorted(fw.members())
Admin(BlockStore(sys.argv[2]), fw, AllowList(), None).unblock("203.0.113.8")  # the store never knew it
print(json.dumps({"before": before, "after": sorted(fw.members())}))
"""


def test_unblock_of_a_block_only_in_the_kernel_set(lab: Lab, backend: str, tmp_path: Path) -> None:
    env = ["env", f"PYTHONPATH={ROOT}"]
    out = json.loads(lab.sh(lab.gw, *env, sys.executable, "-c", UNBLOCK_LOST, backend, str(tmp_path)).stdout)
    assert out == {"before": ["203.0.113.8"], "after": []}


RACE = r"""
import subprocess, sys
from slipsq.allow import AllowList
from slipsq.verdict.firewall import Firewall
fw = Firewall(AllowList(), backend=sys.argv[1])
fw.install(queue=4)
b = fw.backend
stale = b.rules(4)  # read, and then the admin inserts a rule at the top of the same chain
subprocess.run([sys.argv[2], "-t", b.table, "-I", "FORWARD", "1", "-s", "192.0.2.9", "-j", "DROP"], check=True)
type(b).rules = lambda self, fam, real=type(b).rules: stale if fam == 4 else real(self, fam)
print(b.delete_tagged(4, lambda r: r.comment == "slipsq queue 4"))
"""


def test_a_rule_the_admin_inserted_meanwhile_is_never_deleted_in_place_of_ours(
        lab: Lab, backend: str, tmp_path: Path) -> None:
    """Deletions go by what the rule says, not by the position read a moment earlier (review of
    2026-12-06): with positions, the admin's new rule shifted ours, and the wrong rule went."""
    cmd = "iptables-nft" if backend == "nft" else "iptables-legacy"
    r = lab.sh(lab.gw, "env", f"PYTHONPATH={ROOT}", sys.executable, "-c", RACE, backend, cmd)
    assert r.stdout.split() == ["1"], r.stderr
    fwd = [x for x in ipt(lab, backend).splitlines() if x.startswith("-A FORWARD")]
    assert fwd == ["-A FORWARD -s 192.0.2.9/32 -j DROP", "-A FORWARD -m comment --comment slipsq -j SLIPSQ"], fwd
