"""What an installed slipsq carries: `pip install .` builds from setup.py; the shipped Markov models,
which live in models/ at the top of a checkout, must travel inside the package, or an installed
slipsq (the Pi service) runs without them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_installed_package_carries_and_finds_the_shipped_models(tmp_path: Path) -> None:
    # build_py lays the package out as a wheel would (without compiling the extensions)
    build = tmp_path / "lib"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(build)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    shipped = sorted(p.name for p in (ROOT / "models").glob("*.json"))
    assert len(shipped) >= 18
    assert sorted(p.name for p in (build / "slipsq" / "models").glob("*.json")) == shipped
    # and that package, away from the checkout, resolves and loads them by default
    code = ("from slipsq.runmode import resolve_models_dir; from slipsq.detect.stratosphere.markov import load_models; "
            "d = resolve_models_dir(None, None); print(d); print(len(load_models(d)))")
    env = {k: v for k, v in os.environ.items() if k != "SLIPSQ_MODELS"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**env, "PYTHONPATH": str(build), "SLIPSQ_PURE_PYTHON": "1"})
    assert r.returncode == 0, r.stderr
    where, count = r.stdout.split()
    assert Path(where) == build / "slipsq" / "models" and int(count) == len(shipped)


def test_an_installed_package_carries_the_report_template(tmp_path: Path) -> None:
    """slipsq.report's Jinja2 template is package data: an installed slipsq (the gateway's) renders
    the page away from the checkout."""
    build = tmp_path / "lib"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(build)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (build / "slipsq" / "report" / "templates" / "report.html.j2").is_file()
    code = ("import slipsq.report.html as h; print(h.__file__); "
            "print(h.render_report([], 'x').count('No host had evidence'))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(build), "SLIPSQ_PURE_PYTHON": "1"})
    assert r.returncode == 0, r.stderr
    where, count = r.stdout.split()
    assert Path(where).is_relative_to(build) and count == "1"
