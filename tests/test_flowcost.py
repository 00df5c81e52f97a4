"""bench/flowcost.py's arithmetic for --processes: which callgrind count is which process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from flowcost import pipeline_work


def test_each_process_is_told_apart_and_the_start_up_taken_off() -> None:
    # engine 1,088 M, the table process 795 M, its sleeping snapshots 488 M (forked at once) and
    # 754 M (forked later): every count includes the 488 M run before the first fork
    counts = {100: 1_088, 102: 795, 103: 488, 104: 754}
    assert pipeline_work(counts, 100) == (488, 600, 307)


def test_the_order_of_the_pids_does_not_matter() -> None:
    # pids wrap: the engine's may be the largest
    assert pipeline_work({900: 50, 7: 30, 8: 10}, 900) == (10, 40, 20)


@pytest.mark.parametrize("counts", [{100: 5}, {100: 5, 101: 3}, {101: 3, 102: 2}])
def test_a_run_without_a_table_process_and_its_snapshot_is_refused(counts: dict[int, int]) -> None:
    with pytest.raises(ValueError, match="engine process and at least two children"):
        pipeline_work(counts, 100)
