"""Golden outputs: prove a speed change left `slipsq replay`'s output byte-identical.

    python -m tools.golden save DIR [--extra FILE ...]    # before the change: record every output
    python -m tools.golden check DIR [--pure]             # after it: replay again, compare byte for byte

For every input (the bundled captures in tests/data, every capture and flow file under
../shared/data or $SLIPSQ_SHARED_DATA, the generated detection corpus of tools/gen_corpus, and any
`--extra` file such as a bench capture) it runs the real CLI three ways: `replay X --json`,
`replay X --tuples --json` and `replay X -o DIR`, and keeps stdout and every file of DIR. Only the
summary's timing figures (elapsed_s, packets_per_s, flows_per_s) are blanked: they are the one
thing a run may change. `check --pure` replays with the readable twins (SLIPSQ_PURE_PYTHON=1): they
must write the same bytes as the compiled core.

A development tool: it writes only under DIR and a temporary folder, and never edits the project.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SLIPSQ_SHARED_DATA") or ROOT.parent / "shared" / "data")
FLOW_DIRS = ("pcaps", "flows", "zeek", "suricata", "nfdump")
# the summary's figures that measure the run, not the input
_TIMING = re.compile(r'("(?:elapsed_s|packets_per_s|flows_per_s)":\s*)[0-9.eE+-]+')
MODES: dict[str, list[str]] = {"json": ["--json"], "tuples": ["--tuples", "--json"]}


def inputs(corpus: Path | None, extra: list[Path]) -> list[Path]:
    """Every input to replay, in a stable order."""
    found = sorted((ROOT / "tests" / "data").glob("*.pcap"))
    if SHARED.is_dir():
        for d in FLOW_DIRS:
            found += sorted(p for p in (SHARED / d).rglob("*") if p.is_file())
    if corpus is not None:
        found += sorted(corpus.glob("*.pcap"))
    return found + extra


def make_corpus(where: Path) -> Path:
    """The detection corpus (tools/gen_corpus: beacons, storms, DGA, scans, P2P, ...) in `where`."""
    where.mkdir(parents=True, exist_ok=True)
    if not any(where.glob("*.pcap")):
        subprocess.run([sys.executable, "-m", "tools.gen_corpus", str(where)], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    return where


def normalise(text: str) -> str:
    return _TIMING.sub(r"\g<1>0", text)


def replay_outputs(path: Path, pure: bool) -> dict[str, str]:
    """name -> normalised text of every output of the three runs on `path`."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("SLIPSQ_PURE_PYTHON", None)
    if pure:
        env["SLIPSQ_PURE_PYTHON"] = "1"
    out: dict[str, str] = {}
    for mode, flags in MODES.items():
        r = subprocess.run([sys.executable, "-m", "slipsq", "replay", str(path), *flags], cwd=ROOT,
                           env=env, capture_output=True, text=True)
        out[f"{mode}.stdout"] = normalise(r.stdout)
        out[f"{mode}.exit"] = f"{r.returncode}\n{r.stderr}"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "out"
        r = subprocess.run([sys.executable, "-m", "slipsq", "replay", str(path), "-o", str(d)], cwd=ROOT,
                           env=env, capture_output=True, text=True)
        out["o.exit"] = f"{r.returncode}\n{r.stderr}"
        for f in sorted(d.rglob("*")) if d.is_dir() else []:  # timeline/<ip>.txt too
            if f.is_file():
                out["o." + str(f.relative_to(d)).replace(os.sep, "__")] = normalise(f.read_text())
    return out


def key(path: Path) -> str:
    """A folder name for `path`'s outputs (unique over the inputs, readable)."""
    rel = str(path.resolve())
    for base in (ROOT, SHARED.resolve()):
        if rel.startswith(str(base) + os.sep):
            rel = rel[len(str(base)) + 1:]
    return rel.replace(os.sep, "__")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("save", "check"))
    ap.add_argument("dir", type=Path, help="where the golden outputs are (save: written; check: read)")
    ap.add_argument("--extra", type=Path, nargs="*", default=[], help="more inputs (e.g. a bench capture)")
    ap.add_argument("--pure", action="store_true", help="replay with the readable twins (SLIPSQ_PURE_PYTHON=1)")
    ap.add_argument("--no-corpus", action="store_true", help="skip the generated detection corpus")
    ap.add_argument("--only-extra", action="store_true", help="only the --extra inputs (e.g. the bench captures)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args(argv)
    corpus = None if a.no_corpus or a.only_extra else make_corpus(a.dir / "corpus")
    extra = list(a.extra)
    if a.action == "check" and (a.dir / "extra.json").exists():
        extra += [Path(p) for p in json.loads((a.dir / "extra.json").read_text()) if Path(p) not in extra]
    files = extra if a.only_extra else inputs(corpus, extra)
    with ThreadPoolExecutor(a.jobs) as pool:
        results = list(pool.map(lambda p: replay_outputs(p, a.pure), files))
    # outputs name their inputs by path: a check from another checkout (a worktree) or another
    # shared-data folder writes those paths as the save did, so only real differences show
    here = {"root.txt": str(ROOT), "shared.txt": str(SHARED.resolve())}
    if a.action == "check":
        for name, path in here.items():
            saved_path = (a.dir / name).read_text().strip() if (a.dir / name).exists() else path
            if saved_path != path:
                results = [{k: v.replace(path, saved_path) for k, v in r.items()} for r in results]
    bad = 0
    for path, outs in zip(files, results):
        where = a.dir / "outputs" / key(path)
        if a.action == "save":
            shutil.rmtree(where, ignore_errors=True)
            where.mkdir(parents=True)
            for name, text in outs.items():
                (where / name).write_text(text)
            continue
        saved = {p.name: p.read_text() for p in where.glob("*")} if where.is_dir() else {}
        if not saved:
            print(f"NO GOLDEN  {key(path)}")
            bad += 1
            continue
        diff = sorted(n for n in saved.keys() | outs.keys() if saved.get(n) != outs.get(n))
        print(f"{'DIFFERENT' if diff else 'same':10} {key(path)} {' '.join(diff)}")
        bad += bool(diff)
    if a.action == "save":
        (a.dir / "extra.json").write_text(json.dumps([str(p) for p in extra]))
        for name, path in here.items():
            (a.dir / name).write_text(path + "\n")
        print(f"saved the outputs of {len(files)} inputs in {a.dir}")
        return 0
    print(f"{len(files) - bad} of {len(files)} inputs byte-identical")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
