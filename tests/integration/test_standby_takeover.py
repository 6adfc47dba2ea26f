"""Standby replicas: when a worker dies mid-visit, the other one takes over its table partitions from
the standby copies it kept warm, replaying nothing from the changelog, and the visit completes once per
detector."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from pathlib import Path

from stack.cluster import ClusterState
from streams.ops.workers import WorkerPool
from streams.simulate.visits import Visits
from tests.integration.settings import isolated_settings

GROUP = "2026-11-25T08:00:00.000"


def test_a_worker_dies_mid_visit_and_its_standby_takes_over(cluster: ClusterState, tmp_path: Path) -> None:
    """Half the snaps before the kill, half after: 9 results, 1 summary, and no changelog restore on takeover."""
    settings = isolated_settings(cluster, tmp_path, standby_replicas=1)
    pool, visits = WorkerPool(settings, tmp_path / "logs"), Visits(settings)
    try:
        first, second = pool.start("w1"), pool.start("w2")
        for worker in (first, second):
            worker.wait_for("assigned partitions processor=detector", 120)
        visits.next_visit(GROUP)
        visits.raws([visits.raw(GROUP, d, 0, 1) for d in range(9)])
        time.sleep(5.0)  # the standbys read the detectors' progress from the changelogs
        before_kill = len(second.text())
        first.stop(signal.SIGKILL)
        visits.raws([visits.raw(GROUP, d, 1, 2) for d in range(9)])

        results = visits.results(9, timeout=120, settle=3.0)
        summaries = visits.summaries(1, timeout=120, settle=2.0)
        assert Counter(r.detector for r in results) == dict.fromkeys(range(9), 1)
        assert {r.status for r in results} == {"success"}
        assert [s.group_id for s in summaries] == [GROUP]
        takeover = second.text()[before_kill:]
        restores = re.findall(r'restored partitions processor=detector partitions="?\[[0-9, ]+\]"? '
                              r"rows_in_memory=(\d+) from_changelog=(\d+)", takeover)
        assert restores, "the survivor rebalanced onto the dead worker's partitions"
        assert all(int(rows) > 0 for rows, _ in restores), "it holds the detectors' rows"
        assert all(replayed == "0" for _, replayed in restores), "its standby copies were current"
    finally:
        pool.stop_all()
