"""Alerts as RFC 5424 syslog messages, for small routers and appliances that forward logs
(OpenWrt's logd, rsyslog, syslog-ng, a SIEM's syslog input):

    <PRI>1 TIMESTAMP HOSTNAME slipsq PROCID MSGID [slipsq@32473 detector="..." src="..." ...] MSG

PRI is facility × 8 + severity (warning for medium and worse, notice for low, info for info);
MSGID is "alert" or "block" (the alert decided a block); the structured data carries the fields a
receiver filters on, and MSG the human line (records.Alert.to_text). Every value that reaches a
header field is reduced to printable US-ASCII; SD values escape `"`, `\\` and `]` as RFC 5424
section 6.3.3 requires, and every control character (a newline in a hostile domain name) becomes a
space, so one alert is always one line. 32473 is the example enterprise number of RFC 5612: it
stands until slipsq has one of its own, which receivers treat alike.

`syslog_line` is a pure function. `SyslogSender` sends lines to a server (`output.syslog =
"udp://host:514"` or "tcp://host:514", octet-counted as RFC 6587 frames TCP) from a thread of its
own behind a bounded mailbox: a slow or absent server loses (and counts) its messages, and never
holds up the worker that carries out blocks.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from slipsq.background import Mailbox
from slipsq.records import Alert, utf8_text
from slipsq.sink import Sink

SD_ID = "slipsq@32473"
APP_NAME = "slipsq"
DEFAULT_PORT = 514
FACILITIES = {"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
              "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
              "clock": 15, **{f"local{n}": 16 + n for n in range(8)}}
WARNING, NOTICE, INFO = 4, 5, 6
# header field limits (RFC 5424 section 6)
HOSTNAME_MAX, APPNAME_MAX, PROCID_MAX, MSGID_MAX = 255, 48, 128, 32
_CONTROLS = {c: " " for c in (*range(0x20), 0x7F)}
_SD_ESCAPES = str.maketrans({'"': '\\"', "\\": "\\\\", "]": "\\]", **_CONTROLS})


def severity(alert: Alert) -> int:
    level = alert.evidence.threat_level
    if alert.decision.action == "block" or level >= 0.5:
        return WARNING
    return NOTICE if level >= 0.2 else INFO


def header_token(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces, at most `limit` characters; "-" (the
    NILVALUE) when nothing is left."""
    kept = "".join(c for c in text if "!" <= c <= "~")[:limit]
    return kept or "-"


def sd_value(value: object) -> str:
    """A PARAM-VALUE: RFC 5424's three escapes, controls as spaces, and a lone surrogate (which
    UTF-8 cannot carry: the line would not be written) as the text \\udcff."""
    return utf8_text(str(value)).translate(_SD_ESCAPES)  # first, so the escape's backslash is escaped


def timestamp(ts: float) -> str:
    # RFC 5424 allows at most six fraction digits; UTC, so receivers need no time zone
    seconds, micros = divmod(round(ts * 1_000_000), 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros:06d}Z"


def sd_params(alert: Alert) -> list[tuple[str, str]]:
    """The structured data's (name, value) pairs, values as text, empty ones left out."""
    d = alert.to_dict()
    params = [("detector", d["detector"]), ("action", d["action"]), ("src", d["src_ip"]), ("sport", d["src_port"]),
              ("dst", d["dst_ip"]), ("dport", d["dst_port"]), ("proto", d["proto"]), ("offender", d["offender"]),
              ("threat", d["threat_level"]), ("confidence", d["confidence"]), ("score", d["score"]),
              ("blocked", d["blocked_ip"]), ("seconds", d["block_seconds"]), ("label", d["label"]),
              ("community_id", d["community_id"]), ("traffic", d["time"])]
    return [(name, str(v)) for name, v in params if v is not None and v != ""]


def structured_data(alert: Alert) -> str:
    return f"[{SD_ID} " + " ".join(f'{name}="{sd_value(v)}"' for name, v in sd_params(alert)) + "]"


def syslog_line(alert: Alert, hostname: str = "", procid: int | str = "", facility: int = FACILITIES["daemon"]) -> str:
    """One RFC 5424 message (no framing, no newline) for `alert`."""
    pri = facility * 8 + severity(alert)
    msgid = "block" if alert.decision.action == "block" else "alert"
    msg = alert.to_text().translate(_CONTROLS)
    return (f"<{pri}>1 {timestamp(alert.decided_ts)} {header_token(hostname, HOSTNAME_MAX)} {APP_NAME} "
            f"{header_token(str(procid), PROCID_MAX)} {msgid} {structured_data(alert)} {msg}")


def parse_target(url: str) -> tuple[str, str, int]:
    """`udp://host[:port]` or `tcp://host[:port]` (IPv6: `udp://[::1]:514`) → (scheme, host, port).
    ValueError with a message for a person otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"{url!r} is not udp://HOST[:PORT] or tcp://HOST[:PORT] ({e})") from None
    if parts.scheme not in ("udp", "tcp") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{url!r} is not udp://HOST[:PORT] or tcp://HOST[:PORT]")
    return parts.scheme, parts.hostname, port or DEFAULT_PORT


def octet_frame(line: str) -> bytes:
    """RFC 6587 octet counting: `LEN SP MSG`, the only TCP framing that survives a newline."""
    data = line.encode("utf-8", "replace")
    return str(len(data)).encode() + b" " + data


class SyslogSender(Sink):
    """Sends every alert to a syslog server, from its own thread (see the module docstring)."""

    TIMEOUT = 2.0  # a TCP connect or send that takes longer fails (and is counted)
    RETRY_EVERY = 10.0  # after a failure, messages are dropped (counted) this long before a reconnect

    def __init__(self, url: str, hostname: str, procid: int, facility: int = FACILITIES["daemon"],
                 log: Callable[[str], None] | None = None, maxlen: int = 256,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.scheme, self.host, self.port = parse_target(url)
        self.url, self.hostname, self.procid, self.facility = url, hostname, procid, facility
        self.log, self.clock = log, clock
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._down_until = 0.0
        self.mailbox: Mailbox[str] = Mailbox("slipsq-syslog", self._send, maxlen)
        self.mailbox.start()

    def alert(self, alert: Alert) -> None:
        self.mailbox.offer(syslog_line(alert, self.hostname, self.procid, self.facility))

    def counters(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.mailbox.dropped}

    def _connect(self) -> socket.socket:
        family, kind, _, _, addr = socket.getaddrinfo(
            self.host, self.port, type=socket.SOCK_DGRAM if self.scheme == "udp" else socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind)
        sock.settimeout(self.TIMEOUT)
        try:
            sock.connect(addr)  # UDP too: errors (ICMP port unreachable) then come back to us
        except OSError:
            sock.close()
            raise
        return sock

    def _send(self, line: str) -> None:
        now = self.clock()
        if now < self._down_until:
            self.failed += 1
            return
        try:
            if self._sock is None:
                self._sock = self._connect()
            if self.scheme == "udp":
                self._sock.send(line.encode("utf-8", "replace"))
            else:
                self._sock.sendall(octet_frame(line))
        except OSError as e:
            self.failed += 1
            self._down_until = now + self.RETRY_EVERY
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            if self.log is not None:
                self.log(f"syslog to {self.url} failed ({e}); retrying in {self.RETRY_EVERY:g} s, "
                         f"{self.failed} messages lost so far")
            return
        self.sent += 1

    def close(self) -> None:
        self.mailbox.stop(self.TIMEOUT)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
