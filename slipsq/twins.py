"""Which implementation runs: the compiled core (Cython) or its readable pure-Python twins.

Every compiled module but the NFQUEUE source (`sources/_nfq`, which needs a kernel) has a readable
twin with the same interface, held equal by differential tests: `_flowtable` (flowtable.py; its
inline decoder `_decode.pxd`: decode.py), `sources/_pcap` (sources.pcap.PureCapture; its
loops: `feed_steps`, one-process replay's, sources.pcap.feed_steps; `feed_plain`, the replay
pipeline's table process's, pipeline.feed_plain), `_appdecode`
(decode.app_events), `detect/stratosphere/_letters` (letters.py, markov.py), `detect/_portscan`
(portscan.Counts and Tally, inuse.ServersInUse), `detect/_beacon` (beacon.Tuples, beacon.Intake),
`detect/_p2p` (p2p.Intake), `detect/_bruteforce` (bruteforce.Intake, _Count), `detect/_exfil`
(exfil.Intake, _Pair), `detect/_reconnect` (reconnect.Intake), `detect/_dns` (dga.Intake,
unknownport.DnsIntake), `_dispatch` (dispatch.FlowCalls, the engine's per-flow loop; its
run_steps, the pipeline's engine-process loop: dispatch.run_steps), `_wirescan` (mqwire.scan, the
worker messages' opcode check) and `_lru` (lru.touch and lru.put, on an OrderedDict).
This is the one place that chooses between them. SLIPSQ_PURE_PYTHON=1 asks for the twins; otherwise
the compiled module must be there, and a missing one is a SystemSetupError that says how to build
it, never a silent fall-back to code that is 10x slower. The choice is read at each call (tests
switch it per test) and reported by `implementation()` in `slipsq status` and the replay summary.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

from slipsq.errors import SystemSetupError

ENV = "SLIPSQ_PURE_PYTHON"


def pure() -> bool:
    """True when the readable twins were asked for (SLIPSQ_PURE_PYTHON=1)."""
    return os.environ.get(ENV) == "1"


def implementation() -> str:
    """"compiled" or "pure-python": what the engine, the table and the detectors run now."""
    return "pure-python" if pure() else "compiled"


def compiled(name: str) -> ModuleType | None:
    """The compiled module `name` (e.g. "slipsq._flowtable"), or None when the twins were asked for.
    SystemSetupError when it was not built."""
    if pure():
        return None
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise SystemSetupError(
            f"slipsq's compiled core is not built ({name}: {e}); run 'make build' (or "
            f"'python setup.py build_ext --inplace'), or set {ENV}=1 to run the slower readable twins"
        ) from None
