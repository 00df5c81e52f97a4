"""Type stub of the compiled beacon per-flow state (slipsq/detect/_beacon.pyx); its twin is
slipsq/detect/beacon.py (Tuples, _Tuple, Intake)."""

from collections.abc import Callable, Collection

from slipsq.allow import AllowList
from slipsq.detect import beacon as _twin

class Tuple(_twin._Tuple): ...

class Tuples(_twin.Tuples):
    def __init__(self, history: int, bound: int) -> None: ...

class Intake(_twin.Intake):
    def __init__(self, tuples: _twin.Tuples, min_n: int, full_n: int, window: float, own: Collection[str],
                 local: Callable[[str], bool], allow: AllowList) -> None: ...

def local_address(ip: str) -> bool | None: ...
def fixed_never(ip: str) -> bool | None: ...
