"""Flow files through the real engine, the way `slipsq replay FILE` feeds it: the shared port-scan
captures must give port-scan evidence against the scanner, and the CTU normal day must block no one."""

from __future__ import annotations

from pathlib import Path

from flowgen import Recorder, config

from slipsq.detect import DETECTORS
from slipsq.detect.base import Detector
from slipsq.detect.portscan import PortScan
from slipsq.engine import Engine
from slipsq.flow import Flow
from slipsq.runmode import Offline
from slipsq.sources.flowfiles import FlowSource, open_flow_source


def replay(path: Path, detectors: list[type[Detector]]) -> tuple[Recorder, Offline, FlowSource]:
    """The file through the engine in input order, as `slipsq replay FILE` feeds it."""
    sink = Recorder()
    engine = Offline(Engine(config(detectors), detectors=detectors), [sink])
    source = open_flow_source(str(path))
    for item in source:
        engine.flow(item) if isinstance(item, Flow) else engine.app(item)
    engine.finish()
    return sink, engine, source


def scanners(sink: Recorder) -> set[str]:
    return {a.evidence.offender for a in sink.by(PortScan.name)}


def test_port_scan_captures_give_port_scan_evidence(shared_data: Path) -> None:
    cases = {"flows/test11-portscan.binetflow": "10.8.0.69", "zeek/port-scan-horizontal": "10.0.2.112",
             "zeek/port-scan-vertical/conn.log": "192.168.1.9"}
    for rel, scanner in cases.items():
        sink, engine, source = replay(shared_data / rel, [PortScan])
        assert engine.engine.counters.flows == source.counts["flows"] > 0, rel
        assert scanners(sink) == {scanner}, rel


def test_ctu_normal_day_blocks_no_one(shared_data: Path) -> None:
    detectors = list(dict.fromkeys([*DETECTORS, PortScan]))
    sink, engine, source = replay(shared_data / "flows" / "ctu-normal-2013-10-21.binetflow", detectors)
    assert engine.engine.counters.flows == source.counts["flows"] > 2000
    assert sink.blocked_ips == []
