"""slipsq: a behavioral intrusion prevention system for Linux gateways.

Follow one packet through the package in pipeline order: `sources/` → `decode.py` (compiled:
`_decode.pxd`) → `flowtable.py` (compiled: `_flowtable.pyx`) → `detect/` → `judge.py` → `verdict/`,
wired by `engine.py`.
"""

__version__ = "0.1.0"
