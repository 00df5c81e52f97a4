"""The capture link types slipsq reads (pcap LINKTYPE_ numbers), in one place for the readers and
both parsers (`decode.py` and its compiled twin `_decode.pxd`, which spells the same numbers).

Constants only: the compiled replay path imports this, not `decode`, so it never loads dpkt (a
tenth of a second of every `slipsq replay` start; dpkt is the reference parser of the pure path).
"""

from __future__ import annotations

ETHERNET, RAW, LINUX_SLL, LINUX_SLL2, IPV4, IPV6 = 1, 101, 113, 276, 228, 229
RAW_TYPES = frozenset((RAW, 12, 14))  # raw IP: the version nibble says which
