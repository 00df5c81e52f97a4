"""Markov-chain models of 4-tuple behaviour: the model record, matching exactly as
../shared/letters.md §4, and slipsq's model file format (one JSON file per model, see models/README.md).

Matching a tuple's string S against a model's training string T:
  T is cut to len(S); a first-order chain is built from the cut T (initial probability of a
  character = how often it starts a transition / number of transitions; P(b|a) = count(a→b) /
  count(a→·)); log P(T) and log P(S) are the log initial probability of the first character (0 when
  unknown) plus the log probability of each transition (log 0.01 for one the chain never saw);
  distance = the more negative log-probability divided by the less negative one (>= 1); the model
  matches when 1 <= distance <= threshold, and the first matching model wins.

Doing that naively costs O(len S) per model per new letter, O(n²) per tuple. Here it costs
O(distinct transitions of S × log len T) per model, whatever the lengths:
  * log P(S) = init + Σ count_S(a→b) × log P_n(b|a), so a tuple only needs its transition counts
    (kept up to date by letters.TupleLetters) and its first character;
  * the chain of T cut at n is read off sorted position lists (count of a→b among the first n
    characters = a bisect), and log P(T cut at n) is precomputed for every n in one O(len T) pass.
`reference_distance` is the naive definition, kept for tests and for anyone checking by hand.

This module reads model files; it never executes anything it reads (JSON only; see stfm.py for
the pickle importer) and never decides what to block.
"""

from __future__ import annotations

import json
import logging
import math
import os
import stat
from array import array
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from slipsq.errors import ModelError

log = logging.getLogger(__name__)

LOG_PENALTY = math.log(0.01)  # an unseen transition (letters.md §4)
ALPHABET = frozenset("0123456789abcdefghiABCDEFGHIrstuvwxyzRSTUVWXYZ.,+*")
_DROP_ALPHABET = str.maketrans("", "", "".join(ALPHABET))  # letters.translate(it): what is not a letter
PROTOCOLS = ("TCP", "UDP")
FIELDS = ("label", "protocol", "letters", "threshold", "provenance")


def label_protocol(label: str) -> str:
    """The protocol a label applies to: its third dash-separated field (From-Botnet-TCP-...)."""
    parts = label.split("-")
    return parts[2].upper() if len(parts) >= 3 else ""


def label_application(label: str) -> str:
    """The application a label's model was trained on: its fourth field (From-Botnet-UDP-DNS-DGA-1: DNS)."""
    parts = label.split("-")
    return parts[3].upper() if len(parts) >= 4 else ""


@dataclass(frozen=True)
class Model:
    label: str
    protocol: str  # "TCP" or "UDP"
    letters: str  # the training string
    threshold: float
    provenance: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def benign(self) -> bool:
        return "Normal" in self.label

    @property
    def proto(self) -> str:
        """The protocol as flows name it ("tcp", "udp")."""
        return self.protocol.lower()

    @property
    def dns_only(self) -> bool:
        """A model of DNS traffic (its label's application is DNS): it matches tuples to port 53 only.
        chrony's polls of an NTP server every 64 s matched the DGA models' DNS traffic at 0.8, one
        finding away from blocking the house's time server."""
        return label_application(self.label) == "DNS"


def validate(model: Model, where: str) -> Model:
    """The model itself, or a ModelError naming `where` and what is wrong."""
    if not model.label or not isinstance(model.label, str):
        raise ModelError(f"{where}: 'label' must be a non-empty string")
    proto = label_protocol(model.label)
    if proto not in PROTOCOLS:
        raise ModelError(f"{where}: label '{model.label}' has no TCP or UDP as its third dash field")
    if model.protocol != proto:
        raise ModelError(f"{where}: protocol '{model.protocol}' does not match the label's '{proto}'")
    if not isinstance(model.letters, str) or len(model.letters) < 2:
        raise ModelError(f"{where}: 'letters' must be a string of at least 2 characters")
    # (the shipped models carry ~300,000 letters: translate drops them in C, a set of them cost ~4 ms
    # of every start)
    bad = sorted(set(model.letters.translate(_DROP_ALPHABET)))
    if bad:
        raise ModelError(f"{where}: 'letters' has characters that are not letters or symbols: "
                         f"{''.join(bad)!r}")
    thr = model.threshold
    if isinstance(thr, bool) or not isinstance(thr, (int, float)) or not math.isfinite(thr) or thr < 1:
        raise ModelError(f"{where}: 'threshold' must be a number >= 1 (a distance is never below 1), "
                         f"not {thr!r}")
    if not isinstance(model.provenance, dict):
        raise ModelError(f"{where}: 'provenance' must be an object")
    return model


# --- model files ---------------------------------------------------------------------------------

def to_dict(model: Model) -> dict[str, Any]:
    return {"label": model.label, "protocol": model.protocol, "threshold": model.threshold,
            "letters": model.letters, "provenance": model.provenance}


def from_dict(data: Any, where: str) -> Model:
    if not isinstance(data, dict):
        raise ModelError(f"{where}: a model file holds one JSON object")
    missing = [f for f in FIELDS if f not in data]
    if missing:
        raise ModelError(f"{where}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    thr = data["threshold"]
    if isinstance(thr, (int, float)) and not isinstance(thr, bool):
        thr = float(thr)
    return validate(Model(data["label"], data["protocol"], data["letters"], thr, data["provenance"]), where)


def file_name(label: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in label).strip(".")
    return (safe or "model") + ".json"


def write_model(model: Model, folder: str | Path) -> Path:
    """Write `model` as <folder>/<label>.json (atomically; the folder is created if missing)."""
    validate(model, model.label or "model")
    d = Path(folder)
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = d / file_name(model.label)
        import tempfile  # (writing a model is rare: not every start-up's cost)

        fd, tmp = tempfile.mkstemp(dir=d, prefix=".", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(to_dict(model), fh, indent=1, sort_keys=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        raise ModelError(f"cannot write model '{model.label}' into {d}: {e.strerror or e}") from None
    return path


MAX_MODEL_BYTES = 16 * 1024 * 1024  # a model file, .json or .stfm: the published ones are at most 62 KB


def read_regular(path: Path, where: str, stream: bool = False, limit: int = MAX_MODEL_BYTES) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `limit` bytes: a fifo in a models
    folder would hang the reader (a daemon's reload too), a link to /dev/zero would fill its memory.
    `stream`: a pipe or a device is read too, up to the limit (a file an admin names on the command
    line, such as /dev/stdin)."""
    try:
        fd = os.open(path, os.O_RDONLY | (0 if stream else os.O_NONBLOCK))  # (a fifo opens at once)
    except FileNotFoundError:
        raise ModelError(f"{where} does not exist") from None
    except OSError as e:
        raise ModelError(f"{where} cannot be read: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    why = ("is a folder, not a model file" if stat.S_ISDIR(mode) else
           "" if stat.S_ISREG(mode) or stream else "is not a regular file (a pipe or a device?)")
    if why:
        os.close(fd)
        raise ModelError(f"{where} {why}")
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as e:
            raise ModelError(f"{where} cannot be read: {e.strerror or e}") from None
    if len(data) > limit:
        raise ModelError(f"{where} is over {limit} bytes: too big for a model")
    return data


def read_model(path: str | Path) -> Model:
    p = Path(path)
    try:
        text = read_regular(p, f"model file {p}").decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(f"model file {p} cannot be read: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"model file {p} is not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise ModelError(f"model file {p} is nested too deeply to be a model") from None
    except ValueError:  # an integer of more than 4,300 digits
        raise ModelError(f"model file {p} holds a number slipsq cannot read (an integer of more than "
                         "4,300 digits?)") from None
    return from_dict(data, f"model file {p}")


def load_models(folder: str | Path) -> list[Model]:
    """Every *.json model in `folder`, sorted by file name (the order matching tries them in)."""
    d = Path(folder)
    if not d.exists():
        raise ModelError(f"models folder {d} does not exist")
    if not d.is_dir():
        raise ModelError(f"models folder {d} is not a folder")
    try:
        names = sorted(e.name for e in os.scandir(d)
                       if e.name.endswith(".json") and not e.name.startswith("."))
    except OSError as e:
        raise ModelError(f"models folder {d} cannot be read: {e.strerror or e}") from None
    models = [read_model(d / n) for n in names]
    if not models:
        log.warning("models folder %s holds no *.json models: no Markov-chain matching", d)
    return models


# --- matching ------------------------------------------------------------------------------------

def distance_of(lp_t: float, lp_s: float) -> float:
    """The more negative log-probability over the less negative one (>= 1; inf when only one is 0)."""
    lo, hi = (lp_t, lp_s) if lp_t <= lp_s else (lp_s, lp_t)
    if hi - lo <= 1e-12 * -lo:  # equal but for rounding (the two sums add the same terms in another order)
        return 1.0
    if hi == 0:
        return math.inf
    return lo / hi


def reference_distance(training: str, s: str) -> float:
    """letters.md §4 word for word, O(len S): the reference the fast path is tested against."""
    t = training[:len(s)]
    if len(t) < 2:
        return math.inf
    trans = Counter(pairwise(t))
    starts = Counter(t[:-1])
    total = len(t) - 1

    def logp(x: str) -> float:
        lp = math.log(starts[x[0]] / total) if starts[x[0]] else 0.0
        for a, b in pairwise(x):
            c = trans.get((a, b), 0)
            lp += math.log(c / starts[a]) if c else LOG_PENALTY
        return lp

    return distance_of(logp(t), logp(s))


class Chain:
    """A model made ready for matching: position lists and log P(T cut at n) for every n."""

    __slots__ = ("_full", "_full_init", "_pos", "_src", "length", "logpt", "model", "threshold")

    def __init__(self, model: Model, longest: int | None = None) -> None:
        """`longest`: the longest string S this chain will be asked about (None: any). The chain of T cut
        at n <= longest reads only T's first longest + 1 characters, so T is cut there: a 60,000-letter
        model costs what a 4,097-letter one does to make and to keep, and answers the same."""
        self.model = model
        self.threshold = model.threshold
        t = model.letters if len(model.letters) >= 2 else ""  # too short to have a chain: never matches
        if longest is not None and len(t) > longest + 1:
            # longest + 1 > n: S is never as long as the cut T, as it never was as long as T
            t = t[:max(2, longest + 1)]
        self.length = len(t)
        m = len(t) - 1  # transitions
        # positions: "ab" -> sorted k with t[k:k+2] == "ab"; "a" -> sorted k < len-1 with t[k] == "a"
        pos: dict[str, array] = {}
        src: dict[str, array] = {}
        # log P(T[:n]) under the chain of T[:n] is Σ f(c_ab) - Σ f(c_a) with f(x) = x ln x, plus the
        # initial probability of t[0]. Adding the transition at k (the r-th of its pair, the q-th from
        # its character) adds f(r+1) - f(r) - f(q+1) + f(q); a running sum gives every n in one pass.
        # (_letters.Chain computes the same terms in the same order, so both agree to the last bit.)
        f = [0.0] + [x * math.log(x) for x in range(1, m + 2)]
        self.logpt = logpt = array("d", [0.0]) * (len(t) + 1)  # 0 for n = 0 and 1: no transition
        acc = 0.0
        firsts = 0
        for k in range(m):
            ab, a = t[k:k + 2], t[k]
            pa = pos.get(ab)
            if pa is None:
                pa = pos[ab] = array("i")
            sa = src.get(a)
            if sa is None:
                sa = src[a] = array("i")
            r, q = len(pa), len(sa)
            pa.append(k)
            sa.append(k)
            acc += f[r + 1] - f[r] - f[q + 1] + f[q]
            firsts += a == t[0]
            logpt[k + 2] = acc + math.log(firsts / (k + 1))
        self._pos, self._src = pos, src
        self._full = {ab: math.log(len(ks) / len(src[ab[0]])) for ab, ks in pos.items()}
        self._full_init = {a: math.log(len(ks) / m) for a, ks in src.items()}

    def log_prob(self, n: int, first: str, pairs: dict[str, int], floor: float = -math.inf) -> float:
        """log P(S) under the chain of T cut at n, for S given by its first character and transitions.

        Every term is <= 0, so the sum only falls: once it is below `floor` the rest is skipped and
        the partial sum (already below floor) is returned."""
        if n >= self.length:
            full = self._full
            lp = self._full_init.get(first, 0.0)
            for ab, c in pairs.items():
                g = full.get(ab)
                lp += c * (g if g is not None else LOG_PENALTY)
                if lp < floor:
                    break
            return lp
        last = n - 2  # the transitions of T[:n] are those at k <= n-2
        src, pos, log, penalty = self._src, self._pos, math.log, LOG_PENALTY  # locals: the hot loop
        sa = src.get(first)
        ca = bisect_right(sa, last) if sa is not None else 0
        lp = log(ca / (n - 1)) if ca else 0.0
        for ab, c in pairs.items():
            pa = pos.get(ab)
            if pa is not None and (cab := bisect_right(pa, last)):
                lp += c * log(cab / bisect_right(src[ab[0]], last))
            else:
                lp += c * penalty
            if lp < floor:
                break
        return lp

    def distance(self, n: int, first: str, pairs: dict[str, int]) -> float:
        """The distance between S (length n, first character, transition counts) and T cut at n."""
        if n < 2 or self.length < 2:
            return math.inf
        lp_t = self.logpt[min(n, self.length)]
        return distance_of(lp_t, self.log_prob(n, first, pairs))

    def matches(self, n: int, first: str, pairs: dict[str, int]) -> float | None:
        """The distance when S matches (1 <= distance <= threshold), else None; stops summing log P(S)
        as soon as it is too negative to match, which is most of the work for most models."""
        if n < 2 or self.length < 2:
            return None
        lp_t = self.logpt[min(n, self.length)]
        floor = self.threshold * lp_t * (1 + 1e-9)  # below this, distance > threshold whatever follows
        lp_s = self.log_prob(n, first, pairs, floor)
        if lp_s < floor:  # stopped early (most models): distance_of would give lp_s / lp_t > threshold
            return None
        d = distance_of(lp_t, lp_s)
        return d if 1.0 <= d <= self.threshold else None


def pairs_of(s: str) -> dict[str, int]:
    return dict(Counter(s[k:k + 2] for k in range(len(s) - 1)))


def match(chains: list[Chain], s: str, pairs: dict[str, int] | None = None) -> tuple[Chain, float] | None:
    """The first chain that matches S, with its distance; None when none does."""
    if not s:
        return None
    p = pairs_of(s) if pairs is None else pairs
    for ch in chains:
        d = ch.matches(len(s), s[0], p)
        if d is not None:
            return ch, d
    return None


def shipped_models_dir() -> Path:
    """The models shipped with slipsq: models/ beside the package in a checkout, slipsq/models/ in an
    installed package (setup.py puts them there), else /usr/share/slipsq/models. The first that
    exists; the checkout's path when none does."""
    package = Path(__file__).resolve().parents[2]  # slipsq/ (this file is slipsq/detect/stratosphere/)
    candidates = (package.parent / "models", package / "models", Path("/usr/share/slipsq/models"))
    return next((p for p in candidates if p.is_dir()), candidates[0])
