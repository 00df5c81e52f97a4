"""Flow files through the real engine, the way `slipsq replay FILE` feeds it: the shared port-scan
captures must give port-scan evidence against the scanner, and the CTU normal day must block no one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slipsq.config import CORE_OPTIONS, Config
from slipsq.detect import DETECTORS
from slipsq.detect.base import Detector
from slipsq.detect.portscan import PortScan
from slipsq.engine import Engine
from slipsq.flow import Flow
from slipsq.output.alerts import Alert
from slipsq.sources.flowfiles import open_flow_source
from slipsq.verdict.replay import ReplayRecorder


class Alerts(ReplayRecorder):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Alert] = []

    def alert(self, alert: Alert) -> None:
        super().alert(alert)
        self.seen.append(alert)


def replay(path: Path, detectors: list[type[Detector]]) -> tuple[Alerts, Engine, Any]:
    opts = list(CORE_OPTIONS)
    for d in detectors:
        opts.extend(d.options)
    sink = Alerts()
    engine = Engine(Config(opts), sinks=[sink], detectors=detectors)
    source = open_flow_source(str(path))
    for item in source:
        engine.flow(item) if isinstance(item, Flow) else engine.app(item)
    engine.finish()
    return sink, engine, source


def scanners(sink: Alerts) -> set[str]:
    return {a.evidence.offender for a in sink.seen if a.evidence.detector == PortScan.name}


def test_port_scan_captures_give_port_scan_evidence(shared_data: Path) -> None:
    cases = {"flows/test11-portscan.binetflow": "10.8.0.69", "zeek/port-scan-horizontal": "10.0.2.112",
             "zeek/port-scan-vertical/conn.log": "192.168.1.9"}
    for rel, scanner in cases.items():
        sink, engine, source = replay(shared_data / rel, [PortScan])
        assert engine.counters.flows == source.counts["flows"] > 0, rel
        assert scanners(sink) == {scanner}, rel


def test_ctu_normal_day_blocks_no_one(shared_data: Path) -> None:
    detectors = list(dict.fromkeys([*DETECTORS, PortScan]))
    sink, engine, source = replay(shared_data / "flows" / "ctu-normal-2013-10-21.binetflow", detectors)
    assert engine.counters.flows == source.counts["flows"] > 2000
    assert sink.blocked_ips == []
