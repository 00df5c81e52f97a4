"""The live source: NFQUEUE via the compiled `sources/_nfq.pyx` (per-packet work stays in C), plus the
checks that turn a machine that cannot run inline into one clear line, and the kernel's counters.

This module reads the clock for the packets it hands the table (wall time, in `_nfq`); it decides
nothing: verdicts come from the flow table, blocks from the judge.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from slipsq.errors import SystemSetupError
from slipsq.verdict.firewall import QueueCounters, queue_counters

DEFAULT_MAXLEN = 1024  # config queue.maxlen
# bytes copied per packet: headers plus enough payload for DNS, TLS ClientHello and HTTP Host
# (the kernel's byte counts come from the IP header, so big GSO packets are counted whole)
COPY_RANGE = 4096

# what fail-open hides, said once in `status`
FAIL_OPEN_NOTE = ("with fail-open, packets the kernel accepted uninspected because the queue was full "
                  "are counted nowhere (not in queue_dropped); a 'waiting' count near maxlen is the hint")


def check_system() -> None:
    """Refuse early, with a reason, on a machine that cannot run inline."""
    if os.geteuid() != 0:
        raise SystemSetupError("inline mode needs root (it binds an NFQUEUE and edits the firewall)")
    if not os.path.exists("/proc/net/netfilter"):
        raise SystemSetupError("this kernel has no netfilter (/proc/net/netfilter is missing)")


@dataclass(frozen=True)
class QueueInfo:
    num: int
    maxlen: int
    copy_range: int
    rcvbuf: int
    fail_open: bool
    gso: bool


class NfqueueSource:
    """One bound queue feeding `table`. `run()` returns to the caller often (see _nfq.Queue.run)."""

    def __init__(self, num: int, table: Any, maxlen: int = DEFAULT_MAXLEN,
                 copy_range: int = COPY_RANGE, gso: bool = True, bypass_mark: int = 0,
                 repeat_mark: int = 0) -> None:
        try:
            from slipsq.sources import _nfq
        except ImportError as e:
            raise SystemSetupError(f"inline mode is not built here ({e}); build with "
                                   "'python setup.py build_ext --inplace' after installing "
                                   "libnetfilter-queue-dev") from None
        self.num = num
        try:
            self.q = _nfq.Queue(num, table, maxlen=maxlen, copy_range=copy_range, gso=gso,
                                bypass_mark=bypass_mark, repeat_mark=repeat_mark)
        except BlockingIOError:
            raise SystemSetupError(f"another process (slipsq?) is bound to queue {num}; "
                                   "stop it or use another --queue") from None
        except PermissionError as e:
            raise SystemSetupError(f"cannot open NFQUEUE: {e} (need root and the nfnetlink_queue module: "
                                   "modprobe nfnetlink_queue)") from None
        except OSError as e:
            raise SystemSetupError(f"cannot bind NFQUEUE {num}: {e}") from None
        self.info = QueueInfo(num, maxlen, copy_range, int(self.q.rcvbuf), bool(self.q.fail_open),
                              bool(self.q.gso))

    def run(self, budget: int, timeout: float, fds: Sequence[int] = ()) -> int:
        return int(self.q.run(budget, timeout, tuple(fds)))

    def drain(self, seconds: float = 0.5) -> int:
        """Verdict whatever is still queued (after the diversion is gone), for up to `seconds`."""
        total = 0
        for _ in range(max(1, int(seconds / 0.05))):
            n = self.run(65536, 0.05)
            total += n
            if n == 0:
                break
        return total

    def stats(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.q.stats().items()}

    def kernel(self) -> QueueCounters | None:
        return queue_counters().get(self.num)

    def close(self) -> None:
        self.q.close()
