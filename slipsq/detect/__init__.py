"""Detectors: one module each, collected in one explicit, ordered list.

A new detector is a new module (see README.md beside this file for the anatomy) plus one line here.
"""

from __future__ import annotations

from slipsq.detect.base import Detector
from slipsq.detect.stratosphere import StratosphereDetector

DETECTORS: list[type[Detector]] = [
    StratosphereDetector,
]
