"""slipsq.output.eve: slipsq's alerts as Suricata EVE lines, validated against Suricata's own schema
(tests/data/schemas: the alert part of its etc/schema.json), which real Suricata alerts pass too."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings

from slipsq.detect import DETECTORS
from slipsq.output.eve import eve_line, flow_id, suricata_time, to_eve
from slipsq.output.kinds import KINDS, SID_BASE, UNKNOWN_SIDS, kind
from tests.flowgen import DATA, bundled_alerts, hostile_alerts

SCHEMA = json.loads((DATA / "schemas" / "suricata-eve-alert.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
# what EveBox and Filebeat's suricata module read from an alert (their dashboards and rules key on them)
NEEDED = ("timestamp", "flow_id", "event_type", "src_ip", "dest_ip", "proto", "alert")
NEEDED_ALERT = ("action", "gid", "signature_id", "rev", "signature", "category", "severity")


def _errors(obj: dict[str, object]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in VALIDATOR.iter_errors(obj)]


def test_the_schema_fixture_accepts_real_suricata_alerts_and_refuses_bad_ones(shared_data: Path) -> None:
    lines = (shared_data / "suricata" / "eve-sample.json").read_text().splitlines()
    real = [json.loads(x) for x in lines if '"event_type":"alert"' in x]
    assert len(real) >= 5
    for obj in real:
        assert _errors(obj) == []
    bad = dict(real[0], timestamp="2021-06-06 15:59:46")  # no T, no fraction, no offset
    assert _errors(bad)
    assert _errors(dict(real[0], alert=dict(real[0]["alert"], signature_id="2403388")))  # a string id
    assert _errors(dict(real[0], unknown_field=1))  # the schema is closed, as Suricata's


def test_real_alerts_of_the_bundled_captures_are_valid_eve() -> None:
    alerts = bundled_alerts()
    assert {a.decision.action for a in alerts} == {"alert", "block"}
    for a in alerts:
        obj = json.loads(eve_line(a, "NFQ#0"))
        assert _errors(obj) == [], a.to_json()
        assert all(k in obj for k in NEEDED) and all(k in obj["alert"] for k in NEEDED_ALERT)
        assert obj["event_type"] == "alert" and obj["in_iface"] == "NFQ#0"
        assert obj["alert"]["action"] == ("blocked" if a.decision.action == "block" else "allowed")
        assert obj["src_ip"] == a.evidence.src_ip and obj["dest_ip"] == a.evidence.dst_ip
        assert obj.get("community_id") == a.to_dict()["community_id"]


def test_the_same_keys_in_the_same_order_as_a_real_suricata_alert(shared_data: Path) -> None:
    real = next(json.loads(x) for x in (shared_data / "suricata" / "eve-sample.json").read_text().splitlines()
                if '"event_type":"alert"' in x)
    ours = to_eve(next(a for a in bundled_alerts() if a.evidence.proto == "tcp" and a.evidence.flows))
    shared = [k for k in real if k in ours]
    assert shared == [k for k in ours if k in real]  # a reader keyed on Suricata's order is not surprised
    assert {"timestamp", "flow_id", "event_type", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "alert",
            "flow"} <= set(shared)
    assert set(ours["flow"]) == set(real["flow"])


def test_a_block_alert_by_field() -> None:
    a = next(a for a in bundled_alerts() if a.decision.action == "block" and a.evidence.detector == "portscan")
    obj = to_eve(a)
    assert "in_iface" not in obj  # replay: no interface, as Suricata reading a pcap
    assert obj["timestamp"] == suricata_time(a.decided_ts)
    assert obj["alert"]["signature_id"] == KINDS["portscan"].sid
    assert obj["alert"]["category"] == "Detection of a Network Scan"
    assert obj["alert"]["signature"] == f"SLIPSQ portscan: {a.evidence.description}"
    assert obj["alert"]["source"] == {"ip": a.evidence.offender}
    assert obj["alert"]["metadata"]["tag"][:2] == ["slipsq", "portscan"]
    assert obj["proto"] == a.evidence.proto.upper().replace("IPV6-ICMP", "IPv6-ICMP")


def test_suricata_time_format() -> None:
    assert suricata_time(1_700_000_000.25) == "2023-11-14T22:13:20.250000+0000"


def test_flow_ids_are_stable_per_flow_and_javascript_safe() -> None:
    assert flow_id("a") == flow_id("a") != flow_id("b")
    assert all(0 < flow_id(str(n)) < 2**53 for n in range(2000))


def test_every_detector_has_its_own_signature_id() -> None:
    names = {d.name for d in DETECTORS}
    assert names <= set(KINDS), f"add a row to slipsq/output/kinds.py for {names - set(KINDS)}"
    sids = [k.sid for k in KINDS.values()]
    assert len(sids) == len(set(sids)) and all(SID_BASE < s < 2_000_000 for s in sids)
    lo, hi = UNKNOWN_SIDS
    assert lo <= kind("some-future-detector").sid <= hi
    assert kind("some-future-detector") == kind("some-future-detector")


@settings(max_examples=200, deadline=None)
@given(hostile_alerts())
def test_hostile_alerts_stay_one_valid_eve_line(alert: object) -> None:
    line = eve_line(alert, "NFQ#3")  # type: ignore[arg-type]
    assert "\n" not in line and "\r" not in line
    obj = json.loads(line)
    assert _errors(obj) == []
    assert obj["alert"]["signature"].endswith(alert.evidence.description)  # type: ignore[attr-defined]
    for port in ("src_port", "dest_port"):
        assert port not in obj or 0 < obj[port] < 65536


@pytest.mark.parametrize(("level", "severity"), [(1.0, 1), (0.8, 1), (0.5, 2), (0.2, 3), (0.0, 3)])
def test_severity_follows_the_threat_level(level: float, severity: int) -> None:
    from slipsq.output.eve import severity as sev

    assert sev(level) == severity
