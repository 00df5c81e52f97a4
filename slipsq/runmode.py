"""The wiring: everything a run of slipsq is built from, built once here for inline and replay alike
(as Suricata's runmode files): the option list and the configuration, the models, the allow list,
the enrichers and the engine. The daemon and replay differ only in their source and in what they do
with the commands the engine returns.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from slipsq import config as configmod
from slipsq import enrich, hooks
from slipsq.allow import AllowList, own_addresses
from slipsq.config import Config, Option
from slipsq.detect import DETECTORS
from slipsq.detect.stratosphere.markov import load_models, shipped_models_dir
from slipsq.engine import Engine
from slipsq.enrich import make_enrichers
from slipsq.errors import ModelError
from slipsq.flow import AppEvent, Flow
from slipsq.output import activity, formats, metrics
from slipsq.records import Query
from slipsq.sink import Fanout, Sink


def all_options() -> list[Option]:
    """Every declared option: the core's, the enrichers', the outputs' (metrics, activity log, alert
    formats, hooks), and each detector's own."""
    opts = (list(configmod.CORE_OPTIONS) + list(enrich.OPTIONS) + list(metrics.OPTIONS)
            + list(activity.OPTIONS) + list(formats.OPTIONS) + list(hooks.OPTIONS))
    for det in DETECTORS:
        opts.extend(det.options)
    return opts


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The configuration file at `path` (None: defaults), validated against every option."""
    return configmod.load(all_options(), path, overrides)


def make_allow(cfg: Config) -> AllowList:
    """The never-block list of a run, inline and replay alike: `allow.ips`, and this machine's own
    addresses unless `allow.own_addresses` is false (a replayed capture of this gateway must not
    block what the gateway itself would refuse to block)."""
    return AllowList(cfg["allow.ips"], own_addresses() if cfg["allow.own_addresses"] else [])


def resolve_models_dir(cli_dir: str | None, configured: str | None) -> Path:
    """The models folder: --models, else config `markov.models`, else $SLIPSQ_MODELS, else the
    models shipped with slipsq (markov.shipped_models_dir)."""
    for candidate in (cli_dir, configured, os.environ.get("SLIPSQ_MODELS")):
        if candidate:
            return Path(candidate)
    shipped = shipped_models_dir()
    if shipped.is_dir():
        return shipped
    raise ModelError("no models folder found: pass --models DIR (see 'slipsq models import')")


def load_engine_models(cli_dir: str | None, cfg: Config) -> list[Any]:
    """The Markov models (ModelError when they are missing or unusable)."""
    return list(load_models(resolve_models_dir(cli_dir, cfg["markov.models"] or None)))


def build_engine(cfg: Config, models: Sequence[Any], allow: AllowList, *, export_flows: bool = False,
                 on_error: Callable[[str, Exception], None] | None = None, export_queries: bool = False,
                 table: Any = None) -> Engine:
    """The engine of a run: every registered detector, the models, the allow list, the enrichers.
    `table`: None for the flow table (compiled or twin), or the workers' (multiqueue.RemoteTable)."""
    return Engine(cfg, models=models, allow=allow, enrichers=make_enrichers(cfg),
                  export_flows=export_flows, on_error=on_error, export_queries=export_queries, table=table)


class Offline:
    """An engine driven offline (replay, tests, tools): every command it returns is carried to the
    sinks at once, in order. Sources (sources/pcap.py) drive it as they would the engine: they feed
    `table` and call `advance`; flow files call `flow` and `app`."""

    def __init__(self, engine: Engine, sinks: Sequence[Sink] = ()) -> None:
        self.engine = engine
        self.apply = Fanout(sinks)
        engine.export_flows = engine.export_flows or self.apply.wants(Flow)
        engine.export_queries = engine.export_queries or self.apply.wants(Query)

    @property
    def table(self) -> Any:
        return self.engine.table

    def packet(self, buf: bytes, ts: float, linktype: int) -> int:
        verdict = self.engine.packet(buf, ts, linktype)
        self.apply(self.engine.take())
        return verdict

    def advance(self, now: float) -> None:
        commands = self.engine.advance(now)
        if commands:  # most calls (one per closed flow in a replay) decide nothing
            self.apply(commands)

    def step(self, now: float, app: list[tuple[float, bytes]], flows: list[Flow]) -> None:
        """advance(now), the table's hand-up given (Engine.step)."""
        commands = self.engine.step(now, app, flows)
        if commands:
            self.apply(commands)

    def flow(self, flow: Flow) -> None:
        self.apply(self.engine.flow(flow))

    def app(self, event: AppEvent) -> None:
        self.apply(self.engine.app(event))

    def finish(self) -> None:
        self.apply(self.engine.finish())
