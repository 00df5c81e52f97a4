"""nfdump reader: a capture the test writes, turned into an nfdump file by nfpcapd and read back through
the nfdump program; the shared nfdump file; a missing program; nfdump failing; bad output lines."""
# ruff: noqa: E501  (nfdump output lines are long)

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq.errors import InputError
from slipsq.flow import Flow
from slipsq.sources.flowfiles import detect_format, open_flow_source
from slipsq.sources.flowfiles.base import Addresses
from slipsq.sources.flowfiles.nfdump import NfdumpSource
from tests.helpers import eth, icmp, tcp, udp, write_pcap

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]  # the test machine may be busy

NFDUMP_HEADER = b"\x0c\xa5\x02\x00" + b"\x00" * 60  # enough of an nffile header for detection
needs_nfdump = pytest.mark.skipif(not (shutil.which("nfdump") and shutil.which("nfpcapd")),
                                  reason="nfdump/nfpcapd not installed")


@needs_nfdump
def test_capture_through_nfpcapd_and_nfdump(tmp_path: Path) -> None:
    t = 1_600_000_000.0
    records = [(t, eth(tcp("10.1.0.5", 40000, "10.2.0.9", 443, flags=0x02))),
               (t + 0.5, eth(tcp("10.1.0.5", 40000, "10.2.0.9", 443, flags=0x10, payload=b"x" * 100))),
               (t + 1.0, eth(udp("10.1.0.5", 5555, "10.1.0.1", 53, b"q" * 30))),
               (t + 2.0, eth(icmp("10.1.0.5", "10.3.0.1", itype=8, code=0))),
               (t + 3.0, eth(udp("2001:db8::5", 6000, "2001:db8:ffff::1", 123, b"n" * 48)))]
    pcap = tmp_path / "c.pcap"
    write_pcap(pcap, records)
    out = tmp_path / "nf"
    out.mkdir()
    subprocess.run(["nfpcapd", "-r", str(pcap), "-w", str(out)], check=True, capture_output=True, timeout=60)
    (nffile,) = [p for p in out.iterdir() if p.name.startswith("nfcapd.")]
    assert detect_format(str(nffile)) == "nfdump"
    source = open_flow_source(str(nffile))
    flows = sorted((f for f in source if isinstance(f, Flow)), key=lambda f: f.start)
    assert source.format == "nfdump" and source.counts["bad_rows"] == 0 and len(flows) == 4
    web, dns, ping, ntp = flows
    assert (web.proto, web.saddr, web.sport, web.daddr, web.dport) == ("tcp", "10.1.0.5", 40000, "10.2.0.9", 443)
    assert web.start == pytest.approx(t, abs=1e-3) and web.dur == pytest.approx(0.5, abs=1e-3)
    assert (web.spkts, web.sbytes) == (2, 40 + 140)  # IP lengths: SYN 40, ACK with 100 bytes 140
    assert (dns.proto, dns.dport, dns.sbytes) == ("udp", 53, 58)
    assert (ping.proto, ping.sport, ping.dport) == ("icmp", 8, 0)  # type 8, code 0
    assert (ntp.saddr, ntp.daddr, ntp.dport) == ("2001:db8::5", "2001:db8:ffff::1", 123)  # full IPv6 (-6)


def test_shared_nfdump_file(shared_data: Path) -> None:
    if not shutil.which("nfdump"):
        pytest.skip("nfdump not installed")
    source = open_flow_source(str(shared_data / "nfdump" / "test1-malicious.nfdump"))
    flows = list(source)
    assert source.counts["bad_rows"] == 0 and len(flows) == source.counts["flows"] == 4593
    first = flows[0]  # 2018-01-12 15:37:30.942 TCP 147.32.80.119:52324 -> 147.32.82.62:902 1 packet 60 bytes
    assert isinstance(first, Flow)
    assert (first.start, first.saddr, first.sport, first.daddr, first.dport, first.pkts, first.bytes,
            first.state) == (1515771450.942, "147.32.80.119", 52324, "147.32.82.62", 902, 1, 60, "......S.")


def test_missing_nfdump_program_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.nfcapd"
    path.write_bytes(NFDUMP_HEADER)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH without nfdump
    assert detect_format(str(path)) == "nfdump"
    with pytest.raises(InputError, match=r"needs the nfdump program.*not installed or not on PATH") as e:
        open_flow_source(str(path))
    assert str(path) in str(e.value)


def fake_nfdump(tmp_path: Path, output: str, code: int = 0, message: str = "") -> None:
    script = tmp_path / "bin" / "nfdump"
    script.parent.mkdir(exist_ok=True)
    (tmp_path / "out.txt").write_text(output)
    script.write_text(f"#!/bin/sh\ncat '{tmp_path / 'out.txt'}'\necho '{message}' >&2\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_bad_output_lines_are_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = "1515771450.942,           0.250,6    ,   147.32.80.119, 52324,    147.32.82.62,   902,       1,      60,       0,       0,......S.,   0,   0"
    lines = [good, good.replace("147.32.80.119", "147.32.80"), "garbage", good.replace("0.250", "-1"),
             "1515771451.000,0.000,1,10.0.0.1,0,10.0.0.2,3.3,1,56,0,0,........,0,0", "",
             "No matching flows"]  # nfdump's own line for a file without flows: no bad row (review)
    fake_nfdump(tmp_path, "\n".join(lines) + "\n")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    path = tmp_path / "x.nfcapd"
    path.write_bytes(NFDUMP_HEADER)
    source = open_flow_source(str(path))
    a, unreach = list(source)
    assert isinstance(a, Flow) and isinstance(unreach, Flow)
    assert (a.dur, a.state, a.proto) == (pytest.approx(0.25), "......S.", "tcp")
    assert (unreach.proto, unreach.sport, unreach.dport) == ("icmp", 3, 3)
    assert source.counts["bad_rows"] == 3 and source.problems[0] == f"{path}:2: bad address '147.32.80'"


def test_nfdump_failure_is_an_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_nfdump(tmp_path, "", code=255, message="Open file: corrupt data file")
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + "/usr/bin:/bin")
    path = tmp_path / "x.nfcapd"
    path.write_bytes(NFDUMP_HEADER)
    with pytest.raises(InputError, match=r"nfdump failed \(exit 255\): Open file: corrupt data file"):
        list(open_flow_source(str(path)))


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.lists(st.text(max_size=30), min_size=14, max_size=14))
def test_random_fields_only_raise_value_errors(fields: list[str]) -> None:
    try:
        NfdumpSource._flow([f.replace(",", "") for f in fields], Addresses())
    except (ValueError, IndexError, OverflowError):
        pass  # counted as a bad row by the reader
