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


def ipt(lab: Lab, backend: str, fam: int = 4) -> str:
    cmd = ("iptables" if fam == 4 else "ip6tables") + ("-nft" if backend == "nft" else "-legacy")
    return lab.sh(lab.gw, cmd, "-S").stdout


def test_install_block_and_remove_only_what_slipsq_made(lab: Lab, backend: str, tmp_path: Path) -> None:
    cmd = "iptables-nft" if backend == "nft" else "iptables-legacy"
    # the admin's own chain and rule, which slipsq must never touch
    lab.sh(lab.gw, cmd, "-N", "ADMIN")
    lab.sh(lab.gw, cmd, "-A", "ADMIN", "-s", "192.0.2.1", "-j", "DROP")
    lab.sh(lab.gw, cmd, "-A", "FORWARD", "-j", "ADMIN")
    env = ["env", f"PYTHONPATH={ROOT}"]
    out = json.loads(lab.sh(lab.gw, *env, sys.executable, "-c", SCRIPT, backend).stdout)
    assert out["refused"] == ["10.9.1.1", "10.71.1.1"]
    assert out["members"] == {"203.0.113.7": out["members"]["203.0.113.7"], "2001:db8::7": 0}
    assert 55 <= out["members"]["203.0.113.7"] <= 60
    # twice installed, once present: jump 1st, diversion 2nd, admin's rule after them
    fwd = [line for line in ipt(lab, backend).splitlines() if line.startswith("-A FORWARD")]
    assert len(fwd) == 3 and "-j SLIPSQ" in fwd[0] and "NFQUEUE" in fwd[1] and fwd[2] == "-A FORWARD -j ADMIN"
    assert "slipsq-block6" in ipt(lab, backend, 6)
    # the other backend's tables hold nothing of slipsq's
    other = "legacy" if backend == "nft" else "nft"
    assert "slipsq" not in ipt(lab, other)

    r = lab.sh(lab.gw, *env, f"SLIPSQ_IPTABLES_BACKEND={backend}", sys.executable, "-m", "slipsq",
               "rules", "remove", "--state-dir", str(tmp_path))
    assert "removed" in r.stdout
    left = ipt(lab, backend)
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
