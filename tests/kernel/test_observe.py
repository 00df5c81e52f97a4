"""Watching a real inline slipsq (namespaces, veth, NFQUEUE, ipset): its Prometheus metrics, scraped
over HTTP inside the gateway namespace and from the node-exporter textfile, read with
prometheus_client's parser; and `slipsq top` in a real pty, unblocking an address for real."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.kernel.conftest import Slipsq, wait_for
from tests.kernel.lab import CNC, LEGIT, Lab
from tests.screen import Term

SCRAPE = ("import urllib.request, sys\n"
          "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9467/metrics', timeout=10).read().decode())")


def metrics(text: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        out[fam.name] = {tuple(sorted(s.labels.items())): s.value for s in fam.samples}
    return out


def backend() -> str:
    return "nft" if shutil.which("iptables-nft") else "legacy"  # neither touches the firewall


def test_metrics_and_top_on_a_real_gateway(lab: Lab, tmp_path: Path) -> None:
    prom = tmp_path / "slipsq.prom"
    s = Slipsq(lab, tmp_path / "state", backend(), config={
        "allow.ips": [f"{LEGIT}/32"], "judge.block_duration": 600.0,
        "metrics.listen": "127.0.0.1:9467", "metrics.textfile": str(prom), "metrics.textfile_every": 0.5})
    lab.serve()
    s.start()
    for _ in range(5):
        assert lab.connect("a", CNC) and lab.connect("b", LEGIT)
    s.cli("block", CNC, "--for", "10m", "--reason", "test")

    def scrape() -> dict[str, Any]:
        return metrics(lab.sh(lab.gw, sys.executable, "-c", SCRAPE).stdout)

    m = scrape()
    assert m["slipsq_packets"][()] >= 30  # 10 TCP connections went through the queue
    assert m["slipsq_verdicts"][(("verdict", "accept"),)] >= 30
    assert {k: v for k, v in m["slipsq_blocks"].items() if v} == {(("detector", "manual"),): 1.0}
    assert m["slipsq_blocks_active"][()] == 1 and m["slipsq_queue_maxlen"][()] == 1024
    assert m["slipsq_queue_dropped"][()] == 0 and m["slipsq_queue_waiting"][()] >= 0
    assert m["slipsq_process_resident_memory_bytes"][()] > 0
    assert wait_for(lambda: prom.exists() and "slipsq_blocks_active 1.0" in prom.read_text(), 10)
    assert metrics(prom.read_text())["slipsq_blocks"][(("detector", "manual"),)] == 1.0

    # top, from the host (the control socket is a file): the block is listed; u, y lifts it
    t = Term(s.state_dir, 30, 120)
    try:
        t.wait("BLOCKS (1)", f"> {CNC}", "test (by admin:")
        assert not lab.connect("a", CNC, timeout=0.5)
        t.child.send("u")
        t.wait(f"unblock {CNC}? y/n")
        t.child.send("y")
        t.wait(f"unblocked {CNC}", "BLOCKS (0)")
        assert CNC not in s.set_members() and lab.connect("a", CNC)
        assert scrape()["slipsq_unblocks"][(("kind", "admin"),)] == 1.0
        code, _ = s.stop()
        assert code == 0
        t.wait("slipsq is not running")
        t.child.send("q")
        t.child.expect("\x1b\\[\\?1049l", timeout=20)
    finally:
        t.close()
    assert not prom.exists()  # a stopped slipsq leaves no numbers that look current
