"""Type stub of the compiled worker-message opcode check (slipsq/_wirescan.pyx); its twin is
slipsq/mqwire.py (scan)."""

def scan(data: bytes) -> str | None: ...
