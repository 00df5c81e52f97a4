"""The gateway installer (tools/install-gateway.sh, `make install`) end to end into a scratch root:
the venv and its working command, the link, a configuration that loads with the admin's SSH client
on its allow list, the unit; an upgrade that keeps the configuration and the block store; an
uninstall that removes what it added (and --purge the rest). Slow: it builds slipsq (pip, Cython)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from slipsq.runmode import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "install-gateway.sh"
SSH = "198.51.100.4 50122 192.0.2.10 22"


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _run(*args: str, env: dict[str, str] | None = None, cwd: str = "/") -> subprocess.CompletedProcess[str]:
    """`args` with a clean environment, from `cwd` (not this checkout: `python -c` would import it)."""
    e = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "SSH_CONNECTION",
                                                         "SSH_CLIENT", "DESTDIR")}
    e["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    e.update(env or {})
    return subprocess.run(list(args), capture_output=True, text=True, env=e, timeout=900, cwd=cwd)


def test_refuses_bad_arguments_in_one_line(tmp_path: Path) -> None:
    r = _run("bash", str(SCRIPT), "--root", str(tmp_path), "--bogus")
    assert r.returncode == 1 and r.stderr == "slipsq-install: unknown option '--bogus' (see --help)\n"
    r = _run("bash", str(SCRIPT), "--root", str(tmp_path), "--prefix", "relative/path")
    assert r.returncode == 1 and "must be an absolute path" in r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing made before the arguments were checked


def test_help() -> None:
    r = _run("bash", str(SCRIPT), "--help")
    assert r.returncode == 0 and "--uninstall" in r.stdout and "--root DIR" in r.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
@pytest.mark.skipif(not Path("/usr/include/libnetfilter_queue/libnetfilter_queue.h").exists(),
                    reason="needs libnetfilter-queue-dev")
@pytest.mark.skipif(not _pypi_reachable(), reason="needs the Python package index")
def test_install_upgrade_uninstall_in_a_scratch_root(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    r = _run("make", "-C", str(ROOT), "install", f"DESTDIR={dest}", env={"SSH_CONNECTION": SSH})
    assert r.returncode == 0, r.stdout + r.stderr
    venv, link = dest / "opt/slipsq", dest / "usr/local/bin/slipsq"
    conf, unit = dest / "etc/slipsq/slipsq.toml", dest / "etc/systemd/system/slipsq.service"
    # the command works through the link, from its own venv (not this checkout)
    assert link.is_symlink() and link.resolve() == (venv / "bin/slipsq").resolve()
    v = _run(str(link), "--version")
    assert v.returncode == 0 and v.stdout.startswith("slipsq, version")
    where = _run(str(venv / "bin/python"), "-c", "import slipsq, slipsq.sources._nfq; print(slipsq.__file__)")
    assert where.stdout.startswith(str(venv)), where
    # the configuration: loads, the SSH client first on the allow list, every option present
    cfg = load_config(conf)
    assert cfg["allow.ips"][0] == "198.51.100.4"
    text = conf.read_text()
    assert text.count("\n# ") > len(cfg.items())  # a help comment per option, and more
    assert oct(conf.stat().st_mode & 0o777) == "0o640"
    # the unit, pointing at the venv
    u = unit.read_text()
    assert "Type=notify" in u and "ExecStart=/opt/slipsq/bin/slipsq --queue 0" in u
    assert "wrote" in r.stdout and "systemctl start slipsq" in r.stdout

    # upgrade: the admin's edits and the block store survive
    conf.write_text(text + "# edited by the admin\n")
    store = dest / "var/lib/slipsq/blocks.sqlite3"
    store.parent.mkdir(parents=True)
    store.write_bytes(b"blocks")
    r = _run("bash", str(SCRIPT), "--root", str(dest), env={"SSH_CONNECTION": "203.0.113.99 1 2 3"})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "upgrading" in r.stdout and "kept the configuration" in r.stdout
    assert conf.read_text().endswith("# edited by the admin\n") and "203.0.113.99" not in conf.read_text()
    assert store.read_bytes() == b"blocks"
    assert _run(str(link), "--version").returncode == 0

    # uninstall: program, link, unit gone; configuration and state kept until --purge
    r = _run("make", "-C", str(ROOT), "uninstall", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not venv.exists() and not link.exists() and not link.is_symlink() and not unit.exists()
    assert conf.exists() and store.exists()
    r = _run("make", "-C", str(ROOT), "purge", f"DESTDIR={dest}")
    assert r.returncode == 0, r.stdout + r.stderr
    left = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    assert left == [], left
