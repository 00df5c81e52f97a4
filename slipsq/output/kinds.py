"""What each detector's alerts are called in other tools' vocabularies, in one table: the Suricata
signature id and classtype description an EVE alert carries (slipsq.output.eve), and the IDMEFv2
category and detection method (slipsq.output.idmef). A new detector is one new row here (a test
checks that every registered detector has one); an unknown name still gets a stable id.

Data and one lookup only: no I/O, and nothing here decides what is an alert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

# Suricata reserves signature ids 1,000,000-1,999,999 for local rules (Emerging Threats uses
# 2,000,000-2,999,999): slipsq's detectors take 1,750,001 upwards, one per detector, never reused
SID_BASE = 1_750_000
UNKNOWN_SIDS = (1_759_000, 1_759_999)  # a detector without a row: a stable id from its name


@dataclass(frozen=True, slots=True)
class Kind:
    sid: int  # Suricata alert.signature_id (gid 1, as Suricata's own rules)
    suricata_category: str  # a classtype description from Suricata's classification.config
    idmef_category: str  # IDMEFv2 categoryEnum
    idmef_method: str  # IDMEFv2 analyzerMethodEnum


TROJAN = "A Network Trojan was detected"  # classtype trojan-activity (priority 1)
SCAN = "Detection of a Network Scan"  # network-scan (priority 3)
BAD = "Potentially Bad Traffic"  # bad-unknown (priority 2)
MISC_ATTACK = "Misc Attack"  # misc-attack, what Emerging Threats' reputation lists use
POLICY = "Potential Corporate Privacy Violation"  # policy-violation (priority 1)

KINDS: dict[str, Kind] = {
    "stratosphere": Kind(SID_BASE + 1, TROJAN, "Malware.Other", "Behavioral"),
    "threatintel": Kind(SID_BASE + 2, MISC_ATTACK, "Other.Uncategorised", "Threat Intelligence"),
    "portscan": Kind(SID_BASE + 3, SCAN, "Recon.Network", "Heuristic"),
    "p2p": Kind(SID_BASE + 4, POLICY, "Operational.Misuse", "Heuristic"),
    "beacon": Kind(SID_BASE + 5, TROJAN, "Malware.Other", "Statistical"),
    "bruteforce": Kind(SID_BASE + 6, "Attempted User Privilege Gain", "Access.Forced", "Threshold"),
    "arpscan": Kind(SID_BASE + 7, SCAN, "Recon.Network", "Heuristic"),
    "longconn": Kind(SID_BASE + 8, BAD, "Other.Undetermined", "Threshold"),
    "reconnect": Kind(SID_BASE + 9, BAD, "Access.Unauthorized", "Heuristic"),
    "unknownport": Kind(SID_BASE + 10, BAD, "Other.Undetermined", "Heuristic"),
    "exfil": Kind(SID_BASE + 11, "Attempted Information Leak", "Theft.Data", "Statistical"),
    "dga": Kind(SID_BASE + 12, TROJAN, "Malware.Other", "Statistical"),
    "dnstunnel": Kind(SID_BASE + 13, TROJAN, "Malware.Other", "Statistical"),
    # blocks no detector decided (an admin's `slipsq block`)
    "manual": Kind(SID_BASE + 999, "Misc activity", "Other.Uncategorised", "Policy"),
}


def kind(detector: str) -> Kind:
    """The row for `detector`; a detector without one gets a signature id from a hash of its name
    (stable across runs and machines, so a SIEM can still group its alerts) and neutral categories."""
    row = KINDS.get(detector)
    if row is not None:
        return row
    lo, hi = UNKNOWN_SIDS
    digest = int.from_bytes(hashlib.blake2b(detector.encode("utf-8", "replace"), digest_size=4).digest(), "big")
    return Kind(lo + digest % (hi - lo + 1), BAD, "Other.Undetermined", "Undetermined")
