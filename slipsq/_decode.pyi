"""Type stub of the compiled decoder's test face (slipsq/_decode.pyx); its twin is slipsq/decode.parse."""

def parse_packet(
    buf: bytes, linktype: int
) -> tuple[int, bytes, bytes, int, int, int, int, int, int, int, bool, bool, int, int]: ...
