"""Alert writers: the alerts (slipsq.records.Alert) as JSON lines or human lines on a text stream."""

from __future__ import annotations

from typing import TextIO

from slipsq.records import Alert, Unblock, iso
from slipsq.sink import Sink


class AlertWriter(Sink):
    """A sink that writes alerts to a text stream, as JSON lines or human lines."""

    def __init__(self, stream: TextIO, as_json: bool) -> None:
        self.stream = stream
        self.as_json = as_json

    def alert(self, alert: Alert) -> None:
        self.stream.write((alert.to_json() if self.as_json else alert.to_text()) + "\n")
        self.stream.flush()

    def unblock(self, unblock: Unblock) -> None:
        if not self.as_json:
            self.stream.write(f"{iso(unblock.ts)} [UNBLOCK] {unblock.ip}: {unblock.reason}\n")
