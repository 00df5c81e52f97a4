"""Type stub of the compiled beacon per-flow state (slipsq/detect/_beacon.pyx); its twin is
slipsq/detect/beacon.py (Tuples, _Tuple)."""

from slipsq.detect import beacon as _twin

class Tuple(_twin._Tuple): ...

class Tuples(_twin.Tuples):
    def __init__(self, history: int, bound: int) -> None: ...
