"""Type stub of the compiled exfiltration per-flow path (slipsq/detect/_exfil.pyx); its twin is
slipsq/detect/exfil.py (Intake, _Pair)."""

from collections.abc import Callable

from slipsq.detect import exfil as _twin

class Pair(_twin._Pair): ...

class Intake(_twin.Intake):
    def __init__(self, window: float, bar: int, ratio: float, max_pairs: int, local: Callable[[str], bool],
                 judge: _twin.Judge) -> None: ...
