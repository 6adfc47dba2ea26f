"""A full LSSTCam visit over two workers, and a worker killed mid-visit."""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

from stack.cluster import ClusterState
from streams.ops.workers import WorkerPool
from streams.simulate.visits import Visits, by_group
from tests.integration.settings import isolated_settings

LSSTCAM = list(range(189))


def test_full_lsstcam_visit_over_two_workers(cluster: ClusterState, tmp_path: Path) -> None:
    """189 detectors x 2 snaps, two workers sharing the partitions: 189 results, exactly one summary."""
    settings = isolated_settings(cluster, tmp_path, detector_partitions=8, pipeline_processes=1)
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        pool.start("w1")
        pool.start("w2")
        visits = Visits(settings)
        group = "2026-11-25T03:00:00.000"
        visits.next_visit(group, instrument="LSSTCam", duration=30.0)
        visits.raws([visits.raw(group, d, s, 100 + s, instrument="LSSTCam") for d in LSSTCAM for s in (0, 1)])
        results = visits.results(189, settle=3.0)
        summaries = visits.summaries(1, settle=1.0)
    finally:
        pool.stop_all()
    assert Counter(r.detector for r in results) == Counter(LSSTCAM)
    assert {r.status for r in results} == {"success"}
    assert len({r.worker for r in results}) == 2, "both workers processed detectors"
    [summary] = summaries
    assert summary.group_id == group and summary.counts["success"] == 189 and summary.detectors_expected == 189


def test_worker_killed_mid_visit_loses_nothing(cluster: ClusterState, tmp_path: Path) -> None:
    """SIGKILL while pipelines run, then restart: every result arrives once, one summary."""
    settings = isolated_settings(cluster, tmp_path, standin_run_seconds=1.0, pipeline_processes=2)
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        worker = pool.start("w1")
        visits = Visits(settings)
        group = "2026-11-25T04:00:00.000"
        visits.next_visit(group, duration=30.0)
        visits.raws([visits.raw(group, d, s, 200 + s) for d in range(9) for s in (0, 1)])
        deadline = time.monotonic() + 60
        while not (before := by_group(visits.results(0, settle=0.2, timeout=1), group)):
            assert time.monotonic() < deadline, "no detector finished"
        assert len(before) < 9, "the kill must land mid-visit"
        worker.stop(signal.SIGKILL)
        pool.start("w1")  # same name and data directory: a restart
        results = visits.results(9, settle=4.0)
        summaries = visits.summaries(1, settle=1.0)
    finally:
        pool.stop_all()
    assert Counter(r.detector for r in results) == Counter(range(9))
    assert {r.status for r in results} == {"success"}
    assert len(summaries) == 1 and summaries[0].counts["success"] == 9
