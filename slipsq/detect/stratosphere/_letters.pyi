"""Type stub of the compiled Stratosphere per-flow path (slipsq/detect/stratosphere/_letters.pyx); its twins are
slipsq/detect/stratosphere/letters.py (LetterTable, TupleLetters), slipsq/detect/stratosphere/markov.py (Chain)
and StratosphereDetector.on_flow (PerFlow.on_flow)."""

from collections.abc import Callable, Sequence

from slipsq.detect.stratosphere import letters as _twin_letters
from slipsq.detect.stratosphere import markov as _twin_markov
from slipsq.flow import Flow
from slipsq.records import Evidence

# Declared as subtypes of the readable twins: the interface is the same, so code typed against the
# twins (the detector picks either at run time) accepts the compiled classes too.
class TupleLetters(_twin_letters.TupleLetters):
    def __init__(self, key: _twin_letters.TupleKey, start: float, col: int) -> None: ...

class LetterTable(_twin_letters.LetterTable):
    def add(self, flow: Flow) -> TupleLetters | None: ...  # type: ignore[override]

class Chain(_twin_markov.Chain):
    def __init__(self, model: _twin_markov.Model, longest: int | None = None) -> None: ...

class PerFlow:
    table: LetterTable
    min_letters: int
    def __init__(self, table: LetterTable, min_letters: int, tcp: list[Chain], udp: list[Chain],
                 matched: Callable[[TupleLetters, _twin_markov.Model, float, Flow], Sequence[Evidence]],
                 tcp_not_dns: list[Chain] | None = None, udp_not_dns: list[Chain] | None = None) -> None: ...
    def on_flow(self, flow: Flow) -> Sequence[Evidence]: ...

def direct_fields() -> tuple[str, ...]: ...

def first_match(chains: list[Chain], t: TupleLetters) -> tuple[Chain, float] | None: ...
