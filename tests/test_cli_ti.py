"""`slipsq ti update`: checks the lists, reports bad lines, and says what happens to a daemon."""

from __future__ import annotations

from pathlib import Path

from tests.test_replay_cli import one_clear_line, slipsq


def test_update_reports_counts_and_bad_lines(tmp_path: Path) -> None:
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text("# feed\n203.0.113.66\n198.51.100.0/24  # a net\nnot-an-ip\n2001:db8::/48\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[threatintel]\nfolder = "{lists}"\n')
    p = slipsq("ti", "update", "--config", str(cfg), "--state-dir", str(tmp_path / "state"))
    assert p.returncode == 0, p.stderr
    assert "1 addresses, 2 networks, 1 bad lines" in p.stdout
    assert "a.txt:4" in p.stdout
    assert "no daemon is running" in p.stdout


def test_update_without_a_folder_or_with_a_missing_one(tmp_path: Path) -> None:
    one_clear_line(slipsq("ti", "update"), 3, "threatintel.folder")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[threatintel]\nfolder = "{tmp_path / "gone"}"\n')
    one_clear_line(slipsq("ti", "update", "--config", str(cfg)), 2, "gone")


def test_update_says_when_the_running_daemon_could_not_reload(tmp_path: Path) -> None:
    """Found by review: the daemon's refusal ({"ok": false}) was printed as "the running daemon
    reloaded its configuration and lists", exit 0."""
    import threading

    from slipsq.control import socket_path
    from tests.test_control import _answering

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "a.txt").write_text("203.0.113.66\n")
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[threatintel]\nfolder = "{lists}"\n')
    state = tmp_path / "state"
    state.mkdir()
    stop = threading.Event()
    t = _answering(socket_path(state), b'{"ok": false, "error": "models folder /m is gone"}\n', stop)
    try:
        p = slipsq("ti", "update", "--config", str(cfg), "--state-dir", str(state))
    finally:
        stop.set()
        t.join(5)
    assert p.returncode == 1 and "reloaded" not in p.stdout, (p.stdout, p.stderr)
    assert "the running daemon did not reload: models folder /m is gone" in p.stderr
