"""`slipsq explain IP`: the evidence of the window that decided a block, each finding with its
detector, score and one-line description, so an admin can redo the judge's sum by hand.

It reads only what slipsq wrote: the block store (the deciding alert is kept as evidence JSON, and
on a block that alert carries the window's findings, see records.Finding) or the alerts.jsonl of a
replay output folder (`slipsq replay -o DIR`). It needs no daemon and never touches the kernel.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from slipsq.addr import parse_ip
from slipsq.errors import InputError, SystemSetupError
from slipsq.output.activity import is_time
from slipsq.records import fmt_score, is_number, iso, printable


def normalize_ip(text: str) -> str:
    """The address as slipsq prints it everywhere (addr.parse_ip: an IPv4-mapped IPv6 address as the
    IPv4 one, as `block` and `unblock` take it)."""
    try:
        return str(parse_ip(text))
    except ValueError:
        raise InputError(f"{text!r} is not an IP address") from None


def from_replay(out_dir: str | Path, ip: str) -> dict[str, Any] | None:
    """The last block alert for `ip` in DIR/alerts.jsonl (None: it was not blocked there)."""
    path = Path(out_dir) / "alerts.jsonl"
    if Path(out_dir).is_file() and Path(out_dir).name.endswith(".jsonl"):
        path = Path(out_dir)
    if not path.is_file():
        raise InputError(f"{path}: no such file (give the folder of `slipsq replay -o DIR`)")
    found, where = None, 0
    with path.open(errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                a = json.loads(line)
            except (ValueError, RecursionError):
                raise InputError(f"{path}:{n}: not a JSON line") from None
            if isinstance(a, dict) and a.get("action") == "block" and a.get("blocked_ip") == ip:
                found, where = a, n
    problem = damage(found) if found is not None else None
    if problem:
        raise InputError(f"{path}:{where}: the block alert of {ip} is damaged: {problem}")
    return found


def from_store(state_dir: str | None, ip: str) -> dict[str, Any] | None:
    """The deciding alert of `ip`'s block in force, else of its last block in the audit trail."""
    from slipsq.verdict.store import DB_NAME, BlockStore, resolve_state_dir

    if not (resolve_state_dir(state_dir) / DB_NAME).exists():
        return None
    store = BlockStore(state_dir, create=False)
    try:
        text = store.block_evidence(ip)
    finally:
        store.close()
    if not text:
        return None
    try:
        ev = json.loads(text)
    except (ValueError, RecursionError):
        raise SystemSetupError(f"the stored evidence of {ip} is not JSON") from None
    if not isinstance(ev, dict):
        return None
    problem = damage(ev)
    if problem:
        raise SystemSetupError(f"the stored evidence of {ip} is damaged: {problem}")
    return ev


def damage(alert: dict[str, Any]) -> str | None:
    """What is wrong with a deciding alert that slipsq cannot have written (a hand-edited or damaged
    file or store): the first field of the wrong type, as `window[0].score is not a number`; None
    when `render` can show it. Text fields may hold anything (they are shown escaped)."""
    if alert.get("manual"):
        return None
    if alert.get("block_seconds") is not None and not is_number(alert["block_seconds"]):
        return "block_seconds is not a number"
    window = alert.get("window")
    if window is not None and not isinstance(window, list):
        return "window is not a list"
    if window:
        for i, f in enumerate(window):
            if not isinstance(f, dict):
                return f"window[{i}] is not an object"
            if problem := _finding_damage(f):
                return f"window[{i}].{problem}"
        return None
    if alert.get("score") is not None and not is_number(alert["score"]):
        return "score is not a number"
    if alert.get("ts") is not None and not is_time(alert["ts"]):
        return "ts is not a time"
    return None


def _finding_damage(f: dict[str, Any]) -> str | None:
    for key in ("score", "weight", "reports"):
        if f.get(key) is not None and not is_number(f[key]):
            return f"{key} is not a number"
    for key in ("first", "last"):
        if f.get(key) is not None and not is_time(f[key]):
            return f"{key} is not a time"
    return None


def findings(alert: dict[str, Any]) -> list[dict[str, Any]]:
    """The window's findings; an alert stored before slipsq kept them is its own one finding."""
    window = alert.get("window")
    if isinstance(window, list) and window:
        return [f for f in window if isinstance(f, dict)]
    if alert.get("manual"):
        return []
    return [{"detector": alert.get("detector", "?"), "score": alert.get("score", 0.0), "weight": 1,
             "reports": 1, "description": alert.get("description", ""), "first": alert.get("ts"),
             "last": alert.get("ts")}]


def render(ip: str, alert: dict[str, Any]) -> str:
    if alert.get("manual"):
        return printable(f"{ip} was blocked by hand: {alert.get('reason', '')}")
    secs = alert.get("block_seconds")
    dur = "until unblocked" if not secs else f"for {secs / 3600:g}h"
    lines = [printable(f"{ip} blocked at {alert.get('time', '?')} {dur}: {alert.get('reason', '')}"),
             "evidence of the deciding window (score = sum of weight x score):"]
    total = 0.0
    for f in findings(alert):
        score, weight = float(f.get("score") or 0.0), int(f.get("weight") or 1)
        total += score * weight
        when = ""
        if isinstance(f.get("first"), (int, float)) and isinstance(f.get("last"), (int, float)):
            span = f["last"] - f["first"]
            when = f", {f.get('reports', 1)} report(s) over {span:.0f}s from {iso(f['first'])[11:19]}"
        # a description quotes DNS names of any bytes: escaped, it stays on its line and off the terminal
        lines.append(printable(f"  {f.get('detector', '?')!s:<13} {fmt_score(score, 0.0)} x{weight}{when}: "
                               f"{f.get('description', '')}"))
    lines.append(f"  total {fmt_score(total, 1.0)}")
    return "\n".join(lines)
