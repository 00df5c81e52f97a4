"""An admin's unblock is a verdict: for `judge.pardon` (a day) the same evidence is reported, with
why, but does not block the address again (`slipsq unblock --pardon` sets the length).

Before: `slipsq unblock` forgot the judge's evidence, but the detectors went on seeing what they saw,
so a periodic service blocked by mistake (a camera's uploads every minute, a beacon-like telemetry
call) was blocked again within the hour, for twice as long: the admin's fix did not hold.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
import time
from pathlib import Path

import pytest

from slipsq.allow import AllowList
from slipsq.config import CORE_OPTIONS, Config
from slipsq.control import Admin, parse_pardon
from slipsq.engine import Engine
from slipsq.errors import InputError
from slipsq.judge import Judge
from slipsq.records import CRITICAL, Block, Evidence, Unblock
from slipsq.runmode import Offline, load_config, load_engine_models
from slipsq.sink import Sink
from slipsq.sources.pcap import replay_capture
from slipsq.verdict.store import BlockStore
from tools import gen_corpus
from tools.gencapture import write_capture

BAD = "203.0.113.66"


def _ev(ts: float, ip: str = BAD) -> Evidence:
    return Evidence(ts=ts, detector="beacon", offender=ip, src_ip="192.168.1.66", dst_ip=ip, dst_port=443,
                    proto="tcp", description="d", threat_level=CRITICAL, confidence=1.0, key=f"k{ts}")


def test_a_pardon_keeps_evidence_from_blocking_until_it_ends() -> None:
    j = Judge(Config(CORE_OPTIONS), AllowList())
    assert j.add(_ev(10.0)).action == "block"
    j.forget(BAD)
    j.pardon(BAD, 1000.0)
    d = j.add(_ev(20.0))
    assert d.action == "alert" and d.reason.startswith(f"not blocked: an admin unblocked {BAD}, pardoned for ")
    assert j.add(_ev(999.0)).action == "alert"
    assert j.add(_ev(1000.0)).action == "block"  # it ended: the evidence blocks again
    assert BAD not in j.pardoned()


def test_an_admins_block_ends_the_pardon_and_pardons_are_bounded() -> None:
    j = Judge(Config(CORE_OPTIONS, {"judge.max_blocks": 3}), AllowList())
    j.pardon(BAD, math.inf)
    assert "pardoned forever" in j.add(_ev(5.0)).reason
    j.restore(BAD, 100.0)  # `slipsq block`
    assert BAD not in j.pardoned()
    for k in range(5):
        j.pardon(f"198.51.100.{k}", math.inf)
    assert list(j.pardoned()) == ["198.51.100.2", "198.51.100.3", "198.51.100.4"]  # the oldest forgotten


def test_a_pardon_covers_the_detectors_that_blocked_not_new_behaviour() -> None:
    """Found by review: a host unblocked for a beacon-like upload that then scanned the LAN was not
    blocked for the scan. The pardon covers the detectors of the block it lifted."""
    j = Judge(Config(CORE_OPTIONS), AllowList())
    j.pardon(BAD, math.inf, frozenset({"beacon"}))
    d = j.add(_ev(10.0))
    assert d.action == "alert" and "pardoned of beacon evidence forever" in d.reason
    scan = Evidence(ts=11.0, detector="portscan", offender=BAD, src_ip=BAD, dst_ip="192.168.1.0", dst_port=445,
                    proto="tcp", description="scan", threat_level=CRITICAL, confidence=1.0, key="scan")
    assert j.add(scan).action == "block"


@pytest.mark.parametrize(("text", "seconds"), [("1d", 86400.0), ("12h", 43200.0), ("0", 0.0), ("none", 0.0),
                                               ("forever", math.inf), ("86400.0", 86400.0)])
def test_pardon_lengths(text: str, seconds: float) -> None:
    assert parse_pardon(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1h", "3651d"])
def test_a_pardon_that_is_no_length_is_refused(text: str) -> None:
    with pytest.raises(InputError, match="pardon"):
        parse_pardon(text)


class _Admin(Sink):
    """Unblocks the C&C the moment it is first blocked, as an admin who thinks it is a mistake."""

    def __init__(self, pardon: float | None) -> None:
        self.engine: Engine | None = None
        self.pardon = pardon
        self.blocks: list[float] = []
        self.unblocks: list[Unblock] = []

    def block(self, block: Block) -> None:
        if block.ip != BAD:
            return
        self.blocks.append(block.ts)
        if len(self.blocks) == 1:
            assert self.engine is not None
            out = self.engine.unblock(BAD, block.ts, "a camera, not a C&C", "admin:test", self.pardon)
            self.unblocks += [c for c in out if isinstance(c, Unblock)]


def _replay_unblocking(tmp_path: Path, pardon: float | None) -> _Admin:
    cap = tmp_path / "beacon.pcap"
    write_capture(gen_corpus.BY_NAME["beacon-60s-10%"].build(random.Random(1)), cap)
    cfg = load_config()
    admin = _Admin(pardon)
    run = Offline(Engine(cfg, models=load_engine_models(None, cfg)), [admin])
    admin.engine = run.engine
    replay_capture(run, cap)
    run.apply(run.engine.finish())
    return admin


def test_an_unblocked_beacon_is_not_blocked_again_within_the_pardon(tmp_path: Path) -> None:
    admin = _replay_unblocking(tmp_path, None)  # judge.pardon: a day, longer than the capture
    assert len(admin.blocks) == 1 and admin.unblocks[0].pardon_until == admin.blocks[0] + 86400.0


def test_without_a_pardon_the_same_beacon_is_blocked_again(tmp_path: Path) -> None:
    """The control: the beacon goes on after the unblock, and blocks again when nothing pardons it."""
    admin = _replay_unblocking(tmp_path, 0.0)
    assert len(admin.blocks) >= 2 and admin.unblocks[0].pardon_until is None


def test_the_store_keeps_a_pardon_for_the_next_start(tmp_path: Path) -> None:
    store = BlockStore(tmp_path)
    admin = Admin(store, None, AllowList(), 3600.0, default_pardon=7200.0)
    admin.block(BAD, 3600.0)
    admin.unblock(BAD)
    ((until, covers),) = store.pardons(0.0).values()
    assert until > 7000.0 and covers == {"manual"}  # now + 2 h (the config's judge.pardon), what blocked it
    assert store.pardons(until + 1) == {}  # ended ones are removed
    admin.block(BAD, 3600.0)
    admin.unblock(BAD, pardon=math.inf)
    assert store.pardons(1e12) == {BAD: (math.inf, frozenset({"manual"}))}
    admin.block(BAD, 3600.0)  # an admin's block ends it
    assert store.pardons(0.0) == {}
    # damaged rows are skipped and named, not an error
    db = sqlite3.connect(tmp_path / "blocks.sqlite3")
    rows: list[tuple[str, object]] = [(BAD, "soon"), ("not an address", 9e9), ("::FFFF:203.0.113.66", 9e9),
                                      ("2001:DB8::1", 9e9)]
    for ip, when in rows:
        db.execute("INSERT INTO pardons VALUES (?, ?, ?, ?)", (ip, 1.0, when, ""))
    db.commit()
    assert store.pardons(0.0) == {} and len(store.damaged) == 4


def test_the_daemon_restores_pardons_at_start(tmp_path: Path) -> None:
    from tests.fakedaemon import KernelFreeDaemon

    store = BlockStore(tmp_path)
    Admin(store, None, AllowList(), 3600.0).block(BAD, 3600.0)
    Admin(store, None, AllowList(), 3600.0).unblock(BAD, pardon=math.inf)
    store.close()
    d = KernelFreeDaemon(tmp_path)
    try:
        d.restore_blocks(time.time())  # as Daemon.start does, before its threads run
        assert d.engine.judge.pardoned() == {BAD: (math.inf, frozenset({"manual"}))}
    finally:
        d.close()


def test_unblock_through_the_daemon_says_and_keeps_its_pardon(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from slipsq.cli import main
    from tests.fakedaemon import running_daemon

    with running_daemon(tmp_path) as d:
        d.judged_block(BAD, "beacon")
        r = CliRunner().invoke(main, ["unblock", BAD, "--pardon", "12h", "--state-dir", str(tmp_path)])
        assert r.exit_code == 0, r.output
        assert r.output.strip() == f"unblocked {BAD}; pardon: 12h"
        ((until, covers),) = d.engine.judge.pardoned().values()
        assert abs(until - (time.time() + 43200)) < 60 and covers == {"beacon"}  # what blocked it
        assert d.store.pardons(time.time()) == {BAD: (until, covers)}  # and the store keeps it
        r = CliRunner().invoke(main, ["blocks", "--state-dir", str(tmp_path)])  # and the admin sees it
        assert "pardoned (unblocked by an admin; `slipsq block IP` ends one): 1" in r.output
        assert re.search(rf"{re.escape(BAD)} +11h5\dm  of beacon evidence", r.output), r.output
        d.judged_block(BAD, "beacon")
        r = CliRunner().invoke(main, ["unblock", BAD, "--state-dir", str(tmp_path)])
        assert r.output.strip() == (f"unblocked {BAD}; pardon: 1d (for good: --pardon forever, or put it in "
                                    "allow.ips)")  # judge.pardon
        r = CliRunner().invoke(main, ["unblock", BAD, "--pardon", "later", "--state-dir", str(tmp_path)])
        assert r.exit_code == 2 and "is not a pardon" in r.output
