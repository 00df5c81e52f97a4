"""A memory budget for small machines: `memory.budget_mb` (e.g. 100 on a Raspberry Pi) lowers the
caps of the maps that grow with traffic so that, together, they fit.

Every map the network can fill has a cap here (a cap left out is memory a flood takes outside the
budget). The costs per entry are measured by bench/mapcost.py (one flood per map, tracemalloc, the
key strings a flood invents included) on CPython 3.11 x86-64 (arm64 the same within a few percent:
the same pointer size and allocator); the flow table's 136 B per open flow is its C arrays, exact.
The idle daemon itself (interpreter, modules, models) is ~35 MB (bench/memory.py) and comes first.
A budget only ever lowers a cap: a smaller value set in the file stays. 0 (the default) is no budget.
This module changes configuration values; it measures nothing at run time.
"""

from __future__ import annotations

from slipsq.config import Config

BASE_MB = 35  # the idle daemon: interpreter, slipsq's modules, the shipped models (bench/memory.py)
MIN_MB = 48  # below this the caps would be too small to detect anything
# measured costs are for each map alone; together they cost more (allocator fragmentation, the Flow
# objects in flight, memory the table frees but the allocator keeps): bench/memory.py's closed-flows
# run at 100 MB came out 1.3-1.45x the sum, hence this factor
OVERHEAD = 1.45

# key -> (bytes per entry, share of what the budget leaves after BASE_MB)
SHARES: dict[str, tuple[int, float]] = {
    "flowtable.max_flows": (136, 0.22),  # C arrays: exact, no OVERHEAD; 100,000 flows at 100 MB
    "stratosphere.max_tuples": (440, 0.14),
    "beacon.max_tuples": (590, 0.14),
    "portscan.max_keys": (860, 0.10),  # a (source, port) and a (source, host) key with their targets
    "portscan.max_total_targets": (90, 0.04),  # one more target of a key
    # an address and its set, with one short name (417-424 B from 16,500 to 66,000 entries, 2026-12-07)
    "dns.max_addresses": (425, 0.05),
    # one more name (a flood's 253 bytes, each not UTF-8 and decoded to U+FFFD: a 580 B string, and
    # its slot in the set): 16 long names an address made an address cost 5.6 kB, and
    # dns.max_addresses alone bounded nothing (a review); 340 B counted ASCII names only (another)
    "dns.max_names": (620, 0.03),
    "judge.max_offenders": (1280, 0.07),  # an evidence window with one finding, its description and source
    # a (client, server, port) storm, and for a local server the (client, server) pair's failed ports
    # (up to 10): 336 B toward the Internet, 739 B for forged LAN pairs, the worst case
    "reconnect.max_tuples": (740, 0.03),
    "exfil.max_pairs": (450, 0.03),
    # a (client, server) pair and the name its TLS ClientHello asked for: 130 B measured, plus the
    # name (a flood's 253 characters: 300 B) and two address strings a flood invents; plus as many
    # tunnel marks (a connection's 4-tuple whose first bytes were a VPN client's: 147 B measured, and
    # its two address strings, 120 B)
    "exfil.max_tls_names": (830, 0.02),
    "bruteforce.max_keys": (260, 0.03),
    "longconn.max_connections": (290, 0.03),
    "dga.max_total_sites": (270, 0.02),
    "dnstunnel.max_total_names": (400, 0.01),  # a (host, domain) pair's name: a 60-250 B string and its slot
    "p2p.max_total_peers": (700, 0.02),
    "arpscan.max_total_targets": (160, 0.02),
}


def caps(budget_mb: int) -> dict[str, int]:
    """The cap each budgeted map gets from `budget_mb` (>= MIN_MB)."""
    spare = (max(budget_mb, MIN_MB) - BASE_MB) * 1024 * 1024
    out = {}
    for key, (cost, share) in SHARES.items():
        per_entry = cost if key == "flowtable.max_flows" else cost * OVERHEAD
        out[key] = max(1000, int(spare * share / per_entry))
    return out


def apply(cfg: Config) -> dict[str, tuple[int, int]]:
    """Lower `cfg`'s caps to fit memory.budget_mb, in place; returns {key: (old, new)} of what changed
    (for the daemon's start-up line)."""
    budget = int(cfg["memory.budget_mb"])
    changed: dict[str, tuple[int, int]] = {}
    if budget <= 0:
        return changed
    for key, cap in caps(budget).items():
        if key in cfg.options and cfg[key] > cap:
            changed[key] = (cfg[key], cap)
            cfg.set(key, cap)
    return changed
