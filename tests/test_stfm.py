"""The .stfm importer: it reads the published models and runs no code from any pickle."""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq.detect.stratosphere.markov import Chain, load_models, shipped_models_dir, write_model
from slipsq.detect.stratosphere.stfm import import_stfm, read_stfm
from slipsq.errors import ModelError


def p0(obj: object) -> bytes:
    return pickle.dumps(obj, protocol=0)


def matrix_pickle(items: dict[tuple[str, str], float]) -> bytes:
    """The transition matrix the way Stratosphere's Python 2 code pickled it (protocol 0)."""
    body = b"".join(b"(S'%s'\nS'%s'\ntF%r\ns" % (a.encode(), b.encode(), v) for (a, b), v in items.items())
    return (b"ccopy_reg\n_reconstructor\np1\n(cstf.common.markov_chains\nMatrix\np2\nc__builtin__\ndict\np3\n"
            b"(dp4\n" + body + b"tRp5\n(dp6\nS'itemlist'\np7\n(lp8\nsS'init_vector'\np9\n(dp10\nsb.")


def stfm(letters: str = "66*f*f*f*f*a*", label: str = "From-Botnet-TCP-Test-1", thr: float = 1.1,
         objs: dict[int, bytes] | None = None) -> bytes:
    parts = [p0({"6": 0.2, "*": 0.4, "f": 0.4}), matrix_pickle({("*", "f"): 0.8, ("f", "*"): 1.0}),
             p0(letters), p0(-6.1), p0(label), p0(thr)]
    for i, b in (objs or {}).items():
        parts[i] = b
    return b"".join(parts)


def test_a_constructed_stfm_imports(tmp_path: Path) -> None:
    f = tmp_path / "m.stfm"
    f.write_bytes(stfm())
    m = import_stfm(f)
    assert (m.label, m.protocol, m.letters, m.threshold) == ("From-Botnet-TCP-Test-1", "TCP", "66*f*f*f*f*a*",
                                                             1.1)
    assert m.provenance["imported_from"] == "m.stfm" and len(m.provenance["sha256"]) == 64
    assert load_models(write_model(m, tmp_path / "out").parent) == [m]


def evil_payloads(cmd: str) -> list[bytes]:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (cmd,))

    out = [b"cos\nsystem\n(S'" + cmd.encode() + b"'\ntR."]
    out += [pickle.dumps(Evil(), protocol=p) for p in range(pickle.HIGHEST_PROTOCOL + 1)]
    return out


@pytest.mark.parametrize("where", [0, 1, 4])
def test_a_pickle_that_would_run_a_command_is_refused_and_nothing_runs(tmp_path: Path, where: int) -> None:
    marker = tmp_path / "pwned"
    for n, payload in enumerate(evil_payloads(f"touch {marker}")):
        f = tmp_path / f"evil{n}.stfm"
        f.write_bytes(stfm(objs={where: payload}))
        with pytest.raises(ModelError, match=r"evil\d\.stfm: refused: the file asks for the Python object "
                                             r"'(os|posix)\.system'.*nothing was executed"):
            import_stfm(f)
    assert not marker.exists()
    # the same payload is live: Python's own unpickler would have run it
    live = tmp_path / "live"
    pickle.loads(evil_payloads(f"touch {live}")[0])
    assert live.exists()


@pytest.mark.parametrize("payload", [
    b"cbuiltins\neval\n(S'1+1'\ntR.",
    b"c__builtin__\nexec\n(S'x=1'\ntR.",
    b"csubprocess\nPopen\n((S'true'\nltR.",
    b"cstf.common.markov_chains\nos\n.",
    b"ccopy_reg\n_reconstructor\n(c__builtin__\ndict\nc__builtin__\ndict\n(dtR.",  # plumbing, misused
    b"P1\n.",  # persistent id
    b"\x80\x02\x82\x01.",  # EXT1: the copyreg extension registry
])
def test_other_globals_and_tricks_are_refused(tmp_path: Path, payload: bytes) -> None:
    f = tmp_path / "m.stfm"
    f.write_bytes(stfm(objs={0: payload}))
    with pytest.raises(ModelError, match=r"m\.stfm: (refused|not a Stratosphere model file)"):
        import_stfm(f)


@pytest.mark.parametrize(("objs", "msg"), [
    ({0: p0([1, 2])}, "object 1 .* not a dict"),
    ({1: p0({"ab": 0.5})}, "object 2 .* not a dict of letter pairs"),
    ({2: p0(12)}, "object 3 .* not a string"),
    ({3: p0("x")}, "object 4 .* not a number"),
    ({4: p0(None)}, "object 5 .* not a string"),
    ({5: p0("1.1")}, "object 6 .* not a number"),
    ({5: p0(0.9)}, "'threshold' must be a number >= 1"),
    ({4: p0("Some-Label")}, "no TCP or UDP"),
])
def test_wrong_objects_are_named(tmp_path: Path, objs: dict[int, bytes], msg: str) -> None:
    f = tmp_path / "m.stfm"
    f.write_bytes(stfm(objs=objs))
    with pytest.raises(ModelError, match=msg):
        import_stfm(f)


def test_truncated_trailing_missing_and_folder(tmp_path: Path) -> None:
    data = stfm()
    f = tmp_path / "m.stfm"
    f.write_bytes(data[: data.index(p0("From-Botnet-TCP-Test-1"))])
    with pytest.raises(ModelError, match="ends after 4 of 6 objects"):
        import_stfm(f)
    f.write_bytes(data + p0("more"))
    with pytest.raises(ModelError, match="data after the six objects"):
        import_stfm(f)
    f.write_bytes(b"")
    with pytest.raises(ModelError, match="ends after 0 of 6"):
        import_stfm(f)
    with pytest.raises(ModelError, match="does not exist"):
        import_stfm(tmp_path / "nope.stfm")
    with pytest.raises(ModelError, match="is a folder"):
        import_stfm(tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.builds(lambda cut, junk: stfm()[:cut] + junk,
                                           st.integers(0, 400), st.binary(max_size=20)))
def test_any_bytes_import_or_give_a_model_error(data: bytes) -> None:
    try:
        read_stfm(data, "fuzz")
    except ModelError as e:
        assert str(e).startswith("fuzz")


# --- the 18 published models --------------------------------------------------------------------

PUBLISHED = {  # file -> training string length (all thresholds are 1.1)
    "From-Botnet-TCP-HTTP-CC-23-251.stfm": 365, "From-Botnet-TCP-HTTP-CC-25-252.stfm": 97,
    "From-Botnet-TCP-HTTP-CC.BitcoinMiner-1-253.stfm": 465,
    "From-Botnet-TCP-HTTP-CC.Cridex-1-254.stfm": 60049,
    "From-Botnet-TCP-HTTP-CC.Miuref.Attempt-4-255.stfm": 9594,
    "From-Botnet-TCP-HTTP-CC.PlainText-1-256.stfm": 105, "From-Botnet-TCP-HTTP-Flu.CC-3-257.stfm": 29999,
    "From-Botnet-TCP-HTTP-Zeus.CC-1-258.stfm": 56927, "From-Botnet-TCP-Unknown-CC-1-259.stfm": 3503,
    "From-Botnet-TCP-Unknown-CC.Attempt-2-260.stfm": 9599,
    "From-Botnet-TCP-Unknown-Linux.Botnet-1-250.stfm": 5999, "From-Botnet-TCP-Unknown-Lurk.CC-1-261.stfm": 85,
    "From-Botnet-UDP-DNS-DGA-1-262.stfm": 41744, "From-Botnet-UDP-DNS-DGA-17-263.stfm": 59999,
    "From-Botnet-UDP-DNS-DGA-18-264.stfm": 13617, "From-Botnet-UDP-Unknown-CC-1-5.stfm": 42,
    "From-Malware-TCP-HTTP-CC.Dridex-1-4.stfm": 97, "From-Normal-TCP-HTTP-LastFM-30-265.stfm": 233,
}


@pytest.mark.shared
def test_all_published_models_import(shared_data: Path) -> None:
    folder = shared_data / "stratosphere-models"
    files = sorted(p.name for p in folder.glob("*.stfm"))
    assert files == sorted(PUBLISHED)
    shipped = {m.label: m for m in load_models(shipped_models_dir())}
    for name, length in PUBLISHED.items():
        m = import_stfm(folder / name)
        assert m.label == name.rsplit("-", 1)[0] and m.protocol == m.label.split("-")[2]
        assert m.threshold == 1.1 and len(m.letters) == length
        # the file's own log-probability is what our chain gives its string: with the initial
        # probability (two files) or without it (the sixteen made by the older code)
        ch = Chain(m)
        full = ch.logpt[ch.length]
        without_init = full - math.log(m.letters[:-1].count(m.letters[0]) / (length - 1))
        stored = m.provenance["stfm_log_probability"]
        assert stored == pytest.approx(full, rel=1e-9) or stored == pytest.approx(without_init, rel=1e-9)
        # and the model shipped in models/ is this file, converted
        s = shipped[m.label]
        assert (s.letters, s.threshold) == (m.letters, m.threshold)
        assert s.provenance["sha256"] == m.provenance["sha256"]


@pytest.mark.parametrize("put", [b"p4000000000\n", b"r\x00\x00\x00\x40"])  # PUT (protocol 0), LONG_BINPUT
def test_a_memo_index_past_the_file_is_refused_before_the_unpickler_runs(tmp_path: Path, put: bytes) -> None:
    """The C unpickler grows its memo to twice the index a PUT names: a 40-byte file could ask for
    32 or 8 GB. It is refused by name, with the good objects around it."""
    data = stfm()
    at = data.index(b"(dp")  # the first object: a dict, memoised at once
    f = tmp_path / "m.stfm"
    f.write_bytes(data[:at] + b"(d" + put + data[at + len(b"(dp1\n"):])
    with pytest.raises(ModelError, match=r"m\.stfm: not a Stratosphere model file: memo index \d+ at byte \d+"):
        import_stfm(f)
    # the same file with its own index still imports
    f.write_bytes(data)
    assert import_stfm(f).label


def test_a_threshold_no_float_holds_is_a_clear_error(tmp_path: Path) -> None:
    f = tmp_path / "m.stfm"
    for thr in (p0(10**400), pickle.dumps(10**5000, protocol=2)):  # (5,000 digits: no str() either)
        f.write_bytes(stfm(objs={5: thr}))
        with pytest.raises(ModelError, match=r"threshold \(an integer of \d+ bits\) is not a number slipsq can use"):
            import_stfm(f)


def test_an_stfm_on_a_pipe_imports(tmp_path: Path) -> None:
    """`cat m.stfm | slipsq models import /dev/stdin`: a file the admin names may be a pipe (a models
    folder's may not: read_regular refuses it there)."""
    import threading

    fifo = tmp_path / "pipe.stfm"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(stfm()))
    writer.start()
    try:
        assert import_stfm(fifo).letters == "66*f*f*f*f*a*"
    finally:
        writer.join(10)
