"""The records the pipeline passes along, in one low module that imports no stage: Evidence (what
a detector found), Decision (what the judge made of it), Alert (both, as people and tools read them),
and the commands the engine returns for the caller to carry out: Alert, Block, Unblock (and Flow,
from slipsq.flow, for the flow writers; Query, DNS answers, for the activity log). Data only: no I/O, no clock.

Threat levels follow Slips: info 0, low 0.2, medium 0.5, high 0.8, critical 1.0. The judge sums
threat_level × confidence per offender per time window, persistent findings twice (see judge.py).

Alert JSON fields (stable, one object per line): ts, time (the traffic's time: the evidence's),
decided_ts, decided (when the judge decided: the engine's clock, so alerts are in this order),
detector, src_ip, src_port, dst_ip, dst_port, proto, description, threat_level, confidence, score,
label, action ("alert" or "block"), blocked_ip, block_seconds, reason, offender, community_id and
flow_key (of the evidence's last flow: its Community ID, and its StartTime,Proto,SrcAddr,Sport,
DstAddr,Dport in flows.binetflow; null without a flow), `window` (on a block only: the findings of
the window that decided, see Finding) and `enrich` (GeoIP/ASN of the IPs, where configured).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slipsq.flow import Flow

INFO, LOW, MEDIUM, HIGH, CRITICAL = 0.0, 0.2, 0.5, 0.8, 1.0
THREAT_NAMES = {INFO: "info", LOW: "low", MEDIUM: "medium", HIGH: "high", CRITICAL: "critical"}


def threat_name(level: float) -> str:
    return THREAT_NAMES.get(level, f"{level:.2f}")


@dataclass(frozen=True, slots=True)
class Evidence:
    """One finding against one IP (`offender`, the IP the judge would block).

    `src_ip`/`dst_ip`/`dst_port`/`proto` name the 4-tuple (or the scan's source and one target)
    that shows it. `may_block=False` marks evidence that is reported and counted but can never cause
    a block on its own (the judge needs at least one blocking piece in the window).
    `key` lets a detector say "this is the same finding as before" (e.g. the same tuple matched the
    same model again); the judge counts a key once per window, with its highest score.
    """

    ts: float
    detector: str
    offender: str
    src_ip: str
    dst_ip: str
    dst_port: int
    proto: str
    description: str
    threat_level: float
    confidence: float
    label: str = ""
    may_block: bool = True
    key: str = ""
    flows: tuple[Flow, ...] = ()

    @property
    def score(self) -> float:
        return self.threat_level * self.confidence


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding of the window that decided a block, as the judge counted it (see judge.py):
    `score` its best threat_level x confidence, `weight` 2 when it persisted, else 1."""

    detector: str
    key: str
    score: float
    weight: int
    first: float  # flow time of its first and last report in the window
    last: float
    reports: int
    may_block: bool
    description: str  # of its best report

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "key": self.key, "score": round(self.score, 6),
                "weight": self.weight, "first": round(self.first, 6), "last": round(self.last, 6),
                "reports": self.reports, "may_block": self.may_block, "description": self.description}


@dataclass(frozen=True, slots=True)
class Decision:
    action: str  # "alert" or "block"
    blocked_ip: str  # "" unless action == "block"
    duration: float  # seconds; 0 = until unblocked
    score: float  # the offender's window score after this evidence
    reason: str  # one line: why blocked, or why not
    threshold: float = 1.0  # what the score was compared with (for printing it truthfully)
    window: tuple[Finding, ...] = ()  # on a block: the window's findings, largest contribution first
    lifted: tuple[str, ...] = ()  # on a block: the judge's older blocks it lifted (judge.max_blocks_per_64)


def is_number(v: Any) -> bool:
    """A finite int or float (not a bool): what a field slipsq wrote as a number holds, checked when
    the file or store it comes from may have been edited or damaged."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def fmt_score(score: float, threshold: float) -> str:
    """`score` with two decimals, or as many more (up to 6) as it takes for the printed number to
    compare with `threshold` as the score itself does: 0.996 against 1 prints "0.996", never "1.00"."""
    for digits in range(2, 7):
        text = f"{score:.{digits}f}"
        if (float(text) >= threshold) == (score >= threshold):
            return text
    return repr(score)


def printable(text: Any) -> str:
    """`text` with control and other unprintable characters as \\xNN escapes (a DNS name may hold any
    byte: it must not drive the terminal that prints it, nor start a line of its own in a log)."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


def utf8_text(text: str) -> str:
    """`text` as any UTF-8 stream, file or database can take it: a lone surrogate (non-UTF-8 bytes
    in a command-line argument, a "\\udcff" escape in a JSON input), which UTF-8 cannot encode,
    becomes the text \\udcff; everything else is kept as it is."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_line(obj: Any) -> str:
    """`obj` as one compact JSON line that any UTF-8 stream can take. Non-ASCII text stays as it is
    (smaller and readable, as Suricata writes it), unless the object holds a lone surrogate, which
    UTF-8 cannot encode (a JSON input such as eve.json may carry one as a "\\udcff" escape): then the
    line is all-ASCII escapes, the same JSON to any reader. Without this the writer's
    UnicodeEncodeError would lose that alert."""
    line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:
            return json.dumps(obj, separators=(",", ":"))
    return line


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class Alert:
    """`decided`: the engine's time when the judge decided (0: the evidence's own time). The evidence
    time is when the traffic happened; a flow's evidence comes when the flow closes, later."""

    evidence: Evidence
    decision: Decision
    enrich: dict[str, Any] = field(default_factory=dict)
    decided: float = 0.0

    @classmethod
    def build(cls, ev: Evidence, decision: Decision,
              enrichers: Sequence[Callable[[str], dict[str, Any]]] = (), decided: float = 0.0) -> Alert:
        enrich: dict[str, Any] = {}
        for fn in enrichers:
            for ip in (ev.src_ip, ev.dst_ip):
                info = fn(ip)
                if info:
                    enrich[ip] = info
        return cls(ev, decision, enrich, decided)

    @property
    def decided_ts(self) -> float:
        return self.decided or self.evidence.ts

    def src_port(self) -> int | None:
        """The source port of the evidence's last flow, seen from the evidence's src_ip."""
        ev = self.evidence
        if not ev.flows:
            return None
        f = ev.flows[-1]
        if f.saddr == ev.src_ip:
            return f.sport
        return f.dport if f.daddr == ev.src_ip else None

    def to_dict(self) -> dict[str, Any]:
        from slipsq.flowkeys import community_id, flow_key

        ev, d = self.evidence, self.decision
        last = ev.flows[-1] if ev.flows else None
        out: dict[str, Any] = {
            "ts": round(ev.ts, 6),
            "time": iso(ev.ts),
            "decided_ts": round(self.decided_ts, 6),
            "decided": iso(self.decided_ts),
            "detector": ev.detector,
            "src_ip": ev.src_ip,
            "src_port": self.src_port(),
            "dst_ip": ev.dst_ip,
            "dst_port": ev.dst_port,
            "proto": ev.proto,
            "description": ev.description,
            "threat_level": threat_name(ev.threat_level),
            "confidence": round(ev.confidence, 3),
            "score": round(d.score, 6),
            "label": ev.label,
            "action": d.action,
            "blocked_ip": d.blocked_ip or None,
            "block_seconds": d.duration if d.action == "block" else None,
            "reason": d.reason,
            "offender": ev.offender,
            "community_id": community_id(last) if last is not None else None,
            "flow_key": flow_key(last) if last is not None else None,
        }
        if d.window:
            out["window"] = [f.to_dict() for f in d.window]
        if self.enrich:
            out["enrich"] = self.enrich
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False, separators=(",", ":"))

    def to_text(self) -> str:
        ev, d = self.evidence, self.decision
        port = f":{ev.dst_port}" if ev.dst_port else ""
        sport = self.src_port()
        src = f"{ev.src_ip}:{sport}" if sport else ev.src_ip
        # decision time first, so the lines of a log are in time order; the traffic's time beside it
        head = f"{iso(self.decided_ts)} [{d.action.upper():5}] {ev.detector}: {ev.description}"
        tail = (f"  (traffic at {iso(ev.ts)}; {src} -> {ev.dst_ip}{port}/{ev.proto}, "
                f"threat {threat_name(ev.threat_level)}, "
                f"confidence {ev.confidence:.2f}, score {fmt_score(d.score, d.threshold)}")
        if ev.label:
            tail += f", model {ev.label}"
        if d.action == "block":
            dur = "until unblocked" if not d.duration else f"for {d.duration / 3600:g}h"
            tail += f"; BLOCKED {d.blocked_ip} {dur}: {d.reason})"
        else:
            tail += f"; {d.reason})"
        # one line whatever the description quotes (a newline in a DNS name would forge a second alert)
        return printable(head + tail)


# --- commands: what the engine decided, for the caller to carry out -----------------------------

@dataclass(frozen=True, slots=True)
class Block:
    """Block `ip` from `ts` for `duration` seconds (0: until unblocked).

    `by` says who decided: "judge" (then `alert` is the alert that decided), "admin:<user>" (a
    manual block), or "store" (a block re-applied at start: it is already in the store and only
    has to reach the kernel). `times` counts this IP's blocks, this one included."""

    ip: str
    ts: float
    duration: float
    reason: str
    by: str
    alert: Alert | None = None
    times: int = 1

    @property
    def expires(self) -> float | None:
        return self.ts + self.duration if self.duration else None

    @property
    def detector(self) -> str:
        return self.alert.evidence.detector if self.alert is not None else "manual"


@dataclass(frozen=True, slots=True)
class Unblock:
    """A block ended at `ts`: expired (`who` is "expiry") or lifted (`who` names the admin). An
    admin's unblock may carry a pardon: the evidence of `pardon_detectors` (empty: every detector's)
    cannot block `ip` again before `pardon_until` (inf: never; None: no pardon)."""

    ip: str
    ts: float
    reason: str
    who: str
    pardon_until: float | None = None
    pardon_detectors: tuple[str, ...] = ()  # the detectors the pardon covers (empty: all)


@dataclass(frozen=True, slots=True)
class Query:
    """A DNS answer seen for `host` (the client that asked): `name` asked, `rcode` (0 ok, 3 NXDOMAIN),
    the A/AAAA `answers`. Returned only when the caller asks for them (Engine.export_queries), for
    the activity log behind `slipsq timeline` and `slipsq report`. `name` came from the network."""

    ts: float
    host: str
    name: str
    rcode: int
    answers: tuple[str, ...] = ()


Command = Alert | Block | Unblock | Flow | Query
