"""Tests of the project's traffic generator (tools/gencapture.py and its gen_* modules).

The generator feeds every capture-tier test and the benchmark, so its packets are checked with an
independent parser (dpkt): lengths, checksums, TCP conversations, timing, the benchmark mix, the
file formats, and that the bundled captures in tests/data are exactly what their README says.
"""

from __future__ import annotations

import hashlib
import random
import re
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import dpkt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tools import gencapture as g
from tools.gen_frames import Content, word_sum

DATA = Path(__file__).resolve().parent / "data"
T0 = 1_000_000.0


# --- helpers -----------------------------------------------------------------------------------------

def reference_checksum(data: bytes) -> int:
    """RFC 1071, the slow obvious way."""
    if len(data) % 2:
        data += b"\0"
    s = sum((data[i] << 8) | data[i + 1] for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def pseudo(ip: dpkt.ip.IP | dpkt.ip6.IP6, proto: int, length: int) -> bytes:
    if isinstance(ip, dpkt.ip.IP):
        return ip.src + ip.dst + bytes([0, proto]) + length.to_bytes(2, "big")
    return ip.src + ip.dst + length.to_bytes(4, "big") + bytes([0, 0, 0, proto])


def check_frame(frame: bytes) -> dpkt.ethernet.Ethernet:
    """Parse a frame and verify every length and checksum it carries; returns the parsed frame."""
    eth = dpkt.ethernet.Ethernet(frame)
    ip = eth.data
    if isinstance(ip, dpkt.arp.ARP):
        assert len(frame) == 60
        return eth
    if isinstance(ip, dpkt.ip.IP):
        raw = frame[14:14 + ip.len]
        assert ip.len == 20 + len(bytes(ip.data)) and len(frame) >= 14 + ip.len
        assert reference_checksum(raw[:20]) == 0, "IPv4 header checksum"
        l4, proto = raw[20:], ip.p
    else:
        assert isinstance(ip, dpkt.ip6.IP6)
        assert len(frame) == 54 + ip.plen
        l4, proto = frame[54:], ip.nxt
    if proto == 1:
        assert reference_checksum(l4) == 0, "ICMP checksum"
    else:
        assert reference_checksum(pseudo(ip, proto, len(l4)) + l4) == 0, f"protocol {proto} checksum"
    if proto == 17:
        assert ip.data.ulen == len(l4)
    return eth


def tcp_of(packets: list[tuple[float, bytes]]) -> list[tuple[float, dpkt.ip.IP, dpkt.tcp.TCP]]:
    out = []
    for ts, frame in packets:
        ip = check_frame(frame).data
        out.append((ts, ip, ip.data))
    return out


def assert_time_ordered(packets: list[tuple[float, bytes]]) -> None:
    times = [t for t, _ in packets]
    assert times == sorted(times)


def check_stream(stream: Iterable[tuple[float, bytes]]) -> None:
    """A generated stream is not empty, is in time order, and every frame in it is valid."""
    packets = list(stream)
    assert packets
    assert_time_ordered(packets)
    for _, frame in packets:
        check_frame(frame)


def stream_bytes(conv: list[tuple[float, dpkt.ip.IP, dpkt.tcp.TCP]], src: bytes) -> bytes:
    """Reassemble one direction by sequence number (checks there are no holes or overlaps)."""
    segs = sorted((tcp.seq, tcp.data) for _, ip, tcp in conv if ip.src == src and tcp.data)
    if not segs:
        return b""
    out, nxt = b"", segs[0][0]
    for seq, data in segs:
        assert seq == nxt, "hole or overlap in the TCP stream"
        out += data
        nxt = (seq + len(data)) & 0xFFFFFFFF
    return out


# --- checksums and frames -----------------------------------------------------------------------------

@given(st.binary(max_size=3000))
def test_checksum_matches_rfc1071(data: bytes) -> None:
    # one's complement has two zeros: data summing to zero may get 0x0000 instead of 0xFFFF
    ours, ref = g.checksum(data), reference_checksum(data)
    assert ours == ref or (ours, ref) == (0, 0xFFFF)


@given(st.integers(0, 65535), st.integers(0, 5000))
def test_content_slices_are_the_message_and_their_sums_are_right(off: int, length: int) -> None:
    c = Content(off + length + 10, b"head-bytes-", b"0123456789abcdefg")
    data, s = c.slice(off, length)
    assert len(data) == length
    assert s % 0xFFFF == word_sum(data) % 0xFFFF
    whole = (b"head-bytes-" + b"0123456789abcdefg" * (2 + (off + length) // 17))[: off + length]
    assert data == whole[off:]


@pytest.mark.parametrize("client,server", [("192.168.1.10", "198.51.100.7"), ("fd00:1::10", "2001:db8::7")])
def test_every_session_kind_parses_with_valid_lengths_and_checksums(client: str, server: str) -> None:
    rng = random.Random(3)
    streams = [
        g.tcp_session(client, server, 40000, 8080, T0, 3000, 9000, rng=rng),
        g.tls_session(client, server, "a.example.com", T0, sport=40001, rng=rng),
        g.http_session(client, server, "b.example.com", T0, sport=40002, rng=rng),
        g.ssh_session(client, server, T0, sport=40003, rng=rng),
        g.dns_query(client, "192.168.1.1" if ":" not in client else "fd00:1::1", "c.example.com", server, T0,
                    rng=rng),
        g.udp_exchange(client, server, 40004, 4444, T0, (("c", b"x" * 33), ("s", b"y" * 1001))),
        g.icmp_echo(client, server, T0, count=3),
    ]
    for s in streams:
        check_stream(s)


def test_short_frames_from_the_router_are_padded_like_real_ethernet() -> None:
    packets = list(g.tcp_session("192.168.1.10", "198.51.100.7", 40000, 443, T0, 10, 10))
    router = g.host("198.51.100.7").mac
    assert min(len(f) for _, f in packets) >= 54
    assert packets[1][1][6:12] == router and len(packets[1][1]) == 66  # SYN/ACK with options: no padding
    acks = [f for _, f in packets if len(dpkt.ethernet.Ethernet(f).data.data.data) == 0]
    assert {len(f) for f in acks if f[6:12] == router} == {60, 66}  # bare ACK and FIN: 54 padded to 60
    assert {len(f) for f in acks if f[6:12] != router} == {54, 66}  # the LAN host's own frames are not


# --- TCP conversations ----------------------------------------------------------------------------

@pytest.mark.parametrize("close", ["fin", "rst", "none"])
@pytest.mark.parametrize("closer", ["client", "server"])
def test_tcp_session_handshake_data_and_teardown(close: str, closer: str) -> None:
    c, s = "10.0.0.5", "198.18.3.4"
    packets = list(g.tcp_session(c, s, 45000, 443, T0, 5000, 20000, rtt=0.05, close=close, closer=closer,
                                 rng=random.Random(1)))
    conv = tcp_of(packets)
    assert_time_ordered(packets)
    (t0, _, syn), (t1, _, synack), (_, _, ack) = conv[:3]
    assert syn.flags == dpkt.tcp.TH_SYN and t0 == T0
    assert synack.flags == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK and synack.ack == syn.seq + 1
    assert t1 == pytest.approx(T0 + 0.05)
    assert ack.flags == dpkt.tcp.TH_ACK and ack.seq == syn.seq + 1 and ack.ack == synack.seq + 1
    cip, sip = g.host(c).packed, g.host(s).packed
    assert len(stream_bytes(conv, cip)) == 5000
    assert len(stream_bytes(conv, sip)) == 20000
    assert all(len(tcp.data) <= 1460 for _, _, tcp in conv)
    flags = [tcp.flags for _, _, tcp in conv]
    fins = [i for i, f in enumerate(flags) if f & dpkt.tcp.TH_FIN]
    rsts = [i for i, f in enumerate(flags) if f & dpkt.tcp.TH_RST]
    closer_ip = cip if closer == "client" else sip
    if close == "fin":
        assert len(fins) == 2 and not rsts and fins[-1] == len(conv) - 2
        assert conv[fins[0]][1].src == closer_ip and conv[fins[1]][1].src != closer_ip
        assert flags[-1] == dpkt.tcp.TH_ACK and conv[-1][2].ack == conv[fins[1]][2].seq + 1
    elif close == "rst":
        assert rsts == [len(conv) - 1] and not fins and conv[-1][1].src == closer_ip
    else:
        assert not fins and not rsts
    assert len(packets) == g.tcp_packet_count(
        [("c", Content(5000)), ("s", Content(20000))], close)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("cs"), st.integers(0, 9000)), max_size=6),
       st.sampled_from(["fin", "rst", "none"]), st.integers(536, 1460))
def test_tcp_packet_count_is_exact(msgs: list[tuple[str, int]], close: str, mss: int) -> None:
    messages = [(who, Content(n)) for who, n in msgs]
    packets = list(g.tcp_session("10.0.0.1", "198.18.0.1", 33333, 80, T0, messages=messages, close=close,
                                 mss=mss))
    assert len(packets) == g.tcp_packet_count(messages, close, mss)
    assert_time_ordered(packets)


def test_application_payloads_are_real_protocol_messages() -> None:
    rng = random.Random(5)
    c, s = "192.168.1.10", "198.51.100.9"
    tls = [t for t in tcp_of(list(g.tls_session(c, s, "beacon.example.net", T0, rng=rng))) if t[2].data]
    records, _ = dpkt.ssl.tls_multi_factory(tls[0][2].data)
    hello = dpkt.ssl.TLSHandshake(records[0].data).data
    assert isinstance(hello, dpkt.ssl.TLSClientHello)
    sni = dict(hello.extensions)[0]
    assert sni.endswith(b"beacon.example.net")
    http = [t for t in tcp_of(list(g.http_session(c, s, "www.example.com", T0, "/x", rng=rng))) if t[2].data]
    req = dpkt.http.Request(http[0][2].data)
    assert req.method == "GET" and req.uri == "/x" and req.headers["host"] == "www.example.com"
    assert http[1][2].data.startswith(b"HTTP/1.1 200 OK\r\n")
    ssh = [t for t in tcp_of(list(g.ssh_session(c, s, T0, rng=rng))) if t[2].data]
    assert ssh[0][1].src == g.host(s).packed and ssh[0][2].data == b"SSH-2.0-OpenSSH_9.2\r\n"
    lookup = g.dns_query(c, "192.168.1.1", "x.example.org", "203.0.113.5", T0, rng=rng)
    q, r = (dpkt.ethernet.Ethernet(f).data.data.data for _, f in lookup)
    query, resp = dpkt.dns.DNS(q), dpkt.dns.DNS(r)
    assert query.qd[0].name == "x.example.org" and resp.id == query.id
    assert resp.an[0].rdata == g.host("203.0.113.5").packed
    nx = [dpkt.dns.DNS(dpkt.ethernet.Ethernet(f).data.data.data) for _, f in
          g.dns_query(c, "192.168.1.1", "nope.example", None, T0)]
    assert nx[1].rcode == dpkt.dns.DNS_RCODE_NXDOMAIN and not nx[1].an
    arp = [dpkt.ethernet.Ethernet(f) for _, f in g.arp_who_has("192.168.1.1", "192.168.1.10", T0)]
    assert arp[0].dst == b"\xff" * 6 and arp[0].data.op == dpkt.arp.ARP_OP_REQUEST
    assert arp[1].data.op == dpkt.arp.ARP_OP_REPLY and arp[1].data.spa == g.host("192.168.1.10").packed


# --- scenarios ----------------------------------------------------------------------------------------

def syn_times(packets: list[tuple[float, bytes]], dport: int) -> list[float]:
    out = []
    for ts, frame in packets:
        ip = dpkt.ethernet.Ethernet(frame).data
        tcp = ip.data
        if isinstance(tcp, dpkt.tcp.TCP) and tcp.flags == dpkt.tcp.TH_SYN and tcp.dport == dport:
            out.append(ts)
    return out


@pytest.mark.parametrize("jitter", [0.0, 0.3])
def test_beacon_connections_start_at_the_interval_within_jitter(jitter: float) -> None:
    packets = list(g.beacon("192.168.1.66", "203.0.113.66", 443, interval=2.0, jitter=jitter, count=30,
                            size=6000, start=T0, rng=random.Random(9)))
    assert_time_ordered(packets)
    starts = syn_times(packets, 443)
    assert len(starts) == 30 and starts[0] == T0
    offsets = [t - (T0 + 2.0 * i) for i, t in enumerate(starts)]
    assert all(abs(o) <= jitter + 1e-6 for o in offsets)
    if jitter:
        assert max(abs(o) for o in offsets) > jitter / 3  # the jitter is really applied
    # each connection is one TLS session of ~6 KB payload lasting ~0.2 s (letters.md's example)
    conv = tcp_of(packets)
    sport = conv[0][2].sport
    first = [(ts, ip, tcp) for ts, ip, tcp in conv if sport in (tcp.sport, tcp.dport)]
    payload = sum(len(tcp.data) for _, _, tcp in first)
    assert 5000 <= payload <= 7000
    assert 0.1 < first[-1][0] - first[0][0] < 0.4


def test_udp_beacon_and_scans() -> None:
    udp = list(g.beacon("192.168.1.66", "203.0.113.66", 53, interval=10, count=5, proto="udp", start=T0))
    assert len(udp) == 10 and all(isinstance(check_frame(f).data.data, dpkt.udp.UDP) for _, f in udp)
    hs = list(g.horizontal_scan("10.0.0.9", "10.0.1.0/28", 445, start=T0, open_hosts=["10.0.1.3"],
                                closed_hosts=["10.0.1.4"]))
    assert len(syn_times(hs, 445)) == 14
    replies = Counter(tcp.flags for _, ip, tcp in tcp_of(hs) if ip.src != g.host("10.0.0.9").packed)
    assert replies == {dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK: 1, dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK: 1}
    vs = tcp_of(list(g.vertical_scan("10.0.0.9", "10.0.1.3", range(1, 101), start=T0, open_ports=(22, 80))))
    assert len({tcp.dport for _, ip, tcp in vs if tcp.flags == dpkt.tcp.TH_SYN}) == 100
    assert sum(tcp.flags == dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK for _, _, tcp in vs) == 2
    sweep = [check_frame(f).data.data for _, f in g.icmp_sweep("10.0.0.9", "10.0.1.0/29", start=T0,
                                                                 alive=["10.0.1.1"])]
    assert Counter(m.type for m in sweep) == {8: 6, 0: 1}
    arp = [dpkt.ethernet.Ethernet(f).data for _, f in g.arp_scan("10.0.1.5", "10.0.1.0/29", start=T0,
                                                                   alive=["10.0.1.2"])]
    assert Counter(a.op for a in arp) == {1: 5, 2: 1}


def test_bruteforce_browsing_and_background_are_time_ordered_and_valid() -> None:
    rng = random.Random(2)
    for stream in (
        g.ssh_bruteforce("203.0.113.50", "192.168.1.30", 2222, 5, start=T0, rng=rng),
        g.normal_browsing("192.168.1.10", 5, 60, start=T0, max_response=20000, rng=rng),
        g.ntp_polling("192.168.1.10", "198.51.100.123", start=T0, count=3, rng=rng),
        g.ssdp_multicast("192.168.1.20", start=T0, count=2, rng=rng),
        g.mdns("192.168.1.11", start=T0, count=2),
        g.connectivity_check("192.168.1.10", start=T0, count=2, rng=rng),
        g.long_connection("192.168.1.10", "198.51.100.3", start=T0, duration=300, rng=rng),
    ):
        check_stream(stream)
    brute = list(g.ssh_bruteforce("203.0.113.50", "192.168.1.30", 2222, 5, start=T0, interval=3, rng=rng))
    assert len(syn_times(brute, 2222)) == 5
    longc = tcp_of(list(g.long_connection("192.168.1.10", "198.51.100.3", start=T0, duration=600,
                                          keepalive=60)))
    assert longc[-1][0] - longc[0][0] > 500


# --- the benchmark mix ------------------------------------------------------------------------------

def test_realistic_has_the_requested_size_and_mix() -> None:
    stats: Counter[str] = Counter()
    packets = list(g.realistic(40_000, 1_500, seed=7, duration=600, stats=stats))
    assert len(packets) == 40_000
    assert_time_ordered(packets)
    assert packets[-1][0] - packets[0][0] > 500
    flows: set[tuple[object, ...]] = set()
    kinds: Counter[str] = Counter()
    for _, frame in packets:
        eth = check_frame(frame)
        ip = eth.data
        if isinstance(ip, dpkt.arp.ARP):
            kinds["arp"] += 1
            continue
        kinds["ip6" if isinstance(ip, dpkt.ip6.IP6) else "ip4"] += 1
        l4 = ip.data
        if isinstance(l4, (dpkt.tcp.TCP, dpkt.udp.UDP)):
            a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
            flows.add((type(l4).__name__, *sorted((a, b))))
            if isinstance(l4, dpkt.tcp.TCP):
                kinds["syn"] += l4.flags == dpkt.tcp.TH_SYN
                kinds["fin"] += bool(l4.flags & dpkt.tcp.TH_FIN)
                kinds["rst"] += bool(l4.flags & dpkt.tcp.TH_RST)
            elif 53 in (l4.sport, l4.dport):
                kinds["dns"] += 1
        elif isinstance(l4, (dpkt.icmp.ICMP, dpkt.icmp6.ICMP6)):
            kinds["icmp"] += 1
            if l4.type in (8, 128):  # an echo request: its identifier names the flow
                flows.add(("icmp", ip.src, ip.dst, l4.data.id))
    assert len(flows) >= 1_500
    assert sum(v for k, v in stats.items() if k not in ("packets", "arp")) >= 1_500
    assert kinds["syn"] > 500 and kinds["fin"] > 2 * 400 and kinds["rst"] > 10
    assert kinds["dns"] > 600 and kinds["icmp"] > 50 and kinds["arp"] > 50 and kinds["ip6"] > 500
    assert stats["bulk"] > 30 and stats["keepalive"] > 3


def test_realistic_is_deterministic_and_seeded() -> None:
    def digest(seed: int) -> str:
        h = hashlib.sha256()
        for ts, frame in g.realistic(5_000, 200, seed=seed, duration=60):
            h.update(repr(ts).encode() + frame)
        return h.hexdigest()

    assert digest(3) == digest(3)
    assert digest(3) != digest(4)


def test_realistic_refuses_too_few_packets_per_flow() -> None:
    with pytest.raises(ValueError, match="packets per flow"):
        g.realistic(1000, 500)
    assert g.main(["realistic", "--packets", "100", "--flows", "50", "--out", "/nonexistent/x.pcap"]) == 2


# --- files ----------------------------------------------------------------------------------------

def sample() -> list[tuple[float, bytes]]:
    rng = random.Random(4)
    return list(g.merge(g.tls_session("192.168.1.10", "198.51.100.9", "x.example.com", T0 + 0.5, rng=rng),
                        g.arp_who_has("192.168.1.1", "192.168.1.10", T0),
                        g.icmp_echo("fd00::1", "2001:db8::1", T0 + 0.25)))


@pytest.mark.parametrize("fmt", ["pcap", "pcapng"])
@pytest.mark.parametrize("linktype", ["ethernet", "raw", "sll"])
def test_files_read_back_with_dpkt(tmp_path: Path, fmt: str, linktype: str) -> None:
    packets = sample()
    path = tmp_path / f"x.{fmt}"
    n = g.write_capture(packets, path, linktype, fmt)
    with open(path, "rb") as fh:
        reader = dpkt.pcap.Reader(fh) if fmt == "pcap" else dpkt.pcapng.Reader(fh)
        assert reader.datalink() == g.LINKTYPES[linktype]
        records = list(reader)
    want = [(ts, f) for ts, f in packets if linktype != "raw" or f[12:14] != b"\x08\x06"]
    assert n == len(records) == len(want)
    for (ts, buf), (wts, frame) in zip(records, want):
        assert float(ts) == pytest.approx(wts, abs=1e-6)
        eth = dpkt.ethernet.Ethernet(frame)
        if linktype == "ethernet":
            assert buf == frame
        elif linktype == "raw":
            assert buf == bytes(eth.data)  # the IP packet, without the Ethernet padding
        else:
            sll = dpkt.sll.SLL(buf)
            assert sll.ethtype == eth.type and sll.hdr[:6] == eth.src and buf[16:] == frame[14:]


def test_cli_writes_the_named_scenario(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.pcapng"
    assert g.main(["arp-scan", "--out", str(out), "--seed", "2", "--linktype", "sll"]) == 0
    assert "packets" in capsys.readouterr().out
    with open(out, "rb") as fh:
        assert len(list(dpkt.pcapng.Reader(fh))) > 250
    assert g.main(["demo", "--out", str(tmp_path / "no" / "such" / "dir.pcap")]) == 1
    with pytest.raises(SystemExit):
        g.main(["no-such-scenario", "--out", str(out)])


def readme_commands() -> list[tuple[str, list[str]]]:
    """(file name, gencapture arguments) of every command line in tests/data/README.md."""
    out = []
    for line in (DATA / "README.md").read_text().splitlines():
        line = line.strip().strip("`")
        if line.startswith("python -m tools.gencapture "):
            args = shlex.split(line)[3:]
            out.append((Path(args[args.index("--out") + 1]).name, args))
    return out


def test_bundled_captures_are_reproducible_from_their_readme(tmp_path: Path) -> None:
    commands = readme_commands()
    bundled = sorted(p.name for p in DATA.glob("*.pcap*"))
    assert sorted(name for name, _ in commands) == bundled and len(bundled) >= 5
    for name, args in commands:
        out = tmp_path / name
        args[args.index("--out") + 1] = str(out)
        assert g.main(args) == 0
        assert out.read_bytes() == (DATA / name).read_bytes(), f"{name} differs from its README command"
        assert (DATA / name).stat().st_size < 300_000


# --- the replay benchmark ---------------------------------------------------------------------------

@pytest.mark.timeout(180)
@pytest.mark.parametrize("library", [False, True], ids=["cli", "library"])
def test_replay_bench_runs_every_row_on_a_small_capture(tmp_path: Path, library: bool) -> None:
    """`make bench` is not part of `make test`; this keeps bench/replay.py from rotting unseen."""
    root = DATA.parent.parent
    args = [sys.executable, str(root / "bench" / "replay.py"), "--packets", "20000", "--flows", "600",
            "--slice", "5000", "--repeat", "1", "--out-dir", str(tmp_path)] + (["--library"] if library else [])
    r = subprocess.run(args, capture_output=True, text=True, cwd=root, timeout=170)
    assert r.returncode == 0, r.stderr
    rows = {line[:24].strip(): line for line in r.stdout.splitlines() if line[:1].isalpha() or line[:3] == "  -"}
    replay = ["slipsq replay (library)"] if library else ["slipsq replay (CLI)", "--processes 1"]
    for name in (*replay, "table, no detectors", "dpkt reader only", "dpkt decode all"):
        assert name in rows and "skipped" not in rows[name] and "failed" not in rows[name], r.stdout
        assert re.search(r"\s[\d,]+\s+[\d.]+\s+[\d.]+\s+[\d,]+\s.*\s\d+MB", rows[name]), rows[name]
    assert "20,000" in rows["table, no detectors"]
    assert "flows opened" in r.stdout and "bytes per flow" in r.stdout
