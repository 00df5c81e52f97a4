"""Type stub of the compiled brute force per-flow path (slipsq/detect/_bruteforce.pyx); its twin is
slipsq/detect/bruteforce.py (Intake, _Count)."""

from slipsq.detect import bruteforce as _twin

class Count(_twin._Count): ...

class Intake(_twin.Intake):
    def __init__(self, ports: dict[int, str], window: float, min_n: int, max_dur: float, max_keys: int,
                 max_banners: int, judge: _twin.Judge) -> None: ...
