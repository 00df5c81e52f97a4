"""tools/train_model.py: a model learned from a generated flow file or capture matches that behaviour."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import ACK, FIN, PSH, SYN, eth, tcp, write_pcap
from letters_synth import flows_for

from slipsq.allow import AllowList
from slipsq.config import Config
from slipsq.detect.base import Context
from slipsq.detect.stratosphere.detector import StratosphereDetector
from slipsq.detect.stratosphere.markov import load_models
from slipsq.flow import Flow
from slipsq.output.binetflow import HEADER, format_flow
from slipsq.runmode import all_options
from tools.train_model import main

BEHAVIOUR = "99+i+i+I+i+i+i+I+i+i+i+i+I+i+"  # a large, long download every ~2 minutes


def write_binetflow(path: Path, flows: list[Flow]) -> Path:
    rows = [format_flow(f) + "\n" for f in sorted(flows, key=lambda f: f.start)]
    path.write_text(HEADER + "\n" + "".join(rows))
    return path


def test_train_from_a_binetflow_then_match_the_same_behaviour(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    cnc = flows_for(BEHAVIOUR, client="10.0.0.7", server="192.0.2.66", port=8443)
    noise = flows_for("55,e,E,v,V.e,", client="10.0.0.7", server="192.0.2.80", port=80)
    src = write_binetflow(tmp_path / "lab.binetflow", cnc + noise)
    out = tmp_path / "models"
    code = main([str(src), "--tuple", "10.0.0.7,192.0.2.66,8443,tcp", "--label", "From-Botnet-TCP-Lab-CC-1",
                 "--out", str(out)])
    assert code == 0
    said = capsys.readouterr().out
    assert "From-Botnet-TCP-Lab-CC-1.json: From-Botnet-TCP-Lab-CC-1, 29 letters from 15 flows" in said
    (m,) = load_models(out)
    assert (m.label, m.protocol, m.letters) == ("From-Botnet-TCP-Lab-CC-1", "TCP", BEHAVIOUR)
    assert m.threshold == 1.1
    assert m.provenance["trained_on"] == "lab.binetflow"
    assert m.provenance["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert m.provenance["tuple"] == "10.0.0.7-192.0.2.66:8443/tcp" and m.provenance["flows"] == 15

    det = StratosphereDetector(Context(Config(all_options()), AllowList(), [m]))
    other_host = flows_for(BEHAVIOUR[:21], client="10.9.9.9", server="203.0.113.5", port=443, start=5e6)
    evs = [e for f in other_host for e in det.on_flow(f)]
    assert evs and evs[0].label == "From-Botnet-TCP-Lab-CC-1" and evs[0].offender == "203.0.113.5"
    looks_similar = flows_for("99+i+I+v+I+V+i+I+V+v+I+", client="10.9.9.8", server="203.0.113.6", start=6e6)
    assert [e for f in looks_similar for e in det.on_flow(f)] == []


def test_list_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flows = flows_for(BEHAVIOUR, client="10.0.0.7", server="192.0.2.66")
    src = write_binetflow(tmp_path / "lab.binetflow", flows)
    assert main([str(src), "--list"]) == 0
    assert capsys.readouterr().out.startswith(f"10.0.0.7,192.0.2.66,443,tcp      15 flows  {BEHAVIOUR}")
    cases = [
        (["--tuple", "10.0.0.7,192.0.2.66,443", "--label", "From-Botnet-TCP-X-1"], "--tuple must be SRC,DST"),
        (["--tuple", "10.0.0.7,192.0.2.66,443,tcp", "--label", "From-Botnet-UDP-X-1"],
         "is for UDP, the tuple is tcp"),
        (["--tuple", "10.0.0.7,192.0.2.66,80,tcp", "--label", "From-Botnet-TCP-X-1"], "no flows of 10.0.0.7"),
        (["--tuple", "10.0.0.7,192.0.2.66,443,tcp"], "give --tuple and --label"),
        (["--tuple", "10.0.0.7,192.0.2.66,443,tcp", "--label", "From-Botnet-TCP-X-1", "--threshold", "0.5"],
         "'threshold' must be a number >= 1"),
    ]
    for args, msg in cases:
        assert main([str(src), *args, "--out", str(tmp_path / "m")]) == (4 if "threshold" in msg else 2)
        err = capsys.readouterr().err
        assert err.startswith("train_model: ") and msg in err and err.count("\n") == 1
    assert main([str(tmp_path / "missing.pcap"), "--list"]) == 2
    assert "no such file" in capsys.readouterr().err


def session(t: float, client: str, server: str, cport: int) -> list[tuple[float, bytes]]:
    """One TCP connection of 820 bytes (IP lengths) over 1 s: handshake, a request, a reply, FIN both ways."""
    s = 8443
    pkts = [(t, tcp(client, cport, server, s, SYN)), (t + 0.1, tcp(server, s, client, cport, SYN | ACK)),
            (t + 0.2, tcp(client, cport, server, s, ACK)),
            (t + 0.3, tcp(client, cport, server, s, PSH | ACK, b"q" * 300)),
            (t + 0.6, tcp(server, s, client, cport, PSH | ACK, b"r" * 200)),
            (t + 0.8, tcp(client, cport, server, s, FIN | ACK)),
            (t + 0.9, tcp(server, s, client, cport, FIN | ACK)),
            (t + 1.0, tcp(client, cport, server, s, ACK))]
    return [(ts, eth(p)) for ts, p in pkts]


def test_train_from_a_generated_capture(tmp_path: Path) -> None:
    # a connection every 30 s (one of them 33 s), each 820 bytes in 1 s: medium/medium flows
    starts = [1_700_000_000.0 + 30 * i + (3 if i == 6 else 0) for i in range(10)]
    records = [r for i, t in enumerate(starts) for r in session(t, "10.0.0.7", "192.0.2.66", 40000 + i)]
    cap = write_pcap(tmp_path / "lab.pcap", sorted(records))
    out = tmp_path / "models"
    assert main([str(cap), "--tuple", "10.0.0.7,192.0.2.66,8443,tcp", "--label", "From-Botnet-TCP-Lab-1",
                 "--out", str(out)]) == 0
    (m,) = load_models(out)
    assert m.letters == "55,e,e,e,e,E,E,E,e,"  # 33 s then 27 s then 30 s: weakly periodic three times
    assert m.provenance["trained_on"] == "lab.pcap" and m.provenance["flows"] == 10
