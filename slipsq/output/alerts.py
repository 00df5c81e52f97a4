"""Alert writers: the alerts (slipsq.records.Alert) on a text stream, one line each, in one of the
formats of slipsq.output.formats (human lines, slipsq's JSON, Suricata EVE, IDMEFv2, RFC 5424)."""

from __future__ import annotations

from typing import TextIO

from slipsq.output.formats import formatter, resolve
from slipsq.records import Alert, Unblock, iso
from slipsq.sink import Sink


class AlertWriter(Sink):
    """A sink that writes alerts to a text stream. `fmt` "auto" writes JSON lines when `as_json`,
    else human lines (`as_json` may change later: a reload); any other format is fixed. `in_iface`,
    `hostname`, `procid`, `facility`: see formats.formatter."""

    def __init__(self, stream: TextIO, as_json: bool, fmt: str = "auto", *, in_iface: str | None = None,
                 hostname: str | None = None, procid: int | str | None = None, facility: str = "daemon") -> None:
        self.stream = stream
        self.as_json = as_json
        self.fmt = fmt
        resolve(fmt, as_json)  # ConfigError for an unknown name, before any alert
        self._fixed = None if fmt == "auto" else formatter(fmt, in_iface=in_iface, hostname=hostname,
                                                           procid=procid, facility=facility)

    @property
    def format(self) -> str:
        return resolve(self.fmt, self.as_json)

    def alert(self, alert: Alert) -> None:
        if self._fixed is not None:
            line = self._fixed(alert)
        else:
            line = alert.to_json() if self.as_json else alert.to_text()
        self.stream.write(line + "\n")
        self.stream.flush()

    def unblock(self, unblock: Unblock) -> None:
        if self.format == "text":
            self.stream.write(f"{iso(unblock.ts)} [UNBLOCK] {unblock.ip}: {unblock.reason}\n")
