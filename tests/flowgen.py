"""Scripted traffic for detector tests: Flow and AppEvent builders, a runner that feeds them through
the real Engine (with its real flow table, which flows from scripts and files skip, as flow files do)
and a ReplayRecorder sink, readers for the shared Argus/Zeek files, and capture replay.

Every scenario is deterministic (seeded random.Random). Flows are returned in start order, the way a
flow-file source feeds the engine.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from slipsq.config import CORE_OPTIONS, Config
from slipsq.detect.base import Detector
from slipsq.engine import Engine
from slipsq.flow import AppEvent, Flow
from slipsq.records import Alert
from slipsq.runmode import Offline
from slipsq.verdict.replay import ReplayRecorder

T0 = 1_699_999_200.0  # an hour boundary (472222 x 3600), so judge windows are easy to reason about


@dataclass
class Recorder(ReplayRecorder):
    """ReplayRecorder that also keeps every alert, to assert on descriptions and scores."""

    seen: list[Alert] = field(default_factory=list)

    def alert(self, alert: Alert) -> None:
        super().alert(alert)
        self.seen.append(alert)

    def by(self, detector: str) -> list[Alert]:
        return [a for a in self.seen if a.evidence.detector == detector]


def config(detectors: Sequence[type[Detector]], **values: Any) -> Config:
    opts = list(CORE_OPTIONS)
    for d in detectors:
        opts.extend(d.options)
    return Config(opts, {k.replace("__", "."): v for k, v in values.items()})


def run(detectors: Sequence[type[Detector]], flows: Iterable[Flow] = (), events: Iterable[AppEvent] = (),
        cfg: Config | None = None, own: Sequence[str] = ()) -> tuple[Recorder, Offline]:
    """Feed flows (by start) and app events (by ts) through a real Engine in time order."""
    from slipsq.allow import AllowList

    cfg = cfg or config(detectors)
    rec = Recorder()
    eng = Offline(Engine(cfg, allow=AllowList(cfg["allow.ips"], own), detectors=list(detectors)), [rec])
    items: list[tuple[float, int, Flow | AppEvent]] = [(f.start, 1, f) for f in flows]
    items += [(e.ts, 0, e) for e in events]
    items.sort(key=lambda x: (x[0], x[1]))
    for ts, _, item in items:
        if isinstance(item, Flow):
            eng.flow(item)
        else:
            eng.advance(ts)
            eng.app(item)
    eng.finish()
    return rec, eng


def flow(start: float, saddr: str, daddr: str, dport: int, proto: str = "tcp", *, dur: float = 0.2,
         sbytes: int = 600, dbytes: int = 3000, sport: int = 40000, state: str = "", dpkts: int | None = None,
         closed_by: str = "fin") -> Flow:
    spkts = max(1, sbytes // 300)
    if dpkts is None:
        dpkts = max(1, dbytes // 500) if dbytes else 0
    if not state:
        state = ("SF" if dpkts else "S0") if proto == "tcp" else ("CON" if dpkts else "INT")
    return Flow(start, start + dur, proto, saddr, sport, daddr, dport, spkts, dpkts, sbytes, dbytes,
                state=state, closed_by=closed_by)


def beacon(src: str, dst: str, port: int, interval: float, n: int, *, jitter: float = 0.0,
           size_jitter: float = 0.0, proto: str = "tcp", start: float = T0, seed: int = 1,
           sbytes: int = 700, dbytes: int = 5000) -> list[Flow]:
    """n connections at `interval` ± jitter×interval (uniform), sizes ± size_jitter (uniform)."""
    rng = random.Random(seed)
    out, t = [], start
    for i in range(n):
        k = 1 + rng.uniform(-size_jitter, size_jitter)
        out.append(flow(t, src, dst, port, proto, sport=40000 + i % 20000, sbytes=int(sbytes * k),
                        dbytes=int(dbytes * k)))
        t += interval * (1 + rng.uniform(-jitter, jitter))
    return out


def browsing(src: str, servers: Sequence[str], n: int, *, port: int = 443, start: float = T0,
             mean_gap: float = 20.0, seed: int = 2) -> list[Flow]:
    """A person browsing: Poisson-ish connection starts, bursts of parallel connections, varied sizes."""
    rng = random.Random(seed)
    out, t = [], start
    for i in range(n):
        t += rng.expovariate(1 / mean_gap)
        srv = rng.choice(servers)
        for j in range(rng.choice((1, 1, 2, 4, 6))):
            out.append(flow(t + j * 0.01, src, srv, port, sport=30000 + (i * 7 + j) % 30000,
                            dur=rng.uniform(0.1, 30), sbytes=rng.randint(500, 3000),
                            dbytes=int(rng.lognormvariate(9, 1.5))))
    return out


def sort_flows(*groups: Iterable[Flow]) -> list[Flow]:
    return sorted((f for g in groups for f in g), key=lambda f: f.start)


def read_flow_file(path: Any, fmt: str) -> list[Flow]:
    """The flows of a flow file read by slipsq's own reader (as `slipsq replay` reads it), in start order."""
    from slipsq.sources.flowfiles import open_flow_source

    return sorted((f for f in open_flow_source(str(path), fmt) if isinstance(f, Flow)), key=lambda f: f.start)


def read_binetflow(path: Any) -> list[Flow]:
    """Argus binetflow CSV (the shared captures), in start order."""
    return read_flow_file(path, "binetflow")


def read_zeek_conn(path: Any) -> list[Flow]:
    """Zeek conn.log, TSV with a #fields header or JSON lines, in start order."""
    return read_flow_file(path, "zeek")


DATA = Path(__file__).resolve().parent / "data"


def replay_pcap(path: Any, detectors: Sequence[type[Detector]], cfg: Config | None = None) -> Recorder:
    """A capture through the real engine, decoder and flow table (as `slipsq replay` does)."""
    from slipsq.sources.pcap import replay_capture

    rec = Recorder()
    eng = Offline(Engine(cfg or config(detectors), detectors=list(detectors)), [rec])
    replay_capture(eng, path)
    eng.finish()
    return rec


def write_scenario(path: Path, *streams: Iterable[tuple[float, bytes]]) -> Path:
    """A pcap (Ethernet) of the project's scenario builders' packets (tools.gen_scenarios), merged in time order."""
    from tools.gen_frames import CaptureWriter
    from tools.gen_scenarios import merge

    with path.open("wb") as fh:
        w = CaptureWriter(fh)
        w.write_all(merge(*streams))
        w.flush()
    return path


def my_detectors() -> list[type[Detector]]:
    """Every registered detector but the Markov one (its evidence is another engineer's to pin)."""
    from slipsq.detect import DETECTORS

    return [d for d in DETECTORS if d.name != "stratosphere"]


@cache
def bundled_alerts() -> tuple[Alert, ...]:
    """Every alert of the bundled captures (tests/data/*.pcap) under every detector but the Markov
    one: real alerts, blocks among them, for the output-format tests."""
    out: list[Alert] = []
    for pcap in sorted(DATA.glob("*.pcap")):
        out += replay_pcap(pcap, my_detectors()).seen
    return tuple(out)


def hostile_alerts() -> Any:
    """A hypothesis strategy of alerts whose every text field an attacker may shape (descriptions
    naming DNS names or SNI of any bytes: quotes, backslashes, brackets, newlines, NUL, emoji, and
    lone surrogates, which a JSON input such as Suricata's eve.json may carry as a "\\udcff" escape),
    with IPv4 and IPv6 ends, odd ports and protocols, with and without a flow, alert or block."""
    from hypothesis import strategies as st

    # hypothesis leaves surrogates out of text() unless asked: put one in the middle of a third of them
    text = st.tuples(st.text(max_size=30), st.sampled_from(["", "", "\udcff", "\ud800"]),
                     st.text(max_size=30)).map("".join)
    ips = st.one_of(st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(str))
    ports = st.integers(0, 65535)
    protos = st.sampled_from(["tcp", "udp", "icmp", "ipv6-icmp", "arp", "sctp"])
    times = st.floats(1e9, 2e9, allow_nan=False)

    @st.composite
    def build(draw: Any) -> Alert:
        from slipsq.records import Decision, Evidence

        src, dst, proto = draw(ips), draw(ips), draw(protos)
        flows: tuple[Flow, ...] = ()
        ts = draw(times)
        if draw(st.booleans()):
            start = ts - draw(st.floats(0, 3600))
            flows = (Flow(start, ts, proto, src, draw(ports), dst, draw(ports), spkts=draw(st.integers(0, 10**6)),
                          dpkts=draw(st.integers(0, 10**6)), sbytes=draw(st.integers(0, 10**9)),
                          dbytes=draw(st.integers(0, 10**9))),)
        detector = draw(st.one_of(st.sampled_from(["portscan", "beacon", "dga", "stratosphere"]), text))
        ev = Evidence(ts, detector, draw(st.sampled_from([src, dst])), src, dst, draw(ports), proto, draw(text),
                      draw(st.sampled_from([0.0, 0.2, 0.5, 0.8, 1.0])), draw(st.floats(0, 1)), label=draw(text),
                      flows=flows)
        block = draw(st.booleans())
        decision = Decision("block" if block else "alert", ev.offender if block else "",
                            draw(st.sampled_from([0.0, 3600.0, 14400.0])) if block else 0.0,
                            draw(st.floats(0, 10)), draw(text))
        return Alert(ev, decision, decided=ts + draw(st.floats(0, 60)))

    return build()


def both_twins(module: str) -> Any:
    """An autouse fixture that runs every test of a test module on the readable twin (py) and on the
    compiled `module` (c); assign it to a name in the test module."""
    import pytest

    @pytest.fixture(autouse=True, params=["py", "c"])
    def implementation(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
        if request.param == "py":
            monkeypatch.setenv("SLIPSQ_PURE_PYTHON", "1")
        else:
            pytest.importorskip(module, reason="the compiled extension is not built")
            monkeypatch.delenv("SLIPSQ_PURE_PYTHON", raising=False)
        return str(request.param)

    return implementation
