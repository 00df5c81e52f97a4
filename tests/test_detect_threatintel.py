"""Threat intelligence: list parsing (text, CSV, IPv4/IPv6, bad lines), prefix lookups against a
brute-force reference, and matches through the real engine."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest
from flowgen import T0, config, flow, run
from hypothesis import given, settings
from hypothesis import strategies as st

from slipsq.detect.prefixes import PrefixSet, is_local
from slipsq.detect.threatintel import ThreatIntel, load_lists
from slipsq.errors import ConfigError, InputError

HOST = "192.168.1.20"

TEXT = """# feed of bad hosts
203.0.113.5
198.51.100.0/24   # a whole bad network
2001:db8:bad::/48 ; trailing comment, other style

not-an-ip
0.0.0.0/0
10.0.0.0/4
203.0.113.77 some extra words
"""

CSV = """# "first_seen_utc","dst_ip","dst_port","c2_status"
"2024-01-01 00:00:00","192.0.2.44","443","online"
"2024-01-01 00:00:00","not-an-ip","443","online"
"2024-01-01 00:00:00","2001:db8::66","8080","offline"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "ti"
    d.mkdir()
    (d / "bad.txt").write_text(TEXT)
    (d / "feodo.csv").write_text(CSV)
    (d / "plain.csv").write_text("Indicator,Type\n100.64.9.9,ip\n")
    (d / "headerless.csv").write_text("x,198.18.0.1,y\nx,198.18.0.2,y\n")
    (d / ".hidden").write_text("1.1.1.1\n")
    return d


def test_load_lists_counts_and_warns(folder: Path) -> None:
    intel, stats = load_lists(folder)
    assert stats.files == 4
    assert stats.addresses == 7 and stats.networks == 2
    assert stats.bad_lines == 4
    assert "bad.txt:6: 'not-an-ip' is not an IP address or network" in stats.warnings
    assert any(w.startswith("bad.txt:7: network 0.0.0.0/0 is wider than /8") for w in stats.warnings)
    assert any(w.startswith("feodo.csv:3:") for w in stats.warnings)
    assert intel.lookup("198.51.100.200") == "bad.txt:3 (198.51.100.0/24)"
    assert intel.lookup("2001:db8:bad:1::9") is not None
    assert intel.lookup("192.0.2.44") == "feodo.csv:2 (192.0.2.44)"
    assert intel.lookup("::ffff:192.0.2.44") is not None
    assert intel.lookup("100.64.9.9") and intel.lookup("198.18.0.2") and intel.lookup("203.0.113.77")
    assert intel.lookup("1.1.1.1") is None and intel.lookup("203.0.113.6") is None
    assert intel.lookup("garbage") is None


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_lists(tmp_path / "nope")
    f = tmp_path / "file"
    f.write_text("")
    with pytest.raises(InputError, match="is not a folder"):
        load_lists(f)
    if os.geteuid() != 0:  # root reads anything
        d = tmp_path / "locked"
        d.mkdir()
        (d / "x.txt").write_text("1.2.3.4\n")
        (d / "x.txt").chmod(0)
        with pytest.raises(InputError, match=r"x\.txt cannot be read"):
            load_lists(d)
    with pytest.raises(ConfigError, match=r"threatintel\.folder"):
        run([ThreatIntel], cfg=config([ThreatIntel], **{"threatintel.folder": str(tmp_path / "nope")}))


def test_a_csv_list_this_cannot_read_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    """csv's own error (a field past its 128 KiB limit, quoted or not) used to escape load_lists: an "internal
    error" at replay, a daemon that could not start, a reload thread that died."""
    for name, body in (("big.csv", "ip,note\n1.2.3.4," + "x" * 200_000 + "\n"),
                       ("quoted.csv", 'ip,note\n1.2.3.4,"' + "y" * 140_000)):
        d = tmp_path / name.split(".")[0]
        d.mkdir()
        (d / name).write_text(body)
        with pytest.raises(InputError, match=rf"threat intelligence list {d / name} is not a CSV file"):
            load_lists(d)
        with pytest.raises(ConfigError, match=rf"threatintel\.folder.*{name}"):
            run([ThreatIntel], cfg=config([ThreatIntel], **{"threatintel.folder": str(d)}))


def test_a_warning_shows_a_lists_control_characters_escaped(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("\x1b[2J\x1b]0;owned\x07\n")
    _, stats = load_lists(tmp_path)
    assert stats.bad_lines == 1 and "\x1b" not in stats.summary() and "\\x1b[2J" in stats.summary()


def test_match_blocks_listed_ip_once_per_window(folder: Path) -> None:
    flows = [flow(T0 + i, HOST, "198.51.100.9", 443, sport=40000 + i) for i in range(5)]
    flows += [flow(T0 + 3600 + i, HOST, "198.51.100.9", 443) for i in range(3)]  # next window
    flows += [flow(T0 + 10, "203.0.113.5", HOST, 22)]  # inbound from a listed IP
    flows += [flow(T0 + 11, HOST, "198.51.101.9", 443)]  # not listed
    flows.sort(key=lambda f: f.start)
    rec, _ = run([ThreatIntel], flows, cfg=config([ThreatIntel], **{"threatintel.folder": str(folder)}))
    alerts = rec.by("threatintel")
    assert [(a.evidence.offender, int((a.evidence.ts - T0) // 3600)) for a in alerts] == [
        ("198.51.100.9", 0), ("203.0.113.5", 0), ("198.51.100.9", 1)]
    assert alerts[0].evidence.description.startswith(
        "198.51.100.9 is on a threat intelligence list: bad.txt:3 (198.51.100.0/24); seen as destination")
    assert rec.blocked_ips == ["198.51.100.9", "203.0.113.5"]


def test_protected_listed_ip_is_reported_not_blocked(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("203.0.113.5\n")
    cfg = config([ThreatIntel], **{"threatintel.folder": str(tmp_path), "allow.ips": ["203.0.113.5"]})
    rec, _ = run([ThreatIntel], [flow(T0, HOST, "203.0.113.5", 443)], cfg=cfg)
    assert rec.by("threatintel") and rec.blocked_ips == []
    assert "never blocked" in rec.by("threatintel")[0].evidence.description


def test_reload_picks_up_changes_and_keeps_old_lists_on_error(tmp_path: Path) -> None:
    (tmp_path / "l.txt").write_text("203.0.113.5\n")
    cfg = config([ThreatIntel], **{"threatintel.folder": str(tmp_path)})
    _, eng = run([ThreatIntel], cfg=cfg)
    det = eng.engine.detectors[0]
    assert isinstance(det, ThreatIntel)
    assert det.flow_gate is None  # lists loaded: the engine calls it for every flow
    assert det._lookup("203.0.113.6") is None
    (tmp_path / "l.txt").write_text("203.0.113.6\n")
    assert det.reload().addresses == 1
    assert det._lookup("203.0.113.6") is not None and det._lookup("203.0.113.5") is None
    (tmp_path / "l.txt").chmod(0)
    if os.geteuid() != 0:
        with pytest.raises(InputError):
            det.reload()
        assert det._lookup("203.0.113.6") is not None


def test_off_by_default() -> None:
    rec, eng = run([ThreatIntel], [flow(T0, HOST, "203.0.113.5", 443)])
    assert rec.by("threatintel") == []
    gate = eng.engine.detectors[0].flow_gate  # no lists: the engine skips the call for every flow
    assert gate is not None and not gate.admits(flow(T0, HOST, "203.0.113.5", 443))


nets4 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                  st.integers(0, 2**32 - 1), st.integers(8, 32))
nets6 = st.builds(lambda a, p: ipaddress.ip_network((a, p), strict=False),
                  st.integers(0, 2**128 - 1), st.integers(16, 128))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(nets4, nets6), max_size=30), st.lists(st.integers(0, 2**32 - 1), max_size=30),
       st.lists(st.integers(0, 2**128 - 1), max_size=10))
def test_prefix_set_matches_a_brute_force_reference(nets: list, v4: list[int], v6: list[int]) -> None:  # type: ignore[type-arg]
    s: PrefixSet[str] = PrefixSet()
    for n in nets:
        s.add(n, str(n))
    probes = [str(ipaddress.IPv4Address(a)) for a in v4] + [str(ipaddress.IPv6Address(a)) for a in v6]
    probes += [str(n.network_address) for n in nets] + [str(n.broadcast_address) for n in nets]
    for p in probes:
        a = ipaddress.ip_address(p)
        if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
            a = a.ipv4_mapped  # looked up as the IPv4 address it carries, by design
        holders = [n for n in nets if n.version == a.version and a in n]
        got = s.lookup(p)
        if not holders:
            assert got is None
        else:  # the longest (most specific) network, first added among equals
            best = max(n.prefixlen for n in holders)
            assert got == str(next(n for n in holders if n.prefixlen == best))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123456789abcdef.:/#; ,\"\t-x", max_size=40), max_size=20))
def test_list_parser_never_crashes(tmp_path_factory: pytest.TempPathFactory, lines: list[str]) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    (d / "a.txt").write_text("\n".join(lines))
    (d / "b.csv").write_text("\n".join(lines))
    intel, stats = load_lists(d)
    assert stats.files == 2 and stats.bad_lines >= 0 and len(intel) == stats.addresses + stats.networks


def test_is_local() -> None:
    assert is_local("10.1.2.3") and is_local("fe80::1") and is_local("239.255.255.250")
    assert not is_local("203.0.113.5") and not is_local("8.8.8.8") and not is_local("bogus")
    # asked about endless addresses (a scan), its memory stays bounded and its answers stay right
    for i in range(70_000):
        assert is_local(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
    assert len(is_local.__self__) <= 65536  # type: ignore[attr-defined]
    assert is_local("192.168.7.7") and not is_local("198.51.100.9")


def test_unreadable_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.txt").write_text("1.2.3.4\n")

    def denied(self: Path, *a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", denied)  # works as root too, where chmod 0 does not stop reads
    with pytest.raises(InputError, match=r"x\.txt cannot be read: Permission denied"):
        load_lists(tmp_path)
