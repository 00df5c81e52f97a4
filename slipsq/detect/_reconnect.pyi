"""Type stub of the compiled reconnection-storm per-flow path (slipsq/detect/_reconnect.pyx); its
twin is slipsq/detect/reconnect.py (Intake)."""

from collections.abc import Callable

from slipsq.detect import reconnect as _twin
from slipsq.detect.inuse import ServersInUse

class Intake(_twin.Intake):
    def __init__(self, servers: ServersInUse, local: Callable[[str], bool], count: _twin.Count) -> None: ...
