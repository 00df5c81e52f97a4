"""Alerts as IDMEFv2 JSON (the Incident Detection Message Exchange Format, version 2: the IETF
draft by the IDMEFv2 task force, which Slips 1.1 exports), one message per line, validated in the
tests against the JSON schema the `idmefv2` package (SECEF/CS GROUP) ships for draft 08.

    Version      "2.D.V08" (the drafts' version string; the schema pins it)
    ID           a UUID derived from the alert itself (uuid5), so a replay gives the same IDs
    CreateTime   when slipsq decided; StartTime: when the traffic began (its first flow)
    Category     an IDMEFv2 category per detector (slipsq.output.kinds)
    Priority     from the evidence's threat level: Info, Low, Medium, High (critical is High)
    Confidence   the evidence's confidence (0..1); Description: its description
    Status       ["Event"] for an alert, ["Incident"] for one that decided a block (as Slips: an
                 evidence is an Event, a decided alert an Incident)
    Note         the judge's reason (score against threshold; what was blocked, for how long)
    Analyzer     Name "slipsq", Hostname, Model "slipsq <version>", Category NET.NIPS, Data
                 Flow and Network, Method per detector
    Source, Target   the evidence's two ends: IP, Port, Protocol (each with its own uuid5 ID, which
                 draft 08 requires)

Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import uuid
from typing import Any

from slipsq import __version__
from slipsq.output.kinds import kind
from slipsq.records import Alert, iso, json_line

VERSION = "2.D.V08"
# the namespace of slipsq's uuid5 IDs (itself uuid5 of slipsq's name in the URL namespace)
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "slipsq:idmefv2")


def priority(threat_level: float) -> str:
    if threat_level >= 0.8:
        return "High"
    if threat_level >= 0.5:
        return "Medium"
    return "Low" if threat_level >= 0.2 else "Info"


def _end(ip: str, port: int | None, proto: str, alert_id: str, role: str) -> dict[str, Any]:
    end: dict[str, Any] = {"ID": str(uuid.uuid5(NAMESPACE, f"{alert_id}/{role}"))}
    if ip:
        end["IP"] = ip
    if port is not None and 0 < port < 65536 and proto in ("tcp", "udp", "sctp"):
        end["Port"] = [port]
    if role == "source" and proto:  # Protocol is a Source attribute only, in draft 08
        end["Protocol"] = [proto]
    return end


def to_idmef(alert: Alert, hostname: str = "") -> dict[str, Any]:
    """The IDMEFv2 message for `alert` (`hostname`: the analyzer's, i.e. this gateway's)."""
    ev, d = alert.evidence, alert.decision
    alert_id = str(uuid.uuid5(NAMESPACE, alert.to_json()))
    k = kind(ev.detector)
    start = ev.flows[0].start if ev.flows else ev.ts
    analyzer: dict[str, Any] = {"Name": "slipsq"}
    if hostname:
        analyzer["Hostname"] = hostname
    analyzer.update({"Model": f"slipsq {__version__}", "Category": ["NET.NIPS"], "Data": ["Flow", "Network"],
                     "Method": [k.idmef_method]})
    note = d.reason
    if d.action == "block":
        until = "until unblocked" if not d.duration else f"for {d.duration:g} s"
        note = f"blocked {d.blocked_ip} {until}: {d.reason}"
    msg: dict[str, Any] = {
        "Version": VERSION,
        "ID": alert_id,
        "CreateTime": iso(alert.decided_ts),
        "StartTime": iso(start),
        "Category": [k.idmef_category],
        "Priority": priority(ev.threat_level),
        "Confidence": min(max(float(ev.confidence), 0.0), 1.0),
        "Description": ev.description,
        "Status": ["Incident" if d.action == "block" else "Event"],
        "Note": note,
        "Analyzer": analyzer,
        "Source": [_end(ev.src_ip, alert.src_port(), ev.proto, alert_id, "source")],
        "Target": [_end(ev.dst_ip, ev.dst_port, ev.proto, alert_id, "target")],
    }
    return msg


def idmef_line(alert: Alert, hostname: str = "") -> str:
    """One IDMEFv2 message as one JSON line (no newline)."""
    return json_line(to_idmef(alert, hostname))
