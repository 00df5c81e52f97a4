"""Format detection from content (paths and first bytes), gzip, pcap magics, and the inputs that are
none of these: every problem is an InputError naming the input."""

from __future__ import annotations

import gzip
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq.errors import InputError
from slipsq.sources.flowfiles import detect_format, detect_text, open_flow_source

SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large]  # the test machine may be busy

BINETFLOW = "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,SrcBytes,Label\n"
SAMPLES = {
    "binetflow": BINETFLOW,
    "binetflow-tab": BINETFLOW.replace(",", "\t"),
    "ra-custom": "SrcAddr,DstAddr,Dport,Proto,StartTime,TotBytes\n",
    "zeek": "#separator \\x09\n#set_separator\t,\n",
    "zeek-json": json.dumps({"ts": 1.0, "uid": "C", "id.orig_h": "10.0.0.1", "id.orig_p": 1}) + "\n",
    "suricata": json.dumps({"timestamp": "2021-06-06T15:57:37.272281+0200", "event_type": "alert"}) + "\n",
}
PCAP_MAGICS = [b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1", b"\x0a\x0d\x0d\x0a"]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_text_formats_from_content_not_name(tmp_path: Path, name: str) -> None:
    expected = name.split("-")[0].replace("ra", "binetflow")
    path = tmp_path / "capture.txt"  # a name that says nothing
    path.write_text("\n" + SAMPLES[name])  # a leading blank line is skipped
    assert detect_format(str(path)) == expected
    assert detect_format(SAMPLES[name].encode()) == expected
    gz = tmp_path / "capture.gz"
    gz.write_bytes(gzip.compress(SAMPLES[name].encode()))
    assert detect_format(str(gz)) == expected
    assert detect_format(gz.read_bytes()) == expected


@pytest.mark.parametrize("magic", PCAP_MAGICS)
def test_pcap_magics(tmp_path: Path, magic: bytes) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(magic + struct.pack("<HHiIII", 2, 4, 0, 0, 65535, 1))
    assert detect_format(str(path)) == "pcap" == detect_format(path.read_bytes())
    with pytest.raises(InputError, match="packet capture"):
        open_flow_source(str(path))
    gz = tmp_path / "x.pcap.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert detect_format(str(gz)) == "pcap"  # replay reads compressed captures (sources/pcapstream.py)
    with pytest.raises(InputError, match="packet capture"):
        open_flow_source(str(gz))


def test_nfdump_magic() -> None:
    assert detect_format(b"\x0c\xa5\x01\x00" + b"\x00" * 12) == "nfdump"
    assert detect_format(b"\x0c\xa5\x02\x00") == "nfdump"


def test_inputs_that_are_none_of_these(tmp_path: Path) -> None:
    cases = {"empty": b"", "blank": b"\n\n  \n", "text": b"hello world\n", "json": b'{"a": 1}\n',
             "csv": b"a,b,c\n1,2,3\n", "binary": bytes(range(256)), "gzip-empty": gzip.compress(b"")}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        calls: tuple[Callable[[str], object], ...] = (detect_format, open_flow_source)
        for call in calls:
            with pytest.raises(InputError) as e:
                call(str(path))
            assert str(path) in str(e.value), (name, str(e.value))
    with pytest.raises(InputError, match="is empty"):
        open_flow_source(str(tmp_path / "empty"))
    with pytest.raises(InputError, match="cannot open"):
        open_flow_source(str(tmp_path / "missing.binetflow"))
    with pytest.raises(InputError, match="cannot open"):  # a path through a file: unopenable even for root
        open_flow_source(str(tmp_path / "text" / "child"))
    with pytest.raises(InputError, match="unknown flow format 'csv'"):
        open_flow_source(str(tmp_path / "text"), "csv")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.binetflow"
    path.write_text(BINETFLOW)
    path.chmod(0)
    with pytest.raises(InputError, match="cannot open"):
        open_flow_source(str(path))


def test_forced_format_that_does_not_match(tmp_path: Path) -> None:
    path = tmp_path / "flows"
    path.write_text(SAMPLES["suricata"])
    with pytest.raises(InputError, match=r"flows:1: binetflow header lacks required column\(s\): StartTime, Proto"):
        open_flow_source(str(path), "binetflow")
    with pytest.raises(InputError, match="not an nfdump file"):
        open_flow_source(str(path), "nfdump")
    with pytest.raises(InputError, match="not a Zeek"):
        open_flow_source(str(path), "zeek")


@settings(max_examples=300, deadline=None, suppress_health_check=SLOW_OK)
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_detect_bytes_never_raises_anything_else(data: bytes) -> None:
    try:
        fmt = detect_format(data)
    except InputError:
        return
    assert fmt in ("binetflow", "zeek", "suricata", "nfdump", "pcap")


@settings(deadline=None, suppress_health_check=SLOW_OK)
@given(st.text(max_size=100))
def test_detect_text_is_total(line: str) -> None:
    assert detect_text(line) in (None, "binetflow", "zeek", "suricata")
