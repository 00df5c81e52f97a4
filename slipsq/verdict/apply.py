"""Carrying out the engine's block commands: the kernel (one `ipset restore`) and the block store
(one transaction) for a whole batch. The daemon's worker thread calls it for every batch the engine
returns; the admin commands call it when no daemon runs; the start-up restore calls it once. So a
judged, a manual and a restored block take the same way.

`plan` is pure (what the kernel must add and delete); `carry_out` does the I/O and never raises for
the kernel or the store failing: it says what failed in the Outcome, so the caller can retry and no
block is ever lost. It decides nothing: protected addresses are refused by the firewall, which says
why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from slipsq.errors import SlipsqError
from slipsq.records import Block, Command, Unblock
from slipsq.verdict.firewall import Firewall
from slipsq.verdict.store import Block as Stored
from slipsq.verdict.store import BlockStore

Change = Block | Unblock


def changes(commands: Sequence[Command]) -> list[Change]:
    """The block and unblock commands of a batch, in order."""
    return [c for c in commands if isinstance(c, (Block, Unblock))]


def plan(batch: Sequence[Change], now: float) -> tuple[list[tuple[str, float | None]], list[str]]:
    """What the kernel must do for `batch` at `now`: (adds as (ip, seconds left or None), deletes).
    Only each IP's last command counts (block then unblock in one batch is an unblock); a block that
    has already run out by `now` is a delete."""
    last: dict[str, Change] = {}
    for c in batch:
        last.pop(c.ip, None)  # keep the order of the last commands
        last[c.ip] = c
    adds: list[tuple[str, float | None]] = []
    dels: list[str] = []
    for ip, c in last.items():
        if isinstance(c, Unblock):
            dels.append(ip)
        elif c.expires is None:
            adds.append((ip, None))
        elif c.expires > now:
            adds.append((ip, c.expires - now))
        else:
            dels.append(ip)
    return adds, dels


@dataclass
class Outcome:
    stored: dict[str, Stored] = field(default_factory=dict)  # ip -> its stored record, per block written
    refused: dict[str, str] = field(default_factory=dict)  # ip -> why the firewall refused it
    kernel_error: str = ""  # the kernel update failed: retry `plan` later
    store_error: str = ""  # the store transaction failed: retry the batch's store part later


def carry_out(fw: Firewall | None, store: BlockStore | None, batch: Sequence[Change], now: float) -> Outcome:
    """Kernel first (a block must bite at once), then the store. A block the firewall refuses is not
    stored. Either part failing is reported in the Outcome, never raised."""
    out = Outcome()
    if not batch:
        return out
    if fw is not None:
        adds, dels = plan(batch, now)
        try:
            out.refused = dict(fw.update(adds, dels))
        except SlipsqError as e:
            out.kernel_error = e.message
    if store is not None:
        keep = [c for c in batch if c.ip not in out.refused]
        try:
            out.stored = store.write(keep)
        except Exception as e:  # sqlite3.Error, OSError (disk full, store unreadable): retried by the caller
            out.store_error = f"{type(e).__name__}: {e}"
    return out
