"""Type stub of the compiled port scan counting (slipsq/detect/_portscan.pyx); its twin is
slipsq/detect/portscan.py (Tally, _Targets)."""

from slipsq.detect import portscan as _twin

class Targets(_twin._Targets): ...

class Tally(_twin.Tally):
    def __init__(self, max_keys: int, max_targets: int, max_total: int) -> None: ...
