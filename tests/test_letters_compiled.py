"""The compiled letters + Markov path (slipsq/detect/stratosphere/_letters.pyx) against its readable twins (letters.py,
markov.py): the same flows give the same strings, the same transition counts (in the same order, so
log-probabilities are summed in the same order) and the same matches at exactly the same distances.

Equality is exact (no tolerance): both sides add the same doubles in the same order, and the C code
is built with -ffp-contract=off so that no fused multiply-add rounds differently.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import tracemalloc
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from letters_synth import flows_for

from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.detect.base import Context
from slipsq.detect.stratosphere import letters as py_letters
from slipsq.detect.stratosphere import markov as py_markov
from slipsq.detect.stratosphere.detector import StratosphereDetector, first_match, implementation
from slipsq.detect.stratosphere.markov import ALPHABET, Model, label_protocol, load_models, pairs_of, shipped_models_dir
from slipsq.flow import Flow
from slipsq.runmode import all_options

c = pytest.importorskip("slipsq.detect.stratosphere._letters", reason="the compiled extension is not built "
                        "(python setup.py build_ext --inplace)")

SHIPPED = load_models(shipped_models_dir())
LETTERS = "".join(sorted(ALPHABET))
CLIENTS = ("10.0.0.5", "10.0.0.6")
# gaps that land on every symbol bin and its edges, whole hours (zeros) and ties
GAPS = (0.0, 0.0, 1.0, 2.0, 5.0, 5.000001, 30.0, 60.0, 61.0, 200.0, 300.0, 301.0, 1000.0, 3599.0, 3600.0,
        3601.0, 7200.0, 7300.5, 4 * 3600.0 + 7, 1e6)


def flow(start: float, size: int, dur: float, client: str = CLIENTS[0], proto: str = "tcp",
         port: int = 443, closed_by: str = "fin") -> Flow:
    return Flow(start=start, end=start + dur, proto=proto, saddr=client, sport=50000, daddr="198.51.100.7",
                dport=port, sbytes=size // 2, dbytes=size - size // 2, closed_by=closed_by)


def state(t: Any) -> tuple[Any, ...]:
    """Everything a tuple keeps, pair counts as an ordered list (their order is the summing order)."""
    return (t.key, t.text, list(t.pairs.items()), t.flows, t.dropped, list(t.starts), list(t.cols),
            list(t.plens), t.first_seen, t.last_seen, t.length, t.client, t.server, t.port, t.proto)


def model(letters: str, threshold: float, proto: str = "TCP", n: int = 0) -> Model:
    label = f"From-Botnet-{proto}-Test-{n}"
    return Model(label, label_protocol(label), letters, threshold, {"source": "test"})


def both_chains(models: list[Model]) -> tuple[list[py_markov.Chain], list[Any]]:
    return [py_markov.Chain(m) for m in models], [c.Chain(m) for m in models]


def same_matches(pc: list[py_markov.Chain], cc: list[Any], pt: Any, ct: Any) -> None:
    """first_match, and every chain's distance, log-probability and match decision, are identical."""
    if not pt.text:
        return
    p, q = first_match(pc, pt), c.first_match(cc, ct)
    assert (p is None) == (q is None)
    if p is not None and q is not None:
        assert p[0].model == q[0].model and p[1] == q[1]
    n, first, pairs = len(pt.text), pt.text[0], pt.pairs
    for a, b in zip(pc, cc, strict=True):
        assert a.matches(n, first, pairs) == b.matches(n, first, pairs)
        assert a.log_prob(n, first, pairs) == b.log_prob(n, first, pairs)
        d1, d2 = a.distance(n, first, pairs), b.distance(n, first, pairs)
        assert d1 == d2 or (math.isnan(d1) and math.isnan(d2))


# --- flow sequences ------------------------------------------------------------------------------

@st.composite
def sequences(draw: st.DrawFn) -> list[Flow]:
    """Flows of up to three tuples: gaps from GAPS (symbol bins, hours) or any, sizes (one beyond 64
    bits) and durations across every column, some UDP, some active-timeout reports; in start, close or
    shuffled order."""
    n = draw(st.integers(1, 90))
    t = 1_700_000_000.0
    out = []
    for _ in range(n):
        t += draw(st.one_of(st.sampled_from(GAPS), st.floats(0, 20_000)))
        who = draw(st.integers(0, 2))
        out.append(flow(t, draw(st.sampled_from((0, 100, 250, 251, 600, 1100, 1101, 6000, 10**20))),
                        draw(st.sampled_from((0.0, 0.05, 0.1, 0.2, 1.0, 10.0, 10.5, 30.0, 5000.0))),
                        client=CLIENTS[who % 2], proto="udp" if who == 2 else "tcp",
                        closed_by=draw(st.sampled_from(("fin",) * 9 + ("active",)))))
    order = draw(st.sampled_from(("start", "close", "shuffled")))
    if order == "close":
        out.sort(key=lambda f: f.end)
    elif order == "shuffled":
        random.Random(draw(st.integers(0, 2**32))).shuffle(out)
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(), st.sampled_from(py_letters.VARIANTS), st.sampled_from((1, 2, 3, 5, 16, 4096)),
       st.sampled_from((1, 2, 100)))
def test_tables_give_the_same_tuples_and_counters(flows: list[Flow], variant: str, max_chars: int,
                                                  max_tuples: int) -> None:
    pt = py_letters.LetterTable(variant, max_chars, idle=50_000.0, max_tuples=max_tuples)
    ct = c.LetterTable(variant, max_chars, idle=50_000.0, max_tuples=max_tuples)
    for k, f in enumerate(flows):
        a, b = pt.add(f), ct.add(f)
        assert (a is None) == (b is None)
        if a is not None:
            assert state(a) == state(b)
            assert a.pairs == pairs_of(a.text)
        if k % 7 == 6:
            assert pt.expire(f.end) == ct.expire(f.end)
        counters = (pt.too_late, pt.evicted, pt.expired, len(pt))
        assert counters == (ct.too_late, ct.evicted, ct.expired, len(ct))
    assert [state(t) for t in pt] == [state(t) for t in ct]
    assert (pt.variant, pt.max_chars, pt.idle, pt.max_tuples) == (ct.variant, ct.max_chars, ct.idle,
                                                                  ct.max_tuples)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50_000), st.integers(0, 3000), st.floats(0, 900)), min_size=1,
                max_size=200),
       st.sampled_from(py_letters.VARIANTS), st.sampled_from((2, 3, 7, 40, 4096)))
def test_tuple_add_directly_in_any_order(raw: list[tuple[float, int, float]], variant: str,
                                         max_chars: int) -> None:
    key = ("10.0.0.5", "198.51.100.7", 443, "tcp")
    (s0, size0, d0), rest = raw[0], raw[1:]
    col0 = py_letters.column(size0, d0)
    a, b = py_letters.TupleLetters(key, s0, col0), c.TupleLetters(key, s0, col0)
    for s, size, d in rest:
        col = py_letters.column(size, d)
        assert a.add(s, col, variant, max_chars) == b.add(s, col, variant, max_chars)
        assert state(a) == state(b)


# --- matching ------------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(), st.sampled_from(py_letters.VARIANTS), st.sampled_from((3, 16, 4096)),
       st.lists(st.tuples(st.text(st.sampled_from("45eE.,*0hH+"), max_size=120),
                          st.sampled_from((1.0, 1.1, 1.5, 3.0, 1e9))), max_size=4))
def test_matches_against_shipped_and_random_models(flows: list[Flow], variant: str, max_chars: int,
                                                   random_models: list[tuple[str, float]]) -> None:
    pt, ct = py_letters.LetterTable(variant, max_chars), c.LetterTable(variant, max_chars)
    models = [m for m in SHIPPED if m.proto == "tcp"]
    models += [model(s, thr, n=i) for i, (s, thr) in enumerate(random_models)]
    # a model trained on this very traffic: its prefixes match (distance 1) while the string grows
    models.insert(0, model(py_letters.letters_of([(f.start, f.bytes, f.dur) for f in flows], variant), 1.1))
    pc, cc = both_chains(models)
    for f in flows:
        a, b = pt.add(f), ct.add(f)
        assert (a is None) == (b is None)
        if a is not None:
            same_matches(pc, cc, a, b)


def test_every_shipped_model_on_its_own_behaviour() -> None:
    """Flows written from each shipped model's own string (a long match), then another's (drift)."""
    pc, cc = both_chains(SHIPPED)
    hits = 0
    for i, m in enumerate(SHIPPED):
        proto, other = m.proto, SHIPPED[(i + 1) % len(SHIPPED)]
        flows = flows_for(m.letters[:300], proto=proto) + flows_for(other.letters[:200], proto=proto,
                                                                    start=3_000_000.0)
        pt, ct = py_letters.LetterTable(), c.LetterTable()
        mine = [(p, q) for p, q in zip(pc, cc, strict=True) if p.model.proto == proto]
        for f in sorted(flows, key=lambda f: f.end):
            a, b = pt.add(f), ct.add(f)
            assert a is not None and b is not None and state(a) == state(b)
            same_matches([p for p, _ in mine], [q for _, q in mine], a, b)
            hits += first_match([p for p, _ in mine], a) is not None
    assert hits > 100  # the models do match their own behaviour: the comparison covers real matches


def test_compiled_chains_of_the_shipped_models_hold_the_reference_numbers() -> None:
    # the compiled Chain is built in C from the letters (not copied from the twin): every
    # log P(T cut at n) and every full-length log-probability must be the twin's to the last bit
    for m in SHIPPED:
        a, b = py_markov.Chain(m), c.Chain(m)
        assert list(a.logpt) == b.logpt, m.label
        t = m.letters
        for s in (t, t[: len(t) // 3], t[::-1][:500]):
            pairs = pairs_of(s)
            for n in (len(s), len(t), max(2, len(t) // 2)):
                assert a.log_prob(n, s[0], pairs) == b.log_prob(n, s[0], pairs), m.label


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(LETTERS), max_size=300), st.text(st.sampled_from("45eE.,*0"), max_size=300),
       st.text(st.sampled_from(LETTERS), min_size=1, max_size=200), st.floats(1.0, 4.0),
       st.sampled_from((None, 2, 5, 40)))
def test_chain_interface_on_any_strings(training: str, training2: str, s: str, thr: float,
                                        longest: int | None) -> None:
    for t in (training, training2, s + training, s[: len(s) // 2]):
        a, b = py_markov.Chain(model(t, thr), longest), c.Chain(model(t, thr), longest)
        assert (a.length, a.threshold, list(a.logpt)) == (b.length, b.threshold, b.logpt)
        pairs = pairs_of(s)
        for n in (len(s), max(2, len(s) // 2), len(t), len(t) + 5):
            assert a.matches(n, s[0], pairs) == b.matches(n, s[0], pairs)
            assert a.log_prob(n, s[0], pairs) == b.log_prob(n, s[0], pairs)
            assert a.log_prob(n, s[0], pairs, -3.0) == b.log_prob(n, s[0], pairs, -3.0)
            assert a.distance(n, s[0], pairs) == b.distance(n, s[0], pairs)


# --- the detector picks one, and both give the same evidence ---------------------------------------

def test_detector_uses_the_compiled_path_unless_told_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    assert implementation()[3] is True
    monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1")
    assert implementation() == (py_letters.LetterTable, py_markov.Chain, first_match, False)


def test_detector_evidence_is_identical_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    flows: list[Flow] = []
    for k, m in enumerate(SHIPPED):
        flows += flows_for(m.letters[:120], server=f"203.0.113.{k + 1}", proto=m.proto, start=1e6 + 997 * k)
    flows.sort(key=lambda f: f.end)

    def evidence() -> list[Any]:
        det = StratosphereDetector(Context(Config(all_options(), {}), AllowList(), SHIPPED))
        out = [e for f in flows for e in det.on_flow(f)]
        return [(e.ts, e.key, e.description, e.confidence, e.offender) for e in out] + [det.tuples()]

    compiled = evidence()
    monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1")
    pure = evidence()
    assert compiled == pure
    assert len(compiled) > 10  # matches happened


@dataclass(slots=True)
class OtherFlow(Flow):
    """Not Flow itself: the compiled path reads it through getattr, not from Flow's slots."""


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences(), st.sampled_from(py_letters.VARIANTS), st.sampled_from((1, 2, 7)), st.sampled_from((1, 2, 100)),
       st.sampled_from((16, 4096)), st.booleans(), st.randoms(use_true_random=False))
def test_the_compiled_per_flow_path_is_the_detectors_on_flow(flows: list[Flow], variant: str, min_letters: int,
                                                               max_tuples: int, max_letters: int, other: bool,
                                                               rnd: random.Random) -> None:
    """PerFlow.on_flow (what the engine calls when compiled) against the detector's own on_flow: the
    same evidence, tuples, labels and counters, on flows that match a malicious model, a benign one
    or none, with evictions, expiry and flows read through getattr."""
    trained = py_letters.letters_of([(f.start, f.bytes, f.dur) for f in flows], variant)
    models = [model(trained[:40], 1.1, n=1), model(trained, 1.3, "UDP", n=2),
              Model("From-Normal-TCP-Test-3", "TCP", trained[::-1] + "4.", 2.0, {})]
    models += [m for m in SHIPPED if len(m.letters) < 500]  # (the long ones take the twin a second)
    rnd.shuffle(models)
    if other:  # some flows of a Flow subclass: the compiled path reads those through getattr
        flows = [OtherFlow(*(getattr(f, n) for n in Flow.__dataclass_fields__)) if rnd.random() < 0.5 else f
                 for f in flows]
    cfg = Config(all_options(), {"letters.variant": variant, "markov.min_letters": min_letters,
                                 "stratosphere.max_tuples": max_tuples, "stratosphere.max_letters": max_letters,
                                 "stratosphere.tuple_idle": 20_000.0})

    def run(pure: bool) -> Any:
        with pytest.MonkeyPatch.context() as mp:
            if pure:
                mp.setenv("SLIPSQ_PURE_PYTHON", "1")
            det = StratosphereDetector(Context(cfg, AllowList(), models))
        assert det.compiled is not pure
        assert isinstance(getattr(det.on_flow, "__self__", None), c.PerFlow) is not pure
        out: list[Any] = []
        for k, f in enumerate(flows):
            out += [(e.ts, e.key, e.description, e.confidence, e.offender, e.flows) for e in det.on_flow(f)]
            if k % 5 == 4:
                det.on_tick(f.end)
        t = det.table
        return out, det.tuples(), det.matches, det.benign_matches, (t.too_late, t.evicted, t.expired, len(t))

    assert run(False) == run(True)


def test_the_compiled_path_reads_every_flow_field_from_its_slot() -> None:
    # not a matter of correctness (getattr gives the same values) but of cost: if Flow changes so
    # that a field is no longer a plain slot, this says the fast read silently went away
    # (slipsq/_flowslots.pxd, shared with the engine's per-flow loop and the other compiled readers)
    assert c.direct_fields() == tuple(f.name for f in dataclasses.fields(Flow))


def test_dropped_tuples_let_go_of_their_memory() -> None:
    """Evicted and expired tuples, with arrays in the object and grown onto the heap, free it all: the
    table's memory stays flat over many generations of tuples (tracemalloc sees PyMem_Malloc)."""
    table = c.LetterTable(max_tuples=50, idle=100.0)
    held = table.add(flow(0.0, 100, 1.0, port=1))  # a tuple the caller still holds once it is dropped

    def generation(g: int) -> None:
        for k in range(200):  # 200 tuples of 1 or 30 flows (past the in-object room): 150 evicted
            for j in range(1 if k % 2 else 30):
                table.add(flow(g * 1e6 + k + j * 7.0, 100 * j, 1.0, port=k + 2))
        table.expire(g * 1e6 + 500.0)

    generation(1)
    tracemalloc.start()
    try:
        generation(2)
        base = tracemalloc.get_traced_memory()[0]
        for g in range(3, 30):
            generation(g)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(table) <= 50 and table.evicted >= 27 * 150
    assert grown < 20_000, grown
    assert held is not None and held.text == "2" and held.key[2] == 1  # still whole (100 bytes, 1 s: "2")
    assert sys.getrefcount(held) == 2  # only this frame's name holds it: the table let go
