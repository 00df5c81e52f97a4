"""slipsq.budget: memory.budget_mb lowers the traffic-grown caps, never raises one."""

from __future__ import annotations

import pytest

from slipsq import budget
from slipsq.runmode import load_config


def test_no_budget_changes_nothing() -> None:
    cfg = load_config(None)
    before = dict(cfg.items())
    assert budget.apply(cfg) == {}
    assert dict(cfg.items()) == before


def test_a_pi_budget_fits_100k_flows_and_lowers_the_detector_caps() -> None:
    cfg = load_config(None, {"memory.budget_mb": 100, "beacon.max_tuples": 1000})
    changed = budget.apply(cfg)
    assert cfg["flowtable.max_flows"] >= 100_000  # issue 13: 100,000 open flows in 100 MB
    assert set(changed) == set(budget.SHARES) - {"beacon.max_tuples"}  # 1000 is already below its cap
    assert cfg["beacon.max_tuples"] == 1000
    for key, (old, new) in changed.items():
        assert new < old and cfg[key] == new
    # what the caps add up to stays inside the budget (the table exact, the rest with overhead)
    total = sum(cfg[k] * cost * (1 if k == "flowtable.max_flows" else budget.OVERHEAD)
                for k, (cost, _) in budget.SHARES.items())
    assert budget.BASE_MB * 2**20 + total <= 100 * 2**20


@pytest.mark.parametrize("mb", [1, 48])
def test_tiny_budgets_are_raised_to_the_minimum(mb: int) -> None:
    assert budget.caps(mb) == budget.caps(budget.MIN_MB)


def test_bigger_budget_bigger_caps() -> None:
    small, big = budget.caps(100), budget.caps(400)
    assert all(big[k] > small[k] for k in small)


def test_every_map_a_flood_can_fill_is_in_the_budget() -> None:
    """A cap left out of budget.SHARES is memory a flood takes outside memory.budget_mb. The caps left
    out below bound a map only per key or are never network-fed past a few entries; each says why."""
    per_key_or_not_network_fed = {
        "portscan.max_targets",  # per key; the total is portscan.max_total_targets
        "portscan.max_servers",  # servers that answered local hosts: bounded by what the LAN uses
        "arpscan.max_senders", "arpscan.max_targets",  # per sender; the total is arpscan.max_total_targets
        "bruteforce.max_banners",  # servers whose login banner local hosts read
        "judge.max_findings",  # per offender (x judge.max_offenders)
        "judge.max_blocks",  # blocks: each one an admin can see, refused past the cap
        "judge.max_blocks_per_64",  # per network; the total is judge.max_blocks
        "stratosphere.max_letters",  # per tuple, one letter per flow: a flow rate, not a key flood
        "unknownport.max_servers",  # a threshold, not a map
        "hooks.max_per_minute",  # a rate, not a map
        "bypass.max_open",  # flows of the flow table (at most half of flowtable.max_flows), not a map of its own
    }
    cfg = load_config(None)
    caps = {k for k in cfg.options if k.rpartition(".")[2].startswith("max_")
            and isinstance(cfg[k], int) and not isinstance(cfg[k], bool)}
    missing = caps - set(budget.SHARES) - per_key_or_not_network_fed
    assert not missing, f"caps outside the memory budget: {sorted(missing)}"
    assert sum(share for _, share in budget.SHARES.values()) <= 1.0 + 1e-9
    assert set(budget.SHARES) <= set(cfg.options)
