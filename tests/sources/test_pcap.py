"""The compiled capture reader (pcap, pcapng, bad files) and replay_capture through the real Engine."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slipsq.config import CORE_OPTIONS, Config
from slipsq.detect.base import Detector
from slipsq.engine import Engine
from slipsq.errors import InputError
from slipsq.flow import Flow
from slipsq.flowtable import APP_KINDS
from slipsq.flowtable import FlowTable as PyTable
from slipsq.runmode import Offline
from slipsq.runmode import load_config as load
from slipsq.sink import Sink
from slipsq.sources.pcap import replay_capture
from tests.helpers import (
    ACK,
    FIN,
    PSH,
    SYN,
    arp,
    dns_query,
    eth,
    icmp,
    pcap_bytes_fast,
    pcapng_block,
    sll2,
    tcp,
    udp,
    write_pcap,
    write_pcapng,
)

PcapFile = pytest.importorskip("slipsq.sources._pcap", reason="slipsq.sources._pcap is not built").PcapFile
CTable = pytest.importorskip("slipsq._flowtable", reason="slipsq._flowtable is not built").FlowTable

A, B, A6, B6 = "10.0.0.1", "10.0.0.2", "2001:db8::1", "2001:db8::2"


def conversation(t0: float = 1_600_000_000.25) -> list[tuple[float, bytes]]:
    """A TCP connection with data and FIN, a DNS query, an ARP request and an ICMPv6 echo."""
    return [
        (t0, tcp(A, 40000, B, 80, SYN)), (t0 + 0.001, tcp(B, 80, A, 40000, SYN | ACK)),
        (t0 + 0.002, tcp(A, 40000, B, 80, PSH | ACK, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")),
        (t0 + 0.5, udp(A, 5000, B, 53, dns_query("example.com"))),
        (t0 + 1.0, tcp(B, 80, A, 40000, FIN | ACK)), (t0 + 1.1, tcp(A, 40000, B, 80, FIN | ACK)),
        (t0 + 2.0, icmp(A6, B6, 128)), (t0 + 2.5, icmp(B6, A6, 129)),
    ]


def eth_records(recs: list[tuple[float, bytes]]) -> list[tuple[float, bytes]]:
    return [(ts, eth(p)) for ts, p in recs] + [(recs[-1][0] + 0.1, arp())]


def table() -> Any:
    return CTable(Config(CORE_OPTIONS))


def drain(pcap: Any, t: Any, batch: int = 1000) -> tuple[list[Flow], list[tuple[float, bytes]], list[int]]:
    flows: list[Flow] = []
    app: list[tuple[float, bytes]] = []
    returns = []
    while n := pcap.feed(t, batch):
        returns.append(n)
        flows += t.pop_closed()
        app += t.pop_app()
    t.close_all(pcap.last_ts)
    return flows + t.pop_closed(), app, returns


def reference(records: list[tuple[float, bytes]], linktype: int) -> list[Flow]:
    t = PyTable(Config(CORE_OPTIONS))
    for ts, buf in records:
        t.feed(buf, ts, linktype)
    t.close_all(records[-1][0])
    return t.pop_closed()


# --- formats --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("nano,big_endian", [(False, False), (True, False), (False, True), (True, True)])
def test_pcap_variants(tmp_path: Path, nano: bool, big_endian: bool) -> None:
    recs = eth_records(conversation())
    path = write_pcap(tmp_path / "c.pcap", recs, nano=nano, big_endian=big_endian)
    pcap = PcapFile(str(path))
    assert (pcap.format, pcap.linktypes) == ("pcap", [1])
    flows, app, _ = drain(pcap, table())
    assert pcap.packets == len(recs) and pcap.truncated == 0 and pcap.corrupt == 0
    assert pcap.first_ts == pytest.approx(recs[0][0], abs=1e-6)
    assert pcap.last_ts == pytest.approx(recs[-1][0], abs=1e-6)
    assert len(flows) == 3 and {f.proto for f in flows} == {"tcp", "udp", "ipv6-icmp"}
    assert len(app) == 3  # the HTTP request, the DNS query, the ARP request
    if nano:  # nanoseconds survive exactly where a double can hold them
        assert flows[0].start == pytest.approx(1_600_000_000.25, abs=1e-9)


def test_pcapng_two_interfaces_with_their_own_link_types(tmp_path: Path) -> None:
    conv = conversation()
    records = [(i % 2, ts, eth(p) if i % 2 == 0 else sll2(p, 0x86DD if p[0] >> 4 == 6 else 0x0800))
               for i, (ts, p) in enumerate(conv)]
    path = write_pcapng(tmp_path / "two.pcapng", [(1, 6), (276, 9)], records)
    pcap = PcapFile(str(path))
    assert pcap.format == "pcapng"
    flows, _, _ = drain(pcap, table())
    assert pcap.linktypes == [1, 276] and pcap.packets == len(conv)
    ref = reference([(ts, p) for ts, p in conv], 101)
    assert [(f.saddr, f.sport, f.daddr, f.dport, f.spkts, f.dpkts, f.state) for f in flows] == \
        [(f.saddr, f.sport, f.daddr, f.dport, f.spkts, f.dpkts, f.state) for f in ref]
    assert flows[0].start == pytest.approx(conv[0][0], abs=1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_pcapng_time_resolutions_and_byte_orders(tmp_path: Path, big_endian: bool) -> None:
    ts = 1_700_000_000.5
    records = [(0, ts, udp(A, 1, B, 2)), (1, ts + 1, udp(A, 1, B, 2)), (2, ts + 2, udp(A, 1, B, 2))]
    path = write_pcapng(tmp_path / "r.pcapng", [(101, 6), (101, 9), (101, 0x80 | 20)], records,
                        big_endian=big_endian)
    pcap = PcapFile(str(path))
    flows, _, _ = drain(pcap, table())
    f = flows[0]
    assert (f.spkts, f.start, f.end) == (3, pytest.approx(ts, abs=1e-6), pytest.approx(ts + 2, abs=1e-5))


def test_pcapng_other_blocks_are_skipped_and_simple_packets_read(tmp_path: Path) -> None:
    path = write_pcapng(tmp_path / "s.pcapng", [(101, 6)], [(0, 10.0, udp(A, 1, B, 2))])
    data = path.read_bytes()
    frame = udp(A, 1, B, 2, b"spb")
    spb = pcapng_block("<", 3, struct.pack("<I", len(frame)) + frame)
    isb = pcapng_block("<", 5, b"\0" * 8)
    path.write_bytes(data + isb + spb)
    pcap = PcapFile(str(path))
    flows, _, _ = drain(pcap, table())
    assert pcap.packets == 2 and flows[0].spkts == 2 and flows[0].end == 10.0  # SPB: no timestamp


# --- bad files --------------------------------------------------------------------------------------------

def test_empty_and_non_capture_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.pcap").write_bytes(b"")
    (tmp_path / "text.pcap").write_text("hello, this is not a capture\n")
    (tmp_path / "short.pcap").write_bytes(struct.pack("<I", 0xA1B2C3D4) + b"\0" * 6)
    (tmp_path / "tiny").write_bytes(b"\xd4\xc3")
    (tmp_path / "ng.pcapng").write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 40)
    for name, words in [("empty.pcap", "empty"), ("text.pcap", "not a pcap"), ("short.pcap", "cut short"),
                        ("tiny", "too short"), ("ng.pcapng", "byte-order")]:
        with pytest.raises(ValueError, match=words):
            PcapFile(str(tmp_path / name))
        engine = Engine(load(None), detectors=[])
        with pytest.raises(InputError, match=name):
            replay_capture(engine, tmp_path / name)
    with pytest.raises(InputError, match="no such file"):
        replay_capture(Engine(load(None), detectors=[]), tmp_path / "missing.pcap")


def test_truncated_last_record_is_counted(tmp_path: Path) -> None:
    recs = eth_records(conversation())
    path = write_pcap(tmp_path / "t.pcap", recs)
    whole = path.read_bytes()
    for cut, name in [(10, "mid-data"), (len(recs[-1][1]) + 6, "mid-header")]:
        path.write_bytes(whole[:-cut])
        pcap = PcapFile(str(path))
        drain(pcap, table())
        assert (pcap.packets, pcap.truncated, pcap.corrupt) == (len(recs) - 1, 1, 0), name


def test_corrupt_record_length_stops_with_a_count(tmp_path: Path) -> None:
    recs = eth_records(conversation())
    path = write_pcap(tmp_path / "c.pcap", recs)
    data = bytearray(path.read_bytes())
    pos = 24 + 16 + len(recs[0][1])  # the second record header
    data[pos + 8:pos + 12] = struct.pack("<I", 0x7FFFFFF0)
    path.write_bytes(bytes(data))
    pcap = PcapFile(str(path))
    drain(pcap, table())
    assert (pcap.packets, pcap.corrupt, pcap.truncated) == (1, 1, 0)


def test_truncated_and_corrupt_pcapng(tmp_path: Path) -> None:
    recs = [(0, 1.0, udp(A, 1, B, 2)), (0, 2.0, udp(A, 1, B, 2))]
    path = write_pcapng(tmp_path / "t.pcapng", [(101, 6)], recs)
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    pcap = PcapFile(str(path))
    drain(pcap, table())
    assert (pcap.packets, pcap.truncated, pcap.corrupt) == (1, 1, 0)
    bad = bytearray(data)
    last_block = len(data) - (28 + len(udp(A, 1, B, 2)) + 4)
    bad[last_block + 4:last_block + 8] = struct.pack("<I", 13)  # a block length not a multiple of 4
    path.write_bytes(bytes(bad))
    pcap = PcapFile(str(path))
    drain(pcap, table())
    assert (pcap.packets, pcap.corrupt) == (1, 1)


# --- feeding ----------------------------------------------------------------------------------------------

def test_feed_returns_right_after_a_pending_packet(tmp_path: Path) -> None:
    recs = [(1.0, udp(A, 1, B, 2)), (1.1, udp(A, 1, B, 2)), (1.2, udp(A, 5, B, 53, dns_query("a.b"))),
            (1.3, udp(A, 1, B, 2)), (1.4, udp(A, 1, B, 2))]
    path = write_pcap(tmp_path / "p.pcap", recs, linktype=101)
    pcap, t = PcapFile(str(path)), table()
    assert pcap.feed(t, 100) == 1 and not t.pending  # the first packet starts packet time: a tick
    assert pcap.feed(t, 100) == 2 and t.pending and pcap.last_ts == pytest.approx(1.2)
    t.pop_app()
    assert pcap.feed(t, 1) == 1 and pcap.feed(t, 100) == 1 and pcap.feed(t, 100) == 0
    assert pcap.packets == 5 and pcap.offset == path.stat().st_size


def test_feed_returns_when_packet_time_reaches_a_new_second(tmp_path: Path) -> None:
    recs = [(ts, udp(A, 1, B, 2)) for ts in (10.0, 10.5, 10.9, 11.0, 11.2, 13.7, 13.8)]
    path = write_pcap(tmp_path / "s.pcap", recs, linktype=101)
    pcap, t = PcapFile(str(path)), table()
    returns = []
    while n := pcap.feed(t, 100):
        returns.append((n, pcap.last_ts))
    assert returns == [(1, 10.0), (3, 11.0), (2, 13.7), (1, 13.8)]


def test_expiry_runs_inside_the_loop_in_packet_time(tmp_path: Path) -> None:
    recs = [(float(s), udp(A, 1000 + s, B, 2)) for s in range(0, 200, 10)]
    path = write_pcap(tmp_path / "e.pcap", recs, linktype=101)
    pcap, t = PcapFile(str(path)), CTable(Config(CORE_OPTIONS, {"flowtable.udp_idle": 15.0}))
    closed = []
    while pcap.feed(t, 1000):
        closed += [(f.sport, pcap.last_ts) for f in t.pop_closed()]
    # each flow closes at the first packet past its deadline, with no expire() call from Python
    assert closed[:3] == [(1000, 20.0), (1010, 30.0), (1020, 40.0)] and len(closed) == 18


def test_shared_captures_read_like_dpkt(shared_data: Path) -> None:
    import dpkt

    for path in sorted((shared_data / "pcaps").glob("*.pcap")):
        with path.open("rb") as fh:
            reader = dpkt.pcap.Reader(fh)
            recs = list(reader)
            linktype = reader.datalink()
        pcap = PcapFile(str(path))
        flows, _, _ = drain(pcap, CTable(Config(CORE_OPTIONS)))
        assert pcap.packets == len(recs)
        assert flows == reference(recs, linktype)


# --- replay_capture through the Engine --------------------------------------------------------------------

class FlowSink(Sink):
    def __init__(self) -> None:
        self.flows: list[Flow] = []


    def flow(self, flow: Flow) -> None:
        self.flows.append(flow)


def replay(path: Path, monkeypatch: pytest.MonkeyPatch,
           pure: bool) -> tuple[list[Flow], dict[str, Any], Offline]:
    monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1" if pure else "0")
    sink = FlowSink()
    engine = Offline(Engine(load(None), detectors=[]), [sink])
    engine.table.set_app_kinds(APP_KINDS)  # every app packet, so both paths decode the same events
    calls: list[tuple[int, int]] = []
    info = replay_capture(engine, path, progress=lambda done, total: calls.append((done, total)))
    engine.finish()
    size = path.stat().st_size
    assert calls and calls[-1] == (size, size) and all(d <= t for d, t in calls)
    return sink.flows, info, engine


def test_replay_capture_fast_and_pure_paths_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = []
    for k in range(20):
        recs += [(ts + 7 * k, eth(p)) for ts, p in conversation(1000.0)]
    path = write_pcap(tmp_path / "r.pcap", recs)
    fast, info, engine = replay(path, monkeypatch, pure=False)
    pure, pinfo, pengine = replay(path, monkeypatch, pure=True)
    assert info["packets"] == pinfo["packets"] == len(recs) and info["format"] == "pcap"
    assert len(fast) > 20 and fast == pure
    assert engine.engine.counters.app_events == pengine.engine.counters.app_events > 0
    assert engine.table.stats() == pengine.table.stats()
    again, _, _ = replay(path, monkeypatch, pure=False)
    assert again == fast  # deterministic


def test_replay_capture_of_a_large_generated_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.pcap"
    path.write_bytes(pcap_bytes_fast(50_000, flows=500))
    flows, info, engine = replay(path, monkeypatch, pure=False)
    assert info["packets"] == 50_000 and engine.table.stats()["packets"] == 50_000
    assert sum(f.pkts for f in flows) == 50_000



def mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (/proc/self/smaps)."""
    total, ours = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and ":" in head[3]:  # a mapping's first line
            ours = len(head) >= 6 and head[5] == str(path)
        elif ours and head and head[0] == "Rss:":
            total += int(head[1])
    return total


def test_the_reader_keeps_only_a_few_windows_of_the_file_mapped(tmp_path: Path) -> None:
    """Read parts of the file are unmapped behind the reader: 64 MB read, at most 3 windows (8 MB
    each) resident, and every record read (a flow a packet, each packet a full-size UDP one)."""
    path = tmp_path / "big.pcap"
    t0, payload = 1_700_000_000.0, b"z" * 1400
    frames = [eth(udp(f"10.1.{i // 250}.{i % 250 + 1}", 4000, B, 9000, payload)) for i in range(1000)]
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for k in range(47_000):  # 47,000 x 1,458 bytes: 65 MB
            ts = t0 + k * 1e-4
            f.write(struct.pack("<IIII", int(ts), int((ts % 1) * 1e6), len(frames[k % 1000]), len(frames[k % 1000])))
            f.write(frames[k % 1000])
    assert path.stat().st_size > 64 << 20
    pcap, t = PcapFile(str(path)), table()
    peak = 0
    while pcap.feed(t, 5000):
        peak = max(peak, mapped_kb(path))
        t.pop_closed()
    assert pcap.packets == 47_000 and pcap.truncated == pcap.corrupt == 0
    assert 0 < peak <= 3 * 8 * 1024 + 1024, f"{peak} kB of the file resident at once"
    pcap.close()


def test_a_capture_cut_short_while_it_is_read_is_one_input_error(tmp_path: Path) -> None:
    """Truncated under the reader's mapping (the pages past the new end raise SIGBUS when touched):
    InputError naming the file, not a process killed without a word; and the reader is done."""
    path = tmp_path / "cut.pcap"
    path.write_bytes(pcap_bytes_fast(200_000, flows=2000))  # ~24 MB
    pcap, t = PcapFile(str(path)), table()
    assert pcap.feed(t, 5000)
    os.truncate(path, 1_000_000)
    with pytest.raises(InputError, match=r"cut\.pcap: the file changed while it was read .* after [\d,]+ packets"):
        while pcap.feed(t, 5000):
            t.pop_closed()
            t.pop_app()
    assert pcap.feed(t, 5000) == 0  # done: nothing more is read
    pcap.close()
    # again after faulthandler took SIGBUS over (pytest enables it too): each opening re-arms ours
    import faulthandler

    faulthandler.enable()
    path.write_bytes(pcap_bytes_fast(200_000, flows=2000))
    pcap, t = PcapFile(str(path)), table()
    assert pcap.feed(t, 5000)
    os.truncate(path, 1_000_000)
    with pytest.raises(InputError, match="the file changed while it was read"):
        while pcap.feed(t, 5000):
            t.pop_closed()
            t.pop_app()
    pcap.close()
    # and a SIGBUS not from a capture's pages still kills as before (the handler passes it on)
    code = "import os, signal, sys; sys.path.insert(0, sys.argv[1]); import slipsq.sources._pcap as m; " \
           "m.PcapFile(sys.argv[2]); os.kill(os.getpid(), signal.SIGBUS)"
    small = write_pcap(tmp_path / "small.pcap", eth_records(conversation()))
    r = subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parents[2]), str(small)],
                       capture_output=True, timeout=60)
    assert r.returncode == -signal.SIGBUS

# --- the compiled reader against its readable twin --------------------------------------------------------

def read_both(path: Path) -> tuple[Any, Any]:
    """(flows, counts) from PcapFile into the compiled table and from PureCapture into the twin."""
    from slipsq.sources.pcap import PureCapture

    out = []
    try:
        pcap = PcapFile(str(path))
    except ValueError as e:
        c_result: Any = ("error", str(e))
    else:
        flows, app, _ = drain(pcap, table())
        c_result = (flows, app, pcap.packets, pcap.truncated, pcap.corrupt, pcap.linktypes)
        pcap.close()
    out.append(c_result)
    try:
        reader = PureCapture(path.read_bytes())
    except ValueError as e:
        out.append(("error", str(e)))
    else:
        t = PyTable(Config(CORE_OPTIONS))
        last = 0.0
        app = []
        flows = []
        for ts, buf, lt in reader:
            reader.packets += 1
            last = ts
            t.feed(buf, ts, lt)
            flows += t.pop_closed()
            app += t.pop_app()
        t.close_all(last)
        out.append((flows + t.pop_closed(), app, reader.packets, reader.truncated, reader.corrupt,
                    reader.linktypes))
    return out[0], out[1]


def sample_files(tmp_path: Path) -> list[Path]:
    conv = conversation()
    ng = [(i % 2, ts, eth(p) if i % 2 == 0 else sll2(p, 0x86DD if p[0] >> 4 == 6 else 0x0800))
          for i, (ts, p) in enumerate(conv)]
    return [write_pcap(tmp_path / "a.pcap", eth_records(conv)),
            write_pcap(tmp_path / "b.pcap", eth_records(conv), nano=True, big_endian=True),
            write_pcapng(tmp_path / "c.pcapng", [(1, 6), (276, 9)], ng),
            write_pcapng(tmp_path / "d.pcapng", [(1, 0x80 | 16)], [(0, ts, f) for ts, f in eth_records(conv)],
                         big_endian=True)]


def test_compiled_and_pure_readers_agree(tmp_path: Path) -> None:
    for path in sample_files(tmp_path):
        c, py = read_both(path)
        assert c == py and c[2] > 0, path.name


def test_readers_agree_on_damaged_files(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)  # fixed seed: the same damage on every run
    for path in sample_files(tmp_path):
        whole = path.read_bytes()
        for k in range(60):
            data = bytearray(whole)
            if k % 3 == 0:
                data = data[:rng.randrange(len(data))]
            else:
                for _ in range(rng.randrange(1, 4)):
                    data[rng.randrange(len(data))] = rng.randrange(256)
            damaged = tmp_path / f"damaged-{k}"
            damaged.write_bytes(bytes(data))
            c, py = read_both(damaged)
            assert c == py, (path.name, k)


def test_replay_pure_path_reads_pcapng_interfaces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = sample_files(tmp_path)[2]
    fast, info, _ = replay(path, monkeypatch, pure=False)
    pure, pinfo, _ = replay(path, monkeypatch, pure=True)
    assert fast == pure and len(fast) == 3 and info == pinfo and info["linktypes"] == [1, 276]


def test_an_engine_with_the_twin_table_replays_through_the_pure_reader(tmp_path: Path) -> None:
    path = write_pcap(tmp_path / "t.pcap", eth_records(conversation()))
    sink = FlowSink()
    engine = Offline(Engine(load(None), detectors=[], table=PyTable(load(None))), [sink])
    info = replay_capture(engine, path)
    engine.finish()
    assert info["packets"] == 9 and len(sink.flows) == 3


class TickRecorder(Detector):
    """Records when the engine ticks and which flows it saw: the fast and pure paths must agree."""

    name = "tickrecorder"
    seen: ClassVar[list[tuple[str, float]]] = []

    def on_tick(self, now: float) -> list[Any]:
        self.seen.append(("tick", now))
        return []

    def on_flow(self, flow: Flow) -> list[Any]:
        self.seen.append((f"flow {flow.saddr}:{flow.sport} {flow.closed_by}", flow.end))
        return []


def test_fast_and_pure_paths_tick_at_the_same_packets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recs = [(100.0 + 0.37 * k, eth(udp(A, 1000 + k % 7, B, 9, b"x"))) for k in range(60)]
    path = write_pcap(tmp_path / "ticks.pcap", recs)
    runs = []
    for pure in (False, True):
        monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1" if pure else "0")
        TickRecorder.seen = []
        engine = Engine(Config(CORE_OPTIONS, {"flowtable.udp_idle": 2.0}), detectors=[TickRecorder])
        replay_capture(engine, path)
        engine.finish()
        runs.append(TickRecorder.seen)
    assert runs[0] == runs[1]
    assert sum(1 for kind, _ in runs[0] if kind == "tick") >= 22


PCAP_HEAD = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)
NG_HEAD = (pcapng_block("<", 0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
           + pcapng_block("<", 1, struct.pack("<HHI", 101, 0, 0)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from([PCAP_HEAD, NG_HEAD, b""]), st.binary(max_size=300))
def test_readers_never_crash_and_agree_on_random_bodies(tmp_path: Path, head: bytes, body: bytes) -> None:
    path = tmp_path / "random.cap"
    path.write_bytes(head + body)
    c, py = read_both(path)
    assert c == py
