"""The daemon's extra alert outputs, built from the configuration in one call so that daemon.py only
adds them to its worker's sinks: output.format_log (a rotated file in the chosen format),
output.syslog (a syslog server) and the hooks (slipsq.hooks). Each runs in the worker thread or
behind its own bounded mailbox; none can hold up the packet loop, and none can hold up a block
for longer than a file append.

Replay builds none of these: its outputs are stdout and `-o DIR` (slipsq.replay).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slipsq import hooks
from slipsq.config import Config
from slipsq.errors import ConfigError
from slipsq.output.alertlog import RotatingAlertLog
from slipsq.output.formats import FACILITIES, formatter, resolve
from slipsq.output.syslog import SyslogSender
from slipsq.sink import Sink


class InlineOutputs:
    """The sinks, and their counters for `slipsq status`."""

    def __init__(self, sinks: list[Sink], hook_runner: hooks.Hooks | None, syslog: SyslogSender | None) -> None:
        self.sinks = sinks
        self.hooks = hook_runner
        self.syslog = syslog

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.hooks is not None:
            out["hooks"] = self.hooks.counters()
        if self.syslog is not None:
            out["syslog"] = self.syslog.counters()
        return out

    def close(self) -> None:
        for s in self.sinks:
            close = getattr(s, "close", None)
            if close is not None:
                close()


def status_lines(status: dict[str, Any]) -> list[str]:
    """`slipsq status`'s lines for the hooks and the syslog sender (none when neither is set up)."""
    lines = []
    hooks_st = status.get("hooks") or {}
    for event in ("on_block", "on_alert"):
        h = hooks_st.get(event)
        if h:
            lines.append(f"hook {event}: {h['runs']} runs ({h['ok']} ok, {h['failed']} failed, {h['timed_out']} timed "
                         f"out), {h['rate_limited']} rate-limited" + (f"; last error: {h['last_error']}"
                                                                       if h["last_error"] else ""))
    if hooks_st:
        lines.append(f"hooks: {hooks_st['dropped_queue_full']} dropped (queue full), {hooks_st['waiting']} waiting")
    sl = status.get("syslog")
    if sl:
        lines.append(f"syslog: {sl['sent']} sent, {sl['failed']} failed, {sl['dropped']} dropped (queue full)")
    return lines


def build(cfg: Config, fmt: str, in_iface: str, log: Callable[[str], None]) -> InlineOutputs:
    """`fmt`: the alert format in force (--alert-format, else output.format). ConfigError (naming
    the key) for a hook program that is not there or a syslog host that does not resolve."""
    sinks: list[Sink] = []
    hostname, pid = socket.gethostname(), os.getpid()
    where = cfg["output.format_log"]
    if where:
        file_fmt = resolve(fmt, True) if fmt != "text" else "jsonl"
        path = Path(where)
        sinks.append(RotatingAlertLog(path.parent, cfg["output.alerts_log_max_bytes"],
                                      cfg["output.alerts_log_files"], name=path.name,
                                      line=formatter(file_fmt, in_iface=in_iface, hostname=hostname, procid=pid,
                                                     facility=cfg["output.syslog_facility"])))
    sender = None
    if cfg["output.syslog"]:
        try:
            sender = SyslogSender(cfg["output.syslog"], hostname, pid, FACILITIES[cfg["output.syslog_facility"]],
                                  log=log)
        except ValueError as e:
            raise ConfigError(f"configuration key 'output.syslog': {e}") from None
        sinks.append(sender)
    runner = hooks.from_config(cfg, log)
    if runner is not None:
        sinks.append(runner)
    return InlineOutputs(sinks, runner, sender)
