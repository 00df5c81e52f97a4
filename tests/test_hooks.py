"""slipsq.hooks with real processes: the decision reaches a hook's stdin, a hook that outlives its
timeout is killed with its process group, a flood is rate-limited and never stalls the caller, and
the configuration is checked."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from slipsq.config import Config
from slipsq.errors import ConfigError
from slipsq.hooks import Hooks, TokenBucket, command_line, from_config, run_command
from slipsq.records import Block
from slipsq.runmode import all_options
from tests.flowgen import bundled_alerts


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _wait_for(cond: object, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _hooks(commands: dict[str, list[str]], logged: list[str], timeout: float = 5.0, per_minute: int = 60,
           queue: int = 32) -> Hooks:
    return Hooks(commands, timeout, per_minute, queue, logged.append)


def test_the_block_reaches_the_hook_as_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "got"
    hook = _script(tmp_path, "notify", f'cat > {out}.tmp; echo "$SLIPSQ_EVENT $SLIPSQ_IP" >> {out}.tmp; '
                                       f"mv {out}.tmp {out}\n")
    alert = next(a for a in bundled_alerts() if a.decision.action == "block")
    logged: list[str] = []
    h = _hooks({"block": [str(hook)]}, logged)
    h.block(Block(alert.decision.blocked_ip, alert.decided_ts, 3600.0, alert.decision.reason, "judge", alert, 2))
    h.block(Block("192.0.2.9", 1.0, 60.0, "restored", "store"))  # re-applied at start: no new decision
    _wait_for(out.exists)
    h.close()
    payload, env_line = out.read_text().splitlines()
    obj = json.loads(payload)
    assert obj["event"] == "block" and obj["ip"] == alert.decision.blocked_ip and obj["times"] == 2
    assert obj["expires"] == alert.decided_ts + 3600.0 and obj["by"] == "judge"
    assert obj["alert"]["description"] == alert.evidence.description
    assert env_line == f"block {alert.decision.blocked_ip}"
    assert h.counters()["on_block"]["runs"] == 1 and h.counters()["on_block"]["ok"] == 1
    assert logged == []


def test_alerts_reach_on_alert(tmp_path: Path) -> None:
    out = tmp_path / "alerts"
    hook = _script(tmp_path, "bell", f"cat >> {out}\n")
    h = _hooks({"alert": [str(hook)]}, [])
    alerts = bundled_alerts()[:3]
    for a in alerts:
        h.alert(a)
    _wait_for(lambda: h.counters()["on_alert"]["ok"] == 3)
    h.close()
    got = [json.loads(x) for x in out.read_text().splitlines()]
    assert [g["event"] for g in got] == ["alert"] * 3
    assert [g["description"] for g in got] == [a.evidence.description for a in alerts]


def test_a_hook_past_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    # the hook and a child of it both hang; both must die
    hook = _script(tmp_path, "hang", f"sleep 300 & echo $! > {pids}; echo $$ >> {pids}; sleep 300\n")
    t0 = time.monotonic()
    res = run_command([str(hook)], b"{}\n", timeout=3.0)  # (time for a busy machine's shell to write the pids)
    took = time.monotonic() - t0
    assert res.timed_out and res.returncode is None and not res.ok
    assert took < 30  # generous: it is the kill we test, not the speed
    for pid in map(int, pids.read_text().split()):
        _wait_for(lambda pid=pid: not _alive(pid), timeout=10)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] if Path(f"/proc/{pid}").exists() else "X"
    return state != "Z"  # a zombie is dead, only not yet reaped by its (init) parent


def test_failures_are_counted_and_logged_once_a_minute(tmp_path: Path) -> None:
    hook = _script(tmp_path, "fail", "echo 'no phone network' >&2; exit 3\n")
    logged: list[str] = []
    h = _hooks({"alert": [str(hook)]}, logged)
    for a in bundled_alerts()[:4]:
        h.alert(a)
    _wait_for(lambda: h.counters()["on_alert"]["failed"] == 4)
    h.close()
    assert len(logged) == 1 and "exit status 3: no phone network" in logged[0]
    assert h.counters()["on_alert"]["last_error"] == "exit status 3: no phone network"


def test_output_is_bounded(tmp_path: Path) -> None:
    res = run_command(["/bin/sh", "-c", "head -c 5000000 /dev/zero; head -c 100000 /dev/zero >&2"], b"", 20.0)
    assert res.ok and len(res.stdout) == 4096 and len(res.stderr) == 4096


def test_a_hook_that_reads_no_stdin_is_fine(tmp_path: Path) -> None:
    res = run_command(["/bin/true"], b"x" * 1_000_000, 20.0)  # exits without reading: EPIPE is its choice
    assert res.ok


def test_a_missing_program_is_a_counted_failure() -> None:
    res = run_command(["/nonexistent/hook"], b"{}", 5.0)
    assert not res.ok and "No such file" in res.error


def test_a_flood_is_rate_limited_and_never_stalls_the_caller(tmp_path: Path) -> None:
    out = tmp_path / "count"
    hook = _script(tmp_path, "slow", f"sleep 0.2; echo x >> {out}\n")  # slower than the flood by far
    h = _hooks({"alert": [str(hook)]}, [], per_minute=10, queue=4)
    a = bundled_alerts()[0]
    longest = 0.0
    for _ in range(5000):
        t0 = time.perf_counter()
        h.alert(a)
        longest = max(longest, time.perf_counter() - t0)
    c = h.counters()
    h.close()
    # a burst of 10 at most passes the bucket; of those, the queue holds 4 while one runs
    assert c["on_alert"]["rate_limited"] >= 4990
    assert c["dropped_queue_full"] + c["on_alert"]["runs"] + c["waiting"] <= 10
    assert len(out.read_text().splitlines()) <= 10
    print(f"longest alert() call during a flood of 5000: {longest * 1e3:.3f} ms")


def test_token_bucket() -> None:
    b = TokenBucket(3, 1.0, now=0.0)
    assert [b.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert b.take(0.5) is False and b.take(1.01) is True and b.take(1.02) is False
    assert [b.take(100.0) for _ in range(4)] == [True, True, True, False]  # never more than the burst


def _cfg(**values: object) -> Config:
    return Config(all_options(), {k.replace("__", "."): v for k, v in values.items()}, "slipsq.toml")


def test_config_checks_commands_and_limits(tmp_path: Path) -> None:
    assert command_line("") and command_line("/bin/echo 'a b'") and not command_line("/bin/echo 'unbalanced")
    with pytest.raises(ConfigError, match=r"hooks\.on_block.*balanced quotes"):
        _cfg(hooks__on_block="/bin/echo 'oops")
    with pytest.raises(ConfigError, match=r"hooks\.timeout"):
        _cfg(hooks__timeout=0)
    with pytest.raises(ConfigError, match=r"hooks\.max_per_minute"):
        _cfg(hooks__max_per_minute=0)
    assert from_config(_cfg(), print) is None
    with pytest.raises(ConfigError, match=r"'hooks\.on_alert'.*not an executable file"):
        from_config(_cfg(hooks__on_alert=str(tmp_path / "missing")), print)
    plain = tmp_path / "plain"
    plain.write_text("#!/bin/sh\n")  # not executable
    with pytest.raises(ConfigError, match="not an executable file"):
        from_config(_cfg(hooks__on_block=str(plain)), print)
    h = from_config(_cfg(hooks__on_block="true --flag", hooks__timeout="2m"), print)  # found on PATH
    assert h is not None and h.commands["block"][1:] == ["--flag"] and h.timeout == 120.0
    h.close()


def test_a_hooks_last_words_are_printed_escaped(tmp_path: Path) -> None:
    """A hook's stderr may quote what it was given (a notifier failing on a description that holds
    a DNS name's ESC bytes): its last line goes to the daemon's log and to `slipsq status` escaped."""
    hook = _script(tmp_path, "fail", "printf 'cannot send \\033[2J\\033]0;owned\\007 to the phone\\n' >&2; exit 1\n")
    logged: list[str] = []
    h = _hooks({"alert": [str(hook)]}, logged)
    h.alert(bundled_alerts()[0])
    _wait_for(lambda: h.counters()["on_alert"]["failed"] == 1)
    h.close()
    last = h.counters()["on_alert"]["last_error"]
    assert last == "exit status 1: cannot send \\x1b[2J\\x1b]0;owned\\x07 to the phone"
    assert logged and all(line.isprintable() for line in logged)
