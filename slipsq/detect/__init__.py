"""Detectors: one module each, collected in one explicit, ordered list.

A new detector is a new module (see README.md beside this file for the anatomy) plus one line here.
"""

from __future__ import annotations

from slipsq.detect.arpscan import ArpScan
from slipsq.detect.base import Detector
from slipsq.detect.beacon import Beacon
from slipsq.detect.bruteforce import BruteForce
from slipsq.detect.dga import DGA
from slipsq.detect.dnstunnel import DnsTunnel
from slipsq.detect.exfil import Exfil
from slipsq.detect.longconn import LongConnection
from slipsq.detect.p2p import P2P
from slipsq.detect.portscan import PortScan
from slipsq.detect.reconnect import Reconnect
from slipsq.detect.stratosphere.detector import StratosphereDetector
from slipsq.detect.threatintel import ThreatIntel
from slipsq.detect.unknownport import UnknownPort

DETECTORS: list[type[Detector]] = [
    StratosphereDetector,
    ThreatIntel,
    PortScan,
    P2P,  # before Beacon: beacon asks it which hosts run P2P software
    Beacon,
    BruteForce,
    ArpScan,
    LongConnection,
    Reconnect,
    UnknownPort,
    Exfil,
    DGA,
    DnsTunnel,
]
