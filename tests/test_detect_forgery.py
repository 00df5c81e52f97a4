"""Traffic forged to get somebody else blocked (tools/gen_corpus.py's "forged" scenarios), replayed at
packet level as `slipsq replay -o DIR` does: nobody is blocked. Each forged scenario has a genuine
twin, the same behaviour done for real, which is blocked: so what keeps the forged one unblocked is
the proof the detectors now ask for (tcpstate.opened and conversed, the Markov guard of servers in
use), not a scenario too weak to matter.

Found by review (2026-12-06): SYNs sent as a resolver got it blocked for ssh brute force, SYN-ACKs
nobody asked for and refused SYNs made beacons and Markov matches against it, RSTs a forger sent
cut a VPN connection into a "beacon", a push channel idle past tcp_idle became one, and segments
with no handshake made an "exfiltration" to the resolver.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import detection

from slipsq.detect.tcpstate import conversed, denied, opened
from slipsq.flow import Flow
from tools import gen_corpus
from tools.gencapture import write_capture

FORGED = [s.name for s in gen_corpus.SCENARIOS if s.extra.get("forged")]
# the forged scenario -> (its genuine twin, who the twin gets blocked, by which detector)
GENUINE: dict[str, tuple[Callable[[random.Random], Iterator[object]], str, str]] = {
    "forged-ssh-syns": (gen_corpus._forged_ssh_syns(genuine=True), gen_corpus.RESOLVER, "bruteforce"),
    "forged-synacks": (gen_corpus._forged_synacks(genuine=True), gen_corpus.RESOLVER, "beacon"),
    "halfopen-to-resolver": (gen_corpus._halfopen_to_resolver(genuine=True), "198.51.100.244", "stratosphere"),
    "forged-rsts": (gen_corpus._forged_rsts(genuine=True), "198.51.100.194", "beacon"),
    "forged-upload": (gen_corpus._forged_upload(genuine=True), "198.51.100.245", "exfil"),
    "forged-nxdomain": (gen_corpus._forged_nxdomain(genuine=True), gen_corpus.LAPTOP, "dga"),
    "forged-scan-v6-nas": (gen_corpus._forged_scan_v6(genuine=True), gen_corpus.V6_PHONE, "portscan"),
}


def replay(build: Callable[[random.Random], Iterator[object]], tmp_path: Path, name: str) -> detection.Result:
    """The capture `build` makes, replayed with its scenario's settings (`extra["config"]`, if any)."""
    cap = tmp_path / f"{name}.pcap"
    write_capture(build(random.Random(1)), cap)  # type: ignore[arg-type]
    config = gen_corpus.BY_NAME[name.removesuffix("-genuine")].extra.get("config")
    return detection.Result(name, "benign", frozenset(), (), detection.replay(cap, tmp_path / f"{name}-out",
                                                                              config))  # type: ignore[arg-type]


def test_every_forged_scenario_has_its_genuine_twin() -> None:
    assert sorted(FORGED) == sorted(GENUINE)


@pytest.mark.parametrize("name", FORGED)
def test_forged_traffic_blocks_no_one(name: str, tmp_path: Path) -> None:
    r = replay(gen_corpus.BY_NAME[name].build, tmp_path, name)
    assert r.blocked == [], [a["description"] for a in r.blocks]


@pytest.mark.parametrize("name", FORGED)
def test_the_same_behaviour_done_for_real_is_blocked(name: str, tmp_path: Path) -> None:
    build, who, detector = GENUINE[name]
    r = replay(build, tmp_path, name + "-genuine")
    assert who in r.blocked, [a["description"] for a in r.alerts]
    assert detector in {a["detector"] for a in r.alerts if a.get("offender") == who}


def test_a_push_channel_idle_longer_than_the_table_timeout_is_no_beacon(tmp_path: Path) -> None:
    r = replay(gen_corpus.BY_NAME["long-keepalives"].build, tmp_path, "long-keepalives")
    assert r.blocked == []
    assert [a for a in r.alerts if a["detector"] == "beacon"] == []


@pytest.mark.parametrize(("state", "dpkts", "is_opened", "is_conversed", "is_denied"), [
    ("SPA_SPA", 5, True, True, False),        # a connection with data back
    ("FSPA_FSPA", 5, True, True, False),
    ("SPA_SRA", 2, True, False, False),       # the server accepted, then reset without a word
    ("SA_SA", 1, True, False, False),
    ("SR_SA", 1, False, False, False),        # SYNs in somebody's name: its owner answers the SYN-ACK with RST
    ("S_RA", 1, False, False, True),          # refused
    ("S_", 0, False, False, False),           # never answered
    ("R_SA", 1, False, False, False),         # a SYN-ACK nobody asked for
    ("PA_PA", 3, False, False, False),        # the middle of a connection (after an idle gap or a RST)
    ("PA_RA", 1, False, False, True),         # segments with no handshake, reset: forged
    ("FPA_FPA", 3, False, False, False),      # an Argus status record after the first
    ("SF", 4, True, True, False),             # Zeek
    ("S1", 4, True, True, False),
    ("OTH", 4, False, False, False),
    ("RSTRH", 1, False, False, False),
    ("REJ", 1, False, False, False),
    ("established", 4, True, True, False),    # Suricata
    ("new", 1, False, False, False),
    ("REQ", 0, False, False, False),          # Argus: a SYN, nothing more
    ("closed", 3, True, True, False),         # says nothing: opened; the packets back decide conversed
    ("closed", 0, True, False, False),
    ("FIN", 0, True, False, False),           # Argus words other than REQ say nothing either
    (".AP.SF", 2, True, True, False),         # nfdump: both sides' flags in one
    ("", 0, True, False, False),
])
def test_how_far_a_connection_got(state: str, dpkts: int, is_opened: bool, is_conversed: bool,
                                  is_denied: bool) -> None:
    f = Flow(0.0, 1.0, "tcp", "192.168.1.10", 40000, "198.51.100.1", 443, 3, dpkts, 180, 60 * dpkts, state=state)
    assert (opened(f), conversed(f), denied(f)) == (is_opened, is_conversed, is_denied)
