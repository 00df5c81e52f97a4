"""The alert formats slipsq can write, by name (slipsq.output.alerts.AlertWriter writes them):

    text      the human line (records.Alert.to_text), and unblocks
    jsonl     slipsq's own JSON object per line (records.Alert.to_json; alerts.jsonl)
    eve       Suricata EVE JSON alert lines (slipsq.output.eve)
    idmefv2   IDMEFv2 JSON messages, one per line (slipsq.output.idmef)
    syslog    RFC 5424 messages, one per line (slipsq.output.syslog)

`output.format` (config) and `--alert-format` (replay and inline; replay's `--format` names the
INPUT format) choose one; "auto" keeps the older choice, text or jsonl by `output.json`/`--json`.
This module picks a formatter; it writes nothing and decides nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable

from slipsq.config import Option, empty_or
from slipsq.errors import ConfigError
from slipsq.output.eve import eve_line
from slipsq.output.idmef import idmef_line
from slipsq.output.syslog import FACILITIES, parse_target, syslog_line
from slipsq.records import Alert

FORMATS = ("auto", "text", "jsonl", "eve", "idmefv2", "syslog")
FOREIGN = ("eve", "idmefv2", "syslog")  # other tools' formats: nothing else may go on their stream
# replay -o DIR: the file a format other than text/jsonl (which are always written) also goes to
RESULT_FILE = {"eve": "eve.json", "idmefv2": "alerts.idmefv2.jsonl", "syslog": "alerts.syslog"}


OPTIONS: tuple[Option, ...] = (
    Option("output.format", "auto", "alert format on stdout, in replay and inline (where the journal, when used, "
           "takes the alerts instead; see format_log), --alert-format: auto (text, or jsonl with "
           "output.json/--json), text, jsonl, eve (Suricata EVE), idmefv2, syslog (RFC 5424)",
           lambda v: v in FORMATS, ", ".join(FORMATS)),
    Option("output.format_log", "", "inline: also append every alert in output.format (jsonl for auto or text) "
           "to this file, rotated like alerts.jsonl (e.g. /var/log/slipsq/eve.json for EveBox or Filebeat's "
           "suricata module); \"\": none"),
    Option("output.syslog", "", "inline: also send every alert as RFC 5424 syslog to udp://HOST[:PORT] or "
           "tcp://HOST[:PORT] (octet-counted), from a thread of its own; \"\": none", empty_or(parse_target),
           "udp://HOST[:PORT] or tcp://HOST[:PORT]"),
    Option("output.syslog_facility", "daemon", "syslog facility of slipsq's messages (daemon, local0 ... local7, "
           "auth, ...)", lambda v: v in FACILITIES, "a syslog facility name (daemon, local0 ... local7, ...)"),
)


def resolve(fmt: str, as_json: bool) -> str:
    """The format to write: `fmt`, or for "auto" jsonl with JSON output asked for, else text."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown alert format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "auto":
        return "jsonl" if as_json else "text"
    return fmt


def formatter(fmt: str, *, in_iface: str | None = None, hostname: str | None = None,
              procid: int | str | None = None, facility: str = "daemon") -> Callable[[Alert], str]:
    """Alert → one line (no newline) in `fmt` (not "auto": see resolve). `hostname` and `procid`
    default to this machine's and this process's (syslog and IDMEFv2 name the analyzer)."""
    host = socket.gethostname() if hostname is None else hostname
    pid = os.getpid() if procid is None else procid
    if fmt == "text":
        return Alert.to_text
    if fmt == "jsonl":
        return Alert.to_json
    if fmt == "eve":
        return lambda a: eve_line(a, in_iface)
    if fmt == "idmefv2":
        return lambda a: idmef_line(a, host)
    if fmt == "syslog":
        fac = FACILITIES[facility]
        return lambda a: syslog_line(a, host, pid, fac)
    raise ConfigError(f"unknown alert format {fmt!r}")
