"""slipsq.output.idmef: alerts as IDMEFv2, validated by the `idmefv2` package (SECEF/CS GROUP) against
the JSON schema it ships for the draft slipsq writes (2.D.V08)."""

from __future__ import annotations

import json
import uuid

import jsonschema
import pytest
from hypothesis import given, settings
from idmefv2 import Message

from slipsq.output.idmef import VERSION, idmef_line, priority, to_idmef
from tests.flowgen import bundled_alerts, hostile_alerts


def _validate(obj: dict[str, object]) -> None:
    msg = Message()
    msg.update(obj)
    msg.validate()  # picks the schema by Version: 2.D.V08's


def test_the_validator_uses_the_draft_we_write_and_refuses_bad_messages() -> None:
    good = to_idmef(bundled_alerts()[0], "gw")
    _validate(good)
    for bad in (dict(good, Priority="Severe"), dict(good, ID="not-a-uuid"), dict(good, Version="2.0.3"),
                {k: v for k, v in good.items() if k != "Analyzer"},
                dict(good, Source=[{"IP": "10.0.0.1"}])):  # draft 08: a Source needs its own ID
        with pytest.raises(jsonschema.ValidationError):
            _validate(bad)


def test_real_alerts_of_the_bundled_captures_are_valid_idmefv2() -> None:
    alerts = bundled_alerts()
    ids = set()
    for a in alerts:
        obj = json.loads(idmef_line(a, "gateway.home.arpa"))
        _validate(obj)
        ev = a.evidence
        assert obj["Version"] == VERSION
        assert obj["Description"] == ev.description
        assert obj["Source"][0].get("IP") == ev.src_ip and obj["Target"][0].get("IP") == ev.dst_ip
        assert obj["Status"] == (["Incident"] if a.decision.action == "block" else ["Event"])
        assert obj["Analyzer"]["Name"] == "slipsq" and obj["Analyzer"]["Hostname"] == "gateway.home.arpa"
        ids.add(obj["ID"])
    assert len(ids) == len(alerts)  # one ID per alert


def test_ids_are_deterministic_uuids() -> None:
    a = bundled_alerts()[0]
    first, second = to_idmef(a), to_idmef(a)
    assert first["ID"] == second["ID"] and uuid.UUID(first["ID"]).version == 5
    assert first["Source"][0]["ID"] != first["Target"][0]["ID"] != first["ID"]


def test_a_block_names_what_was_blocked() -> None:
    a = next(a for a in bundled_alerts() if a.decision.action == "block")
    obj = to_idmef(a)
    assert a.decision.blocked_ip in obj["Note"] and obj["Priority"] in ("Medium", "High")


@pytest.mark.parametrize(("level", "want"), [(1.0, "High"), (0.8, "High"), (0.5, "Medium"), (0.2, "Low"),
                                             (0.0, "Info")])
def test_priority_from_threat_level(level: float, want: str) -> None:
    assert priority(level) == want


@settings(max_examples=150, deadline=None)
@given(hostile_alerts())
def test_hostile_alerts_give_valid_messages(alert: object) -> None:
    line = idmef_line(alert, "gw")  # type: ignore[arg-type]
    assert "\n" not in line
    _validate(json.loads(line))
