"""Type stub of the compiled exfiltration per-flow path (slipsq/detect/_exfil.pyx); its twin is
slipsq/detect/exfil.py (Intake)."""

from collections.abc import Callable, Sequence

from slipsq.detect import exfil as _twin
from slipsq.flow import Flow
from slipsq.records import Evidence

class Intake(_twin.Intake):
    def __init__(self, count: Callable[[Flow], Sequence[Evidence]]) -> None: ...
