"""Alerts as Suricata EVE JSON (`event_type: "alert"`), so tools built for Suricata read slipsq's
alerts as they read Suricata's: EveBox, Filebeat's and Elastic Agent's suricata module, Logstash,
Splunk's Suricata add-on, jq one-liners written for eve.json.

One line per alert, with the fields those tools read (Suricata's EVE documentation, and its
etc/schema.json, which the tests validate against):

    timestamp     when slipsq decided, in Suricata's format (2026-12-05T15:44:48.123456+0000)
    flow_id       a stable 51-bit number per flow (Suricata's are per flow too; it never exceeds
                  2^53, so JavaScript tools keep it exact)
    in_iface      inline: NFQ#<queue>, as Suricata names an NFQUEUE; replay: absent (as Suricata
                  reading a pcap)
    src_ip src_port dest_ip dest_port proto community_id
    alert         action (allowed / blocked), gid 1, signature_id (one per detector,
                  slipsq.output.kinds), rev 1, signature ("SLIPSQ <detector>: <description>"),
                  category (a Suricata classtype description), severity (1 high .. 3 low),
                  metadata.tag, source/target (who the judge holds responsible, and the other end)
    flow          the evidence's last flow: packets and bytes each way, its start

The signature carries the evidence's description, as that is what an analyst reads in EveBox's
list; signature_id stays one per detector, so grouping and counting by id works as with rules.
Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from slipsq.flowkeys import ICMP, community_id, flow_key
from slipsq.output.kinds import kind
from slipsq.records import Alert, json_line

GID = 1
REV = 1
FLOW_ID_BITS = 51
# Suricata's proto names (its output capitalises the IANA keyword)
PROTO_NAMES = {"tcp": "TCP", "udp": "UDP", "icmp": "ICMP", "ipv6-icmp": "IPv6-ICMP", "sctp": "SCTP"}


def suricata_time(ts: float) -> str:
    """Suricata's EVE timestamp: local ISO time with microseconds and a ±HHMM offset; slipsq
    writes UTC (+0000), so lines from gateways in different time zones sort as they are."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def severity(threat_level: float) -> int:
    """Suricata's severity (a classtype's priority): 1 high, 2 medium, 3 low."""
    if threat_level >= 0.8:
        return 1
    return 2 if threat_level >= 0.5 else 3


def flow_id(key: str) -> int:
    """A flow id from the flow's key: the same flow gives the same id in every alert about it."""
    digest = hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") & ((1 << FLOW_ID_BITS) - 1)) or 1


def _port(proto: str, port: int | None) -> int | None:
    # ICMP "ports" (type, identifier) are no ports; Suricata leaves them out
    if proto in ICMP or port is None or not 0 < port < 65536:
        return None
    return port


def to_eve(alert: Alert, in_iface: str | None = None) -> dict[str, Any]:
    """The EVE alert object for `alert` (keys in Suricata's order; absent values left out)."""
    ev, d = alert.evidence, alert.decision
    last = ev.flows[-1] if ev.flows else None
    key = flow_key(last) if last is not None else f"{ev.src_ip},{ev.dst_ip},{ev.dst_port},{ev.proto}"
    k = kind(ev.detector)
    out: dict[str, Any] = {"timestamp": suricata_time(alert.decided_ts), "flow_id": flow_id(key)}
    if in_iface:
        out["in_iface"] = in_iface
    out["event_type"] = "alert"
    out["src_ip"] = ev.src_ip
    if (sport := _port(ev.proto, alert.src_port())) is not None:
        out["src_port"] = sport
    out["dest_ip"] = ev.dst_ip
    if (dport := _port(ev.proto, ev.dst_port)) is not None:
        out["dest_port"] = dport
    out["proto"] = PROTO_NAMES.get(ev.proto, ev.proto.upper())
    if last is not None and (cid := community_id(last)) is not None:
        out["community_id"] = cid
    tags = ["slipsq", ev.detector] + ([ev.label] if ev.label else [])
    alert_obj: dict[str, Any] = {
        "action": "blocked" if d.action == "block" else "allowed",
        "gid": GID,
        "signature_id": k.sid,
        "rev": REV,
        "signature": f"SLIPSQ {ev.detector}: {ev.description}",
        "category": k.suricata_category,
        "severity": severity(ev.threat_level),
        "metadata": {"tag": tags},
    }
    # Suricata 6+ names the attacker and the victim when a rule says which is which; the judge does
    other = ev.dst_ip if ev.offender == ev.src_ip else ev.src_ip if ev.offender == ev.dst_ip else ""
    if ev.offender:
        alert_obj["source"] = {"ip": ev.offender}
    if other:
        alert_obj["target"] = {"ip": other}
    out["alert"] = alert_obj
    if last is not None:  # to server: from the flow's client (its first packet's sender), as Suricata's
        out["flow"] = {"pkts_toserver": last.spkts, "pkts_toclient": last.dpkts, "bytes_toserver": last.sbytes,
                       "bytes_toclient": last.dbytes, "start": suricata_time(last.start)}
    return out


def eve_line(alert: Alert, in_iface: str | None = None) -> str:
    """One eve.json line (no newline)."""
    return json_line(to_eve(alert, in_iface))
