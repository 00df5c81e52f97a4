"""The wiring: everything a run of slipsq is built from, built once here for inline and replay alike
(as Suricata's runmode files): the option list and the configuration, the models, the allow list,
the enrichers and the engine. The daemon and replay differ only in their source and in what they do
with the commands the engine returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from slipsq import config as configmod
from slipsq import enrich
from slipsq.config import Config, Option
from slipsq.detect import DETECTORS


def all_options() -> list[Option]:
    """Every declared option: the core's, the enrichers', and each detector's own."""
    opts = list(configmod.CORE_OPTIONS) + list(enrich.OPTIONS)
    for det in DETECTORS:
        opts.extend(det.options)
    return opts


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """The configuration file at `path` (None: defaults), validated against every option."""
    return configmod.load(all_options(), path, overrides)
