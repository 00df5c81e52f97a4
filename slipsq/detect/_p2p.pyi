"""Type stub of the compiled P2P per-flow path (slipsq/detect/_p2p.pyx); its twin is
slipsq/detect/p2p.py (Intake)."""

from collections.abc import Callable

from slipsq.detect import p2p as _twin
from slipsq.detect.base import Context

class Intake(_twin.Intake):
    def __init__(self, ctx: Context, local: Callable[[str], bool], count: _twin.Count) -> None: ...
