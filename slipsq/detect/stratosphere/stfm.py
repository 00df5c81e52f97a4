"""The importer of Stratosphere IPS .stfm model files (letters.md §5), which runs no code from them.

An .stfm file is six objects pickled one after another by Python 2 (protocol 0): the initial
probability dict, the transition matrix, the training letter string, its log-probability, the
label and the threshold. A pickle can name any Python callable and have it called, so the files
are read with a restricted Unpickler that resolves exactly three names, each to a local stand-in:

  stf.common.markov_chains.Matrix  the matrix class (a dict subclass) -> _Matrix, a plain dict
  copy_reg._reconstructor          how protocol 0 rebuilds a dict subclass -> _reconstruct, which
                                   accepts only (_Matrix, dict, dict) and builds a _Matrix
  __builtin__.dict                 the base class named in that call -> dict

Every other global (os.system, builtins.eval, subprocess.Popen, ...) is refused with a ModelError
before anything is called. The six objects are then checked for their types, and only the string,
the label and the threshold are kept (the chain is re-derived when matching); the result is a
markov.Model to be written in slipsq's own JSON format.

This module must never hand a pickle to the standard Unpickler, nor load a .stfm at engine start:
imports happen once, by an admin's command (`slipsq models import`).
"""

from __future__ import annotations

import hashlib
import io
import pickle
import pickletools
from pathlib import Path
from typing import Any

from slipsq.detect.stratosphere.markov import Model, label_protocol, read_regular, validate
from slipsq.errors import ModelError

SOURCE = "Stratosphere Linux IPS 0.2 published models, Stratosphere Laboratory, CTU Prague"
LICENSE = "GPL-2.0"


class _Matrix(dict):  # type: ignore[type-arg]
    """Stand-in for stf.common.markov_chains.Matrix: its items, none of its behaviour."""

    def __setstate__(self, state: Any) -> None:
        # the original pickles its attributes (itemlist, init_vector); they are not needed
        if state is not None and not isinstance(state, dict):
            raise pickle.UnpicklingError("the matrix's state is not a dict")


def _reconstruct(cls: Any, base: Any, state: Any) -> _Matrix:
    if cls is not _Matrix or base is not dict or not (state is None or isinstance(state, dict)):
        raise pickle.UnpicklingError("copy_reg._reconstructor is accepted only to rebuild the matrix")
    return _Matrix(state or {})


_ALLOWED: dict[tuple[str, str], Any] = {
    ("stf.common.markov_chains", "Matrix"): _Matrix,
    ("copy_reg", "_reconstructor"): _reconstruct,
    ("copyreg", "_reconstructor"): _reconstruct,
    ("__builtin__", "dict"): dict,
    ("builtins", "dict"): dict,
}


class _Refused(Exception):
    pass


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise _Refused(f"{module}.{name}")
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _check(objs: list[Any], where: str) -> None:
    init, matrix, letters, prob, label, thr = objs
    if not isinstance(init, dict) or not all(isinstance(k, str) and isinstance(v, float)
                                             for k, v in init.items()):
        raise ModelError(f"{where}: object 1 (initial probabilities) is not a dict of letters to numbers")
    if not isinstance(matrix, dict) or not all(
            isinstance(k, tuple) and len(k) == 2 and all(isinstance(x, str) for x in k)
            and isinstance(v, float) for k, v in matrix.items()):
        raise ModelError(f"{where}: object 2 (transition matrix) is not a dict of letter pairs to numbers")
    if not isinstance(letters, str):
        raise ModelError(f"{where}: object 3 (the training letters) is not a string")
    if not isinstance(prob, float):
        raise ModelError(f"{where}: object 4 (the log-probability) is not a number")
    if not isinstance(label, str):
        raise ModelError(f"{where}: object 5 (the label) is not a string")
    if isinstance(thr, bool) or not isinstance(thr, (int, float)):
        raise ModelError(f"{where}: object 6 (the threshold) is not a number")


def memo_bomb(data: bytes) -> str | None:
    """Where the file stores into the unpickler's memo at an index it could never have reached (past
    its own length), or None. The C unpickler grows its memo to twice the index it is given: one
    hostile or damaged PUT asks for gigabytes before a single object is checked."""
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):
            for op, arg, pos in pickletools.genops(stream):
                if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and isinstance(arg, int) and arg > len(data):
                    return f"memo index {arg} at byte {pos}"
    except Exception:  # a corrupt pickle: the unpickler below names what is wrong
        return None
    return None


def read_stfm(data: bytes, where: str) -> list[Any]:
    """The six objects of an .stfm file's bytes, through the restricted unpickler."""
    bomb = memo_bomb(data)
    if bomb is not None:
        raise ModelError(f"{where}: not a Stratosphere model file: {bomb} (past the file's end: it would "
                         f"make the reader allocate without bound); nothing was executed")
    stream = io.BytesIO(data)
    unpickler = RestrictedUnpickler(stream, encoding="latin1")
    objs: list[Any] = []
    try:
        for _ in range(6):
            objs.append(unpickler.load())
    except _Refused as e:
        raise ModelError(f"{where}: refused: the file asks for the Python object '{e}', which a model file "
                         f"never needs (it may try to run code); nothing was executed") from None
    except EOFError:
        raise ModelError(f"{where}: not a Stratosphere model file: it ends after {len(objs)} of 6 objects"
                         ) from None
    except RecursionError:
        raise ModelError(f"{where}: not a Stratosphere model file: nested too deeply") from None
    except Exception as e:  # a corrupt pickle can raise almost anything (ValueError, KeyError, ...)
        raise ModelError(f"{where}: not a Stratosphere model file: {type(e).__name__}: {e}") from None
    if stream.read(1):
        raise ModelError(f"{where}: not a Stratosphere model file: data after the six objects")
    _check(objs, where)
    return objs


def import_stfm(path: str | Path) -> Model:
    """An .stfm file as a slipsq Model (provenance: the source, the file name, its sha256)."""
    p = Path(path)
    where = f"model file {p}"
    data = read_regular(p, where, stream=True)  # an admin's file: `cat m.stfm | ... /dev/stdin` too
    _init, _matrix, letters, prob, label, thr = read_stfm(data, where)
    try:
        threshold = float(thr)
    except (TypeError, ValueError, OverflowError):  # 10**400 pickled as a long: no float holds it
        what = f"an integer of {thr.bit_length()} bits" if isinstance(thr, int) else f"{type(thr).__name__}"
        raise ModelError(f"{where}: its threshold ({what}) is not a number slipsq can use") from None
    provenance = {
        "source": SOURCE,
        "license": LICENSE,
        "imported_from": p.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "imported_with": "slipsq models import (restricted unpickler)",
        "trained_on": "not published with the model",
        "stfm_log_probability": prob,
    }
    return validate(Model(label, label_protocol(label), letters, threshold, provenance), where)
