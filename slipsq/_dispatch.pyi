"""Type stub of the compiled per-flow loop (slipsq/_dispatch.pyx); its twin is slipsq/dispatch.py."""

from slipsq import dispatch as _twin

class FlowCalls(_twin.FlowCalls): ...
