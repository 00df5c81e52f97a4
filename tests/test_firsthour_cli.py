"""What tripped a new user's first hour (issue 16), as CLI runs on files made here: one damage rule for
every input, captures from pipes and compressed files, several inputs on one timeline, alerts in
decision order that an analyst can join, and one option surface with every exit code documented."""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import communityid
import pytest
import zstandard

from slipsq.sources.pcap import PureCapture
from tests.helpers import write_pcap
from tests.test_replay_cli import DATA, DEMO, ROOT, alerts_and_summary, one_clear_line, slipsq

HEADER = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,TotPkts,TotBytes,SrcBytes\n"
ROW = "2019/04/04 16:24:4{i}.672448,1.0,tcp,10.8.0.69,5610{i},   ->,14.1.11.113,99{i},S0,3,300,100\n"


def slipsq_bytes(*args: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("SLIPSQ_MODELS", None)
    p = subprocess.run([sys.executable, "-m", "slipsq", *args], input=stdin, capture_output=True, timeout=120,
                       cwd=ROOT, env=env)
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())


def shifted(src: Path, dst: Path, seconds: float) -> Path:
    """`src` with every packet `seconds` later."""
    reader = PureCapture(src.read_bytes())
    records = [(ts + seconds, frame) for ts, frame, _ in reader]
    return write_pcap(dst, records, reader.linktypes[0])


def results(p: subprocess.CompletedProcess[str]) -> tuple[list[dict], dict]:
    alerts, summary = alerts_and_summary(p.stdout)
    return alerts, {k: v for k, v in summary.items() if k not in ("elapsed_s", "packets_per_s", "flows_per_s")}


# --- 1. one damage rule: the results, then exit 2 and one line naming file and loss ----------------

def test_binetflow_cut_mid_row_is_damage(tmp_path: Path) -> None:
    f = tmp_path / "cut.binetflow"
    f.write_text(HEADER + ROW.format(i=1) + ROW.format(i=2)[:-9])  # the writer died inside the last row
    p = slipsq("replay", "--json", str(f))
    _, summary = alerts_and_summary(p.stdout)
    assert summary["flows"] >= 1  # what was whole was analysed
    one_clear_line(p, 2, "cut.binetflow: damaged input", "last line is cut short")


def test_binetflow_whole_is_exit_0(tmp_path: Path) -> None:
    f = tmp_path / "whole.binetflow"
    f.write_text(HEADER + ROW.format(i=1) + ROW.format(i=2))
    p = slipsq("replay", str(f))
    assert p.returncode == 0 and p.stderr == "", p.stderr


def test_eve_json_bad_line_is_damage(tmp_path: Path) -> None:
    f = tmp_path / "eve.json"
    flow = {"timestamp": "2024-01-01T00:00:00.000000+0000", "event_type": "flow", "src_ip": "10.0.0.1",
            "src_port": 1000, "dest_ip": "10.0.0.2", "dest_port": 80, "proto": "TCP",
            "flow": {"start": "2024-01-01T00:00:00.000000+0000", "end": "2024-01-01T00:00:01.000000+0000",
                     "pkts_toserver": 1, "pkts_toclient": 1, "bytes_toserver": 60, "bytes_toclient": 60,
                     "state": "closed"}}
    f.write_text(json.dumps(flow) + "\n" + '{"event_type": "flow", \n' + json.dumps(flow) + "\n")
    p = slipsq("replay", "--json", str(f))
    _, summary = alerts_and_summary(p.stdout)
    assert summary["flows"] == 2 and summary["inputs"][str(f)]["bad_rows"] == 1
    one_clear_line(p, 2, "eve.json: damaged input", "1 malformed row", "eve.json:2")


@pytest.mark.skipif(not (shutil.which("nfdump") and shutil.which("nfpcapd")), reason="nfdump/nfpcapd absent")
def test_nfdump_file_cut_short_is_damage_not_an_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "nf"
    out.mkdir()
    subprocess.run(["nfpcapd", "-r", str(DATA / "portscan.pcap"), "-w", str(out)], check=True,
                   capture_output=True, timeout=60)
    (nffile,) = [p for p in out.iterdir() if p.name.startswith("nfcapd.")]
    cut = tmp_path / "cut.nfcapd"
    data = nffile.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    assert slipsq("replay", str(nffile)).returncode == 0
    p = slipsq("replay", "--json", str(cut))
    alerts_and_summary(p.stdout)
    one_clear_line(p, 2, "cut.nfcapd: damaged input", "nfdump reported")


# --- 2. captures from pipes and compressed files ---------------------------------------------------

@pytest.fixture(scope="module")
def demo_results() -> tuple[list[dict], dict]:
    p = slipsq("replay", "--json", str(DEMO))
    assert p.returncode == 0, p.stderr
    return results(p)


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".xz", lzma.compress),
                                              (".zst", zstandard.compress)])
def test_compressed_capture_gives_the_plain_files_results(tmp_path: Path, suffix: str,
                                                          compress: Callable[[bytes], bytes],
                                                          demo_results: tuple[list[dict], dict]) -> None:
    f = tmp_path / f"demo.pcap{suffix}"
    f.write_bytes(compress(DEMO.read_bytes()))
    p = slipsq("replay", "--json", str(f))
    assert p.returncode == 0, p.stderr
    alerts, summary = results(p)
    assert alerts == demo_results[0]
    assert summary["blocked_ips"] == demo_results[1]["blocked_ips"] == ["203.0.113.66"]
    assert summary["packets"] == demo_results[1]["packets"]


@pytest.mark.parametrize("compress", [lambda b: b, gzip.compress], ids=["pcap", "pcap.gz"])
def test_capture_on_standard_input(compress: Callable[[bytes], bytes], demo_results: tuple[list[dict], dict]) -> None:
    p = slipsq_bytes("replay", "--json", "-", stdin=compress(DEMO.read_bytes()))
    assert p.returncode == 0, p.stderr
    alerts, summary = results(p)
    assert alerts == demo_results[0] and summary["packets"] == demo_results[1]["packets"]


def test_pcapng_on_standard_input(tmp_path: Path) -> None:
    f = tmp_path / "b.pcapng"
    ng = subprocess.run([sys.executable, str(ROOT / "tools" / "gencapture.py"), "beacon", "--out", str(f),
                         "--format", "pcapng"], capture_output=True, timeout=120, cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert ng.returncode == 0 and f.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a", ng.stderr
    whole = slipsq("replay", "--json", str(f))
    p = slipsq_bytes("replay", "--json", "-", stdin=f.read_bytes())
    assert p.returncode == 0, p.stderr
    _, summary = results(p)
    assert summary["packets"] > 0 and summary["inputs"]["-"]["format"] == "pcapng"
    assert results(whole)[0] == results(p)[0]  # the stream reader and the compiled one agree


def test_compressed_capture_cut_short_is_damage(tmp_path: Path) -> None:
    # frames of 64 KiB (as pzstd or a streaming writer makes them): a small single frame cut short
    # yields nothing at all, even to the zstd program, as its whole window is one block of output
    raw = DEMO.read_bytes()
    data = b"".join(zstandard.compress(raw[i:i + 65536]) for i in range(0, len(raw), 65536))
    f = tmp_path / "cut.pcap.zst"
    f.write_bytes(data[: len(data) // 2])
    p = slipsq("replay", "--json", str(f))
    _, summary = alerts_and_summary(p.stdout)
    assert 0 < summary["packets"]
    one_clear_line(p, 2, "cut.pcap.zst: damaged input", "zstd")


def test_random_binary_gets_a_message_without_its_bytes(tmp_path: Path) -> None:
    f = tmp_path / "random.bin"
    data = bytes(range(256)) * 16
    f.write_bytes(data)
    p = slipsq("replay", str(f))
    one_clear_line(p, 2, "random.bin", "binary data")
    assert "\\x" not in p.stderr and data[:8].hex() not in p.stderr


# --- 3. several inputs, one timeline ---------------------------------------------------------------

def test_inputs_are_read_in_time_order_whatever_the_command_line_order(tmp_path: Path) -> None:
    newer = shifted(DATA / "portscan.pcap", tmp_path / "a.pcap", 86400 * 400)  # a is newer than b
    older = DEMO
    ab = slipsq("replay", "--json", str(newer), str(older))
    ba = slipsq("replay", "--json", str(older), str(newer))
    assert ab.returncode == ba.returncode == 0, (ab.stderr, ba.stderr)
    (alerts_ab, s_ab), (alerts_ba, s_ba) = results(ab), results(ba)
    assert alerts_ab == alerts_ba and len(alerts_ab) > 0
    assert {k: v for k, v in s_ab.items() if k != "inputs"} == {k: v for k, v in s_ba.items() if k != "inputs"}
    # and each alert is stamped with its own input's time, not the other's
    assert any(a["src_ip"] == "192.168.1.66" for a in alerts_ab)
    times = [a["decided_ts"] for a in alerts_ab]
    assert times == sorted(times)


def test_overlapping_inputs_are_refused_by_name_unless_separate(tmp_path: Path) -> None:
    later = shifted(DEMO, tmp_path / "later.pcap", 5.0)
    p = slipsq("replay", "--json", str(DEMO), str(later))
    _, summary = alerts_and_summary(p.stdout)
    one_clear_line(p, 2, "later.pcap: not read", "beacon-https.pcap", "--separate")
    assert summary["inputs"][str(later)] == {"refused": p.stderr.strip()[len("slipsq: "):]}
    sep = slipsq("replay", "--separate", str(DEMO), str(later))
    assert sep.returncode == 0, sep.stderr
    assert sep.stdout.count("summary:") == 2 and sep.stdout.count("BLOCKED 203.0.113.66") == 2


def test_separate_runs_go_on_past_an_input_that_cannot_be_read(tmp_path: Path) -> None:
    """Found by review: `--separate empty.pcap good.pcap` stopped at the first input's error and never
    read (nor mentioned) the second. Each input has its run; the exit status is the worst."""
    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    sep = slipsq("replay", "--separate", str(empty), str(tmp_path / "missing.pcap"), str(DEMO))
    assert sep.returncode == 2 and "Traceback" not in sep.stderr, sep.stderr
    assert "empty.pcap" in sep.stderr and "missing.pcap" in sep.stderr
    assert sep.stdout.count("BLOCKED 203.0.113.66") == 1 and f"== {DEMO} ==" in sep.stdout


def test_standard_input_with_other_inputs_is_refused() -> None:
    p = slipsq_bytes("replay", str(DEMO), "-", stdin=DEMO.read_bytes())
    one_clear_line(p, 2, "standard input", "--separate")


# --- 4. alerts in decision order, joinable ---------------------------------------------------------

def test_text_alerts_are_in_decision_order_with_the_traffic_time(tmp_path: Path) -> None:
    p = slipsq("replay", str(DEMO))
    lines = [ln for ln in p.stdout.splitlines() if " [ALERT] " in ln or " [BLOCK] " in ln]
    stamps = [ln.split(" ", 1)[0] for ln in lines]
    assert len(lines) >= 2 and stamps == sorted(stamps)
    assert all("traffic at 20" in ln for ln in lines)


def test_alert_json_carries_ports_community_id_and_flow_key(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = slipsq("replay", "--json", str(DEMO), "-o", str(out))
    assert p.returncode == 0, p.stderr
    alerts, _ = alerts_and_summary(p.stdout)
    rows = (out / "flows.binetflow").read_text().splitlines()
    keys = {",".join(r.split(",")[i] for i in (0, 2, 3, 4, 6, 7)) for r in rows[1:]}
    calc = communityid.CommunityID()
    for a in alerts:
        assert a["decided_ts"] >= a["ts"] and isinstance(a["src_port"], int)
        _, proto, saddr, sport, daddr, dport = a["flow_key"].split(",")
        assert a["flow_key"] in keys  # joins with a row of flows.binetflow
        want = calc.calc(communityid.FlowTuple(6, saddr, daddr, int(sport), int(dport)))
        assert proto == "tcp" and a["community_id"] == want


def test_output_folder_refuses_earlier_results_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = slipsq("replay", str(DEMO), "-o", str(out))
    assert first.returncode == 0, first.stderr
    summary = json.loads((out / "summary.json").read_text())["summary"]
    assert summary["blocked_ips"] == ["203.0.113.66"]
    before = (out / "alerts.jsonl").read_text()
    again = slipsq("replay", str(DEMO), "-o", str(out))
    one_clear_line(again, 2, "already holds results", "alerts.jsonl", "--force")
    assert (out / "alerts.jsonl").read_text() == before
    forced = slipsq("replay", str(DEMO), "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr


# --- 5. one option surface -------------------------------------------------------------------------

def test_inline_flags_with_a_subcommand_or_without_queue_are_refused() -> None:
    one_clear_line(slipsq("--queue", "0", "replay", str(DEMO)), 2, "--queue", "replay")
    one_clear_line(slipsq("--queue-maxlen", "10"), 2, "--queue-maxlen", "needs --queue")
    one_clear_line(slipsq("--install-rules"), 2, "--install-rules", "needs --queue")


def test_models_list_takes_config_locally_too(tmp_path: Path) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for f in sorted((ROOT / "models").glob("*.json"))[:3]:
        (folder / f.name).write_text(f.read_text())
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[markov]\nmodels = "{folder}"\n')
    p = slipsq("models", "list", "--config", str(cfg))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"3 models in {folder}")


def test_durations_in_config_and_config_keys_for_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[judge]\nblock_duration = "2h"\n[output]\njson = true\n[queue]\nmaxlen = 256\n')
    shown = slipsq("config", "show", "--config", str(cfg))
    assert shown.returncode == 0, shown.stderr
    assert "block_duration = 7200.0" in shown.stdout and "maxlen = 256" in shown.stdout
    p = slipsq("replay", "--config", str(cfg), str(DEMO))  # output.json: JSON in replay too
    alerts, _ = alerts_and_summary(p.stdout)
    assert alerts[-1]["block_seconds"] == 7200.0
    text = slipsq("replay", "--config", str(cfg), "--no-json", str(DEMO))  # the flag overrides the key
    assert "summary:" in text.stdout


def test_bad_duration_and_utf16_config_are_configuration_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[judge]\nwindow = "an hour"\n')
    one_clear_line(slipsq("replay", "--config", str(bad), str(DEMO)), 3, "judge.window", "not a duration")
    u16 = tmp_path / "u16.toml"
    u16.write_bytes("[judge]\nblock = false\n".encode("utf-16"))
    one_clear_line(slipsq("replay", "--config", str(u16), str(DEMO)), 3, "u16.toml", "UTF-16")


def test_block_for_zero_is_refused_with_the_way_to_say_forever(tmp_path: Path) -> None:
    p = slipsq("block", "203.0.113.9", "--for", "0", "--state-dir", str(tmp_path))
    one_clear_line(p, 2, "no time", "forever")


def test_every_exit_code_is_in_help_and_readme() -> None:
    from slipsq.errors import EXIT_CODES

    helptext = slipsq("--help").stdout
    readme = (ROOT / "README.md").read_text()
    for code, _ in EXIT_CODES:
        assert f"  {code} " in helptext
        assert f"| {code} |" in readme
