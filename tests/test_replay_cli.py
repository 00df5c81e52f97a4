"""`slipsq replay` end to end, as a user runs it: a real process, real files, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
DEMO = DATA / "beacon-https.pcap"


def slipsq(*args: str, stdin: bytes | None = None, env: dict[str, str] | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    e = dict(os.environ, **(env or {}))
    e.pop("SLIPSQ_MODELS", None)
    return subprocess.run([sys.executable, "-m", "slipsq", *args], input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=e)


def one_clear_line(p: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("slipsq: "), p.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


def alerts_and_summary(stdout: str) -> tuple[list[dict], dict]:
    objs = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    assert "summary" in objs[-1]
    return objs[:-1], objs[-1]["summary"]


# --- bad input: one line, non-zero exit ---------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    one_clear_line(slipsq("replay", str(tmp_path / "nope.pcap")), 2, "nope.pcap", "no such file")


def test_truncated_pcap(tmp_path: Path) -> None:
    f = tmp_path / "cut.pcap"
    f.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)[:10])
    one_clear_line(slipsq("replay", str(f)), 2, "cut.pcap")


def test_capture_cut_short_is_analysed_then_exits_non_zero(tmp_path: Path) -> None:
    # a capture whose writer died mid-record (tcpdump killed, disk full): what is whole is analysed
    # and reported as usual, then one line says the input is damaged, and the exit status says so
    data = DEMO.read_bytes()
    f = tmp_path / "cut.pcap"
    f.write_bytes(data[:-7])
    whole = slipsq("replay", "--json", str(DEMO))
    cut = slipsq("replay", "--json", str(f))
    assert whole.returncode == 0 and whole.stderr == ""
    alerts, summary = alerts_and_summary(cut.stdout)
    full_alerts, full_summary = alerts_and_summary(whole.stdout)
    assert summary["packets"] == full_summary["packets"] - 1 and summary["inputs"][str(f)]["truncated"] == 1
    assert summary["blocked_ips"] == full_summary["blocked_ips"] == ["203.0.113.66"]
    assert [a["description"] for a in alerts] == [a["description"] for a in full_alerts]
    one_clear_line(cut, 2, "cut.pcap", "damaged capture", f"the {summary['packets']} whole packets")


CTRL_C_IN_IMPORTS = """
import builtins, sys
real = builtins.__import__
def interrupted(name, *args, **kwargs):
    if name == "click":  # as if Ctrl-C came while the command was still importing its modules
        raise KeyboardInterrupt
    return real(name, *args, **kwargs)
builtins.__import__ = interrupted
sys.argv = ["slipsq", "replay", "x.pcap"]
from slipsq.__main__ import run
run()
"""


def test_a_ctrl_c_while_starting_is_one_line_and_status_130() -> None:
    r = subprocess.run([sys.executable, "-c", CTRL_C_IN_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stderr) == (130, "slipsq: interrupted\n")


CTRL_C_IN_CLICK = """
import sys, click
where = sys.argv[1]
def interrupted(*args, **kwargs):
    raise KeyboardInterrupt
if where == "parse":  # as if Ctrl-C came while click parsed the arguments
    click.Group.parse_args = interrupted
else:  # ... or while a command that does not catch it ran
    import slipsq.cli
    slipsq.cli.main.commands["config"].commands["show"].callback = interrupted
sys.argv = ["slipsq", "config", "show"]
from slipsq.__main__ import run
run()
"""


@pytest.mark.parametrize("where", ["parse", "invoke"])
def test_a_ctrl_c_inside_click_is_one_line_and_status_130(where: str) -> None:
    r = subprocess.run([sys.executable, "-c", CTRL_C_IN_CLICK, where], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stderr) == (130, "slipsq: interrupted\n")


def test_not_a_capture_nor_flows(tmp_path: Path) -> None:
    f = tmp_path / "random.bin"
    f.write_bytes(os.urandom(4096))
    one_clear_line(slipsq("replay", str(f)), 2, "random.bin")


def test_forced_pcap_format_on_a_text_file(tmp_path: Path) -> None:
    f = tmp_path / "x.txt"
    f.write_text("hello\n")
    one_clear_line(slipsq("replay", "--format", "pcap", str(f)), 2, "x.txt", "not a pcap")


def test_unusable_models_folder(tmp_path: Path) -> None:
    one_clear_line(slipsq("replay", "--models", str(tmp_path / "none"), str(DEMO)), 4, "none")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.json").write_text("{not json")
    one_clear_line(slipsq("replay", "--models", str(broken), str(DEMO)), 4, "bad.json")


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    c = tmp_path / "c.toml"
    c.write_text("[judge]\nthreshold = -1\n")
    one_clear_line(slipsq("replay", "--config", str(c), str(DEMO)), 3, "judge.threshold")


def test_output_folder_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    one_clear_line(slipsq("replay", str(DEMO), "-o", str(f)), 2, "afile")


# --- the demo capture: detection, verdicts, determinism, outputs -------------------------------

@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    return slipsq("replay", "--json", str(DEMO))


def test_demo_beacon_is_blocked_and_later_packets_dropped(demo_run: subprocess.CompletedProcess[str]) -> None:
    assert demo_run.returncode == 0, demo_run.stderr
    alerts, summary = alerts_and_summary(demo_run.stdout)
    assert summary["blocked_ips"] == ["203.0.113.66"]
    assert summary["dropped_packets"] > 0
    blocks = [a for a in alerts if a["action"] == "block"]
    assert len(blocks) == 1 and blocks[0]["blocked_ip"] == "203.0.113.66"
    for a in alerts:
        for field in ("ts", "detector", "src_ip", "dst_ip", "dst_port", "proto", "description",
                      "threat_level", "confidence", "label", "action", "blocked_ip"):
            assert field in a
    # nothing but the C&C server is accused: the home network's normal traffic is not blocked
    assert {a["offender"] for a in alerts if a["action"] == "block"} == {"203.0.113.66"}


def test_replay_is_deterministic(demo_run: subprocess.CompletedProcess[str]) -> None:
    again = slipsq("replay", "--json", str(DEMO))
    a1, s1 = alerts_and_summary(demo_run.stdout)
    a2, s2 = alerts_and_summary(again.stdout)
    assert a1 == a2
    for k in ("packets", "flows", "alerts", "blocked_ips", "dropped_packets"):
        assert s1[k] == s2[k]


def test_outputs_folder(tmp_path: Path, demo_run: subprocess.CompletedProcess[str]) -> None:
    p = slipsq("replay", str(DEMO), "-o", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    out = tmp_path / "out"
    jsonl = [json.loads(x) for x in (out / "alerts.jsonl").read_text().splitlines()]
    alerts, summary = alerts_and_summary(demo_run.stdout)
    assert jsonl == alerts
    assert len((out / "alerts.log").read_text().splitlines()) >= len(alerts)
    rows = (out / "flows.binetflow").read_text().splitlines()
    assert rows[0].startswith("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State")
    assert len(rows) - 1 == summary["flows"]
    assert "BLOCKED 203.0.113.66" in p.stdout and "summary:" in p.stdout


def test_tuples_show_the_beacon_letters() -> None:
    p = slipsq("replay", "--tuples", "--json", str(DEMO))
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()[:-1]]
    beacon = [r for r in rows if r["src_ip"] == "192.168.1.66" and r["dst_ip"] == "203.0.113.66"]
    assert beacon and beacon[0]["dst_port"] == 443 and beacon[0]["proto"] == "tcp"
    # strongly periodic large/medium connections: 'h' with '.' symbols (letters.md §3)
    assert ".h.h.h.h" in beacon[0]["letters"]


@pytest.mark.parametrize("pure", ["0", "1"])
def test_unsupported_link_type(tmp_path: Path, pure: str) -> None:
    f = tmp_path / "tokenring.pcap"
    data = bytearray((DATA / "normal-home.pcap").read_bytes())
    data[20:24] = (6).to_bytes(4, "little")  # LINKTYPE_IEEE802_5
    f.write_bytes(bytes(data))
    one_clear_line(slipsq("replay", str(f), env={"SLIPSQ_PURE_PYTHON": pure}), 2, "unsupported link type 6")


def test_bad_flow_rows_are_counted_named_and_skipped(tmp_path: Path) -> None:
    f = tmp_path / "few.binetflow"
    f.write_text("StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,TotPkts,TotBytes,SrcBytes\n"
                 "2019/04/04 16:24:47.672448,1.0,tcp,10.8.0.69,56101,   ->,14.1.11.113,999,S0,3,300,100\n"
                 "2019/04/04 16:24:48.672448,oops,tcp,10.8.0.69,56102,   ->,14.1.11.113,998,S0,3,300,100\n")
    p = slipsq("replay", "--json", str(f))
    _, summary = alerts_and_summary(p.stdout)  # the results first: what was whole was analysed
    assert summary["flows"] == 1 and summary["inputs"][str(f)]["bad_rows"] == 1
    # then the damage: exit 2 (0 means every input was read whole), one line naming file and row
    one_clear_line(p, 2, "few.binetflow: damaged input", "1 malformed row", "few.binetflow:3")


def test_models_list_follows_the_configured_folder(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    shipped = sorted((ROOT / "models").glob("*.json"))[:2]
    for f in shipped:
        (folder / f.name).write_text(f.read_text())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[markov]\nmodels = "{folder}"\n')
    p = slipsq("--config", str(cfg), "models", "list")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"2 models in {folder}")


def test_the_replay_path_imports_what_only_some_runs_use_when_they_use_it() -> None:
    """statistics (with fractions, decimal, random: ~5 ms) serves beacon's size score, ctypes (~7 ms)
    the pipeline's question whether orphans are reaped here, after a rollback: neither is loaded by
    importing the command line, the engine, the detectors and the pipeline (every command's start)."""
    code = ("import sys\nimport slipsq.cli, slipsq.engine, slipsq.pipeline, slipsq.replay, slipsq.runmode\n"
            "print(sorted(m for m in ('statistics', 'ctypes') if m in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]", p.stdout


def test_compiled_replay_never_loads_the_reference_parser() -> None:
    """dpkt (the pure path's parser) costs a tenth of a second of every start: the compiled replay
    path (CLI, engine, reader, app decoders) must not import it, nor the pure twins that do."""
    from slipsq import twins

    if twins.compiled("slipsq._flowtable") is None:
        pytest.skip("the compiled modules are not built")
    code = ("import sys\nfrom slipsq.cli import main\n"
            "try:\n    main(['replay', sys.argv[1], '--json'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('dpkt', 'slipsq.decode', 'slipsq.flowtable') if m in sys.modules),"
            " file=sys.stderr)\n")
    p = subprocess.run([sys.executable, "-c", code, str(DEMO)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, env={k: v for k, v in os.environ.items() if k != "SLIPSQ_PURE_PYTHON"})
    assert p.returncode == 0, p.stderr
    assert '"summary"' in p.stdout  # the replay ran
    assert p.stderr.strip().splitlines()[-1] == "[]", p.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("args", [("replay", str(DEMO)), ("config", "show"), ("--help",), ("--version",),
                                  ("replay", "--help")])
def test_a_full_output_is_one_line_not_an_internal_error(args: tuple[str, ...]) -> None:
    """Found by review: `> /dev/full` was "internal error: OSError" (exit 70)."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "slipsq", *args], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=120)
    assert (r.returncode, r.stderr) == (1, "slipsq: stopped: No space left on device\n")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
@pytest.mark.parametrize("name", ["flows.binetflow", "alerts.jsonl", "activity.jsonl"])
def test_a_result_file_that_cannot_be_written_is_named(tmp_path: Path, name: str) -> None:
    """Found by review: a disk that filled under `-o DIR` stopped the replay with "stopped: No space
    left on device" and no path (exit 1): which file, on which disk? (/dev/full is that disk.)"""
    out = tmp_path / "out"
    out.mkdir()
    (out / name).symlink_to("/dev/full")
    r = subprocess.run([sys.executable, "-m", "slipsq", "replay", str(DEMO), "-o", str(out), "--force"], cwd=ROOT,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    assert (r.returncode, r.stderr) == (2, f"slipsq: cannot write {out / name}: No space left on device\n")


@pytest.mark.parametrize("processes", ["1", "2"])
def test_a_results_folder_is_whole_when_stdouts_reader_goes_away(tmp_path: Path, processes: str) -> None:
    """Found in round 21's list: `slipsq replay damaged.pcap -o DIR | head -1` stopped at the first
    write after head left: exit 0, no damage line, a folder with a part of the alerts and no
    summary.json. With a folder, a gone reader only loses what was for it: the folder is the same as
    a run's whose stdout stays, the damage is said and the status is 2."""
    data = DEMO.read_bytes()
    damaged = tmp_path / "damaged.pcap"
    damaged.write_bytes(data[:len(data) // 2 + 37])  # ends inside a record
    whole, piped = tmp_path / "whole", tmp_path / "piped"
    args = [sys.executable, "-m", "slipsq", "replay", str(damaged), "--processes", processes]
    ref = subprocess.run([*args, "-o", str(whole)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, timeout=120)
    assert ref.returncode == 2 and "damaged capture" in ref.stderr
    with subprocess.Popen([*args, "-o", str(piped)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as p:
        assert p.stdout is not None and p.stderr is not None
        assert "[ALERT]" in p.stdout.readline()
        p.stdout.close()  # as head -1 does
        err = p.stderr.read()
        assert p.wait(timeout=120) == 2
    assert err == ref.stderr
    names = sorted(f.name for f in whole.iterdir())
    assert sorted(f.name for f in piped.iterdir()) == names and "summary.json" in names
    for name in ("alerts.jsonl", "flows.binetflow", "activity.jsonl"):
        assert (piped / name).read_bytes() == (whole / name).read_bytes(), name
    drop = ("elapsed_s", "packets_per_s", "flows_per_s")
    summaries = [{k: v for k, v in json.loads((d / "summary.json").read_text())["summary"].items() if k not in drop}
                 for d in (whole, piped)]
    assert summaries[0] == summaries[1]


def test_a_closed_output_is_said() -> None:
    r = subprocess.run([sys.executable, "-m", "slipsq", "replay", str(DEMO)], cwd=ROOT, stderr=subprocess.PIPE,
                       text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert (r.returncode, r.stderr) == (1, "slipsq: standard output is closed (redirect it, e.g. > /dev/null)\n")


@pytest.mark.parametrize("how", [{}, {"SLIPSQ_PURE_PYTHON": "1"}, {"processes": "1"}])
def test_a_record_dated_in_the_future_is_damage_not_the_end_of_every_block(tmp_path: Path,
                                                                           how: dict[str, str]) -> None:
    """Found by review: one record whose seconds read 0xFFFFFFFF (2106) moved replay's time past every
    block's end ("[UNBLOCK] ... block expired"), exit 0. It is a corrupt record now: skipped, counted."""
    data = bytearray(DEMO.read_bytes())
    pos, n = 24, 0
    while n < 200:  # the 201st record, mid-capture
        pos += 16 + struct.unpack_from("<I", data, pos + 8)[0]
        n += 1
    struct.pack_into("<I", data, pos, 0xFFFFFFFF)
    f = tmp_path / "future.pcap"
    f.write_bytes(bytes(data))
    env = {k: v for k, v in how.items() if k != "processes"}
    extra = ("--processes", how["processes"]) if "processes" in how else ()
    whole = slipsq("replay", "--json", *extra, str(DEMO), env=env)
    hit = slipsq("replay", "--json", *extra, str(f), env=env)
    _, summary = alerts_and_summary(hit.stdout)
    _, full = alerts_and_summary(whole.stdout)
    assert summary["blocked_ips"] == full["blocked_ips"] == ["203.0.113.66"]
    assert summary["packets"] == full["packets"] - 1 and summary["inputs"][str(f)]["corrupt"] == 1
    assert hit.returncode == 2 and "1 corrupt record (impossible lengths or dates)" in hit.stderr
    assert "UNBLOCK" not in hit.stdout


def test_a_flow_dated_in_the_future_is_a_bad_row(tmp_path: Path) -> None:
    """Found by review: one binetflow row dated 2099 moved replay's time past the block's end: 0 blocks."""
    out = tmp_path / "o"
    assert slipsq("replay", str(DEMO), "-o", str(out)).returncode == 0
    lines = (out / "flows.binetflow").read_text().splitlines()
    first = lines[1].split(",")
    future = ",".join(["2099/06/01 00:00:00.000000", *first[1:]])
    f = tmp_path / "future.binetflow"
    f.write_text("\n".join([lines[0], *lines[1:40], future, *lines[40:]]) + "\n")
    whole = slipsq("replay", "--json", str(out / "flows.binetflow"))
    hit = slipsq("replay", "--json", str(f))
    assert alerts_and_summary(hit.stdout)[1]["blocked_ips"] == alerts_and_summary(whole.stdout)[1]["blocked_ips"]
    assert alerts_and_summary(whole.stdout)[1]["blocked_ips"] == ["203.0.113.66"]
    assert hit.returncode == 2 and "1 malformed row skipped" in hit.stderr and "(in the future)" in hit.stderr


@pytest.mark.parametrize("how", [{}, {"SLIPSQ_PURE_PYTHON": "1"}])
def test_a_record_dated_before_1970_is_damage(tmp_path: Path, how: dict[str, str]) -> None:
    """Found by review: a pcapng interface with a negative if_tsoffset put its packets before 1970;
    replay made up alerts from them (a "reconnection storm in 0s"), exit 0, and with -o stopped on
    "Value too large". They are corrupt records now, as records dated in the future are."""
    from tests.helpers import udp, write_pcapng

    good = [(0, 1_700_000_000.0 + i, udp("192.168.1.5", 5000 + i, "203.0.113.9", 53)) for i in range(5)]
    f = write_pcapng(tmp_path / "neg.pcapng", [(101, 6)], good, tsoffset=-2_000_000_000)
    hit = slipsq("replay", "--json", str(f), "-o", str(tmp_path / "o"), env=how)
    alerts, summary = alerts_and_summary(hit.stdout)
    assert hit.returncode == 2 and "5 corrupt records" in hit.stderr and "Traceback" not in hit.stderr, hit.stderr
    assert summary["packets"] == 0 and summary["inputs"][str(f)]["corrupt"] == 5 and alerts == []


def test_a_flow_dated_before_1970_is_a_bad_row(tmp_path: Path) -> None:
    """Found by review: a Suricata flow whose start reads year 1 stopped replay -o with "internal
    error: year 0 is out of range" (exit 70)."""
    row = {"timestamp": "2024-06-01T12:00:00.000000+0000", "event_type": "flow", "src_ip": "192.168.1.5",
           "src_port": 5000, "dest_ip": "203.0.113.9", "dest_port": 443, "proto": "TCP",
           "flow": {"pkts_toserver": 5, "pkts_toclient": 5, "bytes_toserver": 500, "bytes_toclient": 1500,
                    "start": "0001-01-01T00:00:00+14:00", "end": "0001-01-01T00:00:01+14:00", "state": "closed"}}
    later = {**row, "flow": {**row["flow"], "start": "2024-06-01T12:00:00+00:00",  # type: ignore[dict-item]
                             "end": "2024-06-01T12:00:01+00:00"}}
    f = tmp_path / "eve.json"
    f.write_text(json.dumps(row) + "\n" + json.dumps(later) + "\n")
    hit = slipsq("replay", "--json", str(f), "-o", str(tmp_path / "o"), "--alert-format", "eve")
    assert hit.returncode == 2 and "1 malformed row skipped" in hit.stderr and "(before 1970)" in hit.stderr, hit.stderr
    assert "Traceback" not in hit.stderr and '"flows": 1,' in hit.stderr  # (the summary: stdout is EVE's)


@pytest.mark.parametrize("sig, code, said", [(2, 130, "interrupted"), (15, 143, "terminated")])
def test_a_replay_stopped_by_a_signal_keeps_what_it_analysed(tmp_path: Path, sig: int, code: int, said: str) -> None:
    """Found by review: SIGTERM (`timeout`, a service manager) killed a replay silently, with its
    flows file empty and no summary. A stream that never ends is stopped while it waits for more."""
    import signal
    import time

    out = tmp_path / "o"
    with subprocess.Popen([sys.executable, "-m", "slipsq", "replay", "-", "-o", str(out)], cwd=ROOT,
                          stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        assert p.stdin is not None and p.stderr is not None
        p.stdin.write(DEMO.read_bytes())  # the whole capture, and the pipe left open
        p.stdin.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (out / "activity.jsonl").is_file():
            time.sleep(0.05)
        time.sleep(1.0)  # well into the capture's packets: all of them are in the pipe
        p.send_signal(signal.Signals(sig))
        assert p.wait(timeout=60) == code
        assert p.stderr.read().decode().strip().splitlines()[-1] == f"slipsq: {said}"
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["interrupted"] is True and summary["inputs"] == {"-": {"interrupted": True}}
    assert summary["alerts"] > 0  # the demo's beacon was analysed before the signal


def test_a_named_pipe_a_terminal_and_a_file_given_twice_are_said(tmp_path: Path) -> None:
    """Found by review: a FIFO gave Python's "not seekable", a terminal on standard input waited in
    silence, the same file twice got advice to mergecap it with itself, a flow file advice to mergecap."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    one_clear_line(slipsq("replay", str(fifo)), 2, "is a named pipe", f"slipsq replay - < {fifo}")
    master, slave = os.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "slipsq", "replay", "-"], cwd=ROOT, stdin=slave,
                           capture_output=True, text=True, timeout=60)
    finally:
        os.close(master)
        os.close(slave)
    one_clear_line(r, 2, "standard input is a terminal")
    twice = slipsq("replay", str(DEMO), str(DEMO))
    assert twice.returncode == 2 and f"slipsq: {DEMO}: not read again: it was given twice" in twice.stderr
    out = tmp_path / "o"
    assert slipsq("replay", str(DEMO), "-o", str(out)).returncode == 0
    flows = out / "flows.binetflow"
    later = slipsq("replay", str(DATA / "normal-home.pcap"), str(flows))
    assert later.returncode == 2 and "merge them into one input first, or pass --separate" in later.stderr


def test_force_without_a_folder_is_refused() -> None:
    one_clear_line(slipsq("replay", "--force", str(DEMO)), 2, "--force needs -o DIR")


@pytest.mark.parametrize("args", [("replay", str(DEMO), "-o", ""), ("replay", str(DEMO), "--config", ""),
                                  ("--config", "", "replay", str(DEMO)), ("explain", "203.0.113.66", "--from", ""),
                                  ("report", "--from", ""), ("status", "--state-dir", ""),
                                  ("replay", str(DEMO), "--models", "")])
def test_an_empty_path_is_a_usage_error_not_a_missing_option(args: tuple[str, ...]) -> None:
    """Found by review: `-o "$OUT"` with OUT unset wrote no results and exited 0; `--config ""` ran on
    the defaults; `explain --from ""` answered from the gateway's block store."""
    p = slipsq(*args)
    assert p.returncode == 2 and "is empty (an unset shell variable?)" in p.stderr, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and p.stdout == ""


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_debug_still_shows_the_traceback_of_a_full_output() -> None:
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "slipsq", "--debug", "--help"], cwd=ROOT, stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "No space left on device" in r.stderr
