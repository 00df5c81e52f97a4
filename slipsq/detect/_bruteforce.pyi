"""Type stub of the compiled brute force per-flow path (slipsq/detect/_bruteforce.pyx); its twin is
slipsq/detect/bruteforce.py (Intake)."""

from collections.abc import Callable, Mapping, Sequence

from slipsq.detect import bruteforce as _twin
from slipsq.flow import AppEvent, Flow
from slipsq.records import Evidence

class Intake(_twin.Intake):
    def __init__(self, banners: Mapping[tuple[str, int], str], ports: dict[int, str],
                 count: Callable[[str, Flow], Sequence[Evidence]],
                 banner: Callable[[AppEvent], Sequence[Evidence]]) -> None: ...
