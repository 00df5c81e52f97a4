"""An alert is one piece of evidence plus the judge's decision, in the form people and tools read.

JSON fields (stable, one object per line): ts, time, detector, src_ip, dst_ip, dst_port, proto,
description, threat_level, confidence, score, label, action ("alert" or "block"), blocked_ip,
block_seconds, reason, offender, and `enrich` (GeoIP/ASN of the IPs, where configured).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from slipsq.evidence import Evidence, threat_name
from slipsq.judge import Decision
from slipsq.sink import Sink

if TYPE_CHECKING:
    from slipsq.detect.base import Context


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Alert:
    evidence: Evidence
    decision: Decision
    enrich: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, ev: Evidence, decision: Decision, ctx: Context | None = None) -> Alert:
        enrich: dict[str, Any] = {}
        if ctx is not None:
            for fn in ctx.enrichers:
                for ip in (ev.src_ip, ev.dst_ip):
                    info = fn(ip)
                    if info:
                        enrich[ip] = info
        return cls(ev, decision, enrich)

    def to_dict(self) -> dict[str, Any]:
        ev, d = self.evidence, self.decision
        out: dict[str, Any] = {
            "ts": round(ev.ts, 6),
            "time": iso(ev.ts),
            "detector": ev.detector,
            "src_ip": ev.src_ip,
            "dst_ip": ev.dst_ip,
            "dst_port": ev.dst_port,
            "proto": ev.proto,
            "description": ev.description,
            "threat_level": threat_name(ev.threat_level),
            "confidence": round(ev.confidence, 3),
            "score": round(d.score, 3),
            "label": ev.label,
            "action": d.action,
            "blocked_ip": d.blocked_ip or None,
            "block_seconds": d.duration if d.action == "block" else None,
            "reason": d.reason,
            "offender": ev.offender,
        }
        if self.enrich:
            out["enrich"] = self.enrich
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))

    def to_text(self) -> str:
        ev, d = self.evidence, self.decision
        port = f":{ev.dst_port}" if ev.dst_port else ""
        head = f"{iso(ev.ts)} [{d.action.upper():5}] {ev.detector}: {ev.description}"
        tail = (f"  ({ev.src_ip} -> {ev.dst_ip}{port}/{ev.proto}, threat {threat_name(ev.threat_level)}, "
                f"confidence {ev.confidence:.2f}, score {d.score:.2f}")
        if ev.label:
            tail += f", model {ev.label}"
        if d.action == "block":
            dur = "until unblocked" if not d.duration else f"for {d.duration / 3600:g}h"
            tail += f"; BLOCKED {d.blocked_ip} {dur}: {d.reason})"
        else:
            tail += f"; {d.reason})"
        return head + tail


class AlertWriter(Sink):
    """A sink that writes alerts to a text stream, as JSON lines or human lines."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json

    def alert(self, alert: Alert) -> None:
        self.stream.write((alert.to_json() if self.as_json else alert.to_text()) + "\n")
        self.stream.flush()

    def unblock(self, ip: str, ts: float, reason: str, who: str) -> None:
        if not self.as_json:
            self.stream.write(f"{iso(ts)} [UNBLOCK] {ip}: {reason}\n")
