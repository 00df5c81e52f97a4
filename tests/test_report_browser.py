"""The report in a real headless browser (Debian's chromium, installed by `make test`), opened with
no network at all (a network namespace of its own, `unshare -n`): the page loads with no console
message (a script error, a blocked load and a CSP violation would each log one), shows the expected
hosts, and its screenshot is a real picture. A page that does log an error proves the check can fail.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from slipsq.cli import main
from tools import gen_corpus
from tools.gencapture import write_capture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None or shutil.which("unshare") is None,
                                reason="needs Debian's chromium and unshare (make test installs chromium)")


def browse(page: Path, *args: str) -> tuple[str, list[str]]:
    """Chromium, headless, without network, on `page`: (its stdout, the console lines it logged)."""
    cmd = ["unshare", "-n", str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           "--enable-logging=stderr", "--v=0", "--no-first-run", f"--user-data-dir={page.parent / 'profile'}",
           *args, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [ln for ln in done.stderr.splitlines() if ":CONSOLE" in ln]


def png_pixels(path: Path) -> tuple[int, int, bytes]:
    """(width, height, the decompressed image data) of a PNG, read by hand (no imaging library)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, zlib.decompress(idat)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("report")
    cap = d / "beacon.pcap"
    write_capture(gen_corpus.BY_NAME["beacon-10s-1%"].build(random.Random(1)), cap)
    r = CliRunner().invoke(main, ["replay", str(cap), "-o", str(d / "out"), "--report"])
    assert r.exit_code == 0, r.output
    return d / "out" / "report.html"


def test_the_console_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><p>x</p><script>throw new Error('boom')</script>")
    _, console = browse(bad, "--dump-dom")
    assert any("boom" in ln for ln in console)


def test_the_report_loads_offline_with_no_console_message_and_shows_the_hosts(report: Path) -> None:
    dom, console = browse(report, "--dump-dom")
    assert console == []
    assert "What happened on the network" in dom
    # the blocked C&C server ranks first, then the infected host that talked to it
    assert dom.index(f">{gen_corpus.CNC}<") < dom.index(f">{gen_corpus.VICTIM}<")
    assert "cdn-edge.example.net" in dom and "connection starts" in dom


def test_the_screenshot_is_a_picture(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    _, console = browse(report, f"--screenshot={shot}", "--window-size=1000,1400")
    assert console == []
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1000, 1400)
    # a blank page compresses to a handful of byte values; text, tables and plots give many
    assert len(set(pixels)) > 64 and shot.stat().st_size > 20_000
