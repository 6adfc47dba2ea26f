"""A worker restarted on a data directory that is behind its changelogs, empty, or ahead of them (the
topics were recreated): it restores what it lacks, discards what the changelogs cannot continue, and
neither repeats a visit it already finished nor refuses one the new topics have never seen.

One worker, restarted five times; a visit finished before a restart is sent again after it, and
must give no second result or summary when its state survives, and a full one when it must not.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from pathlib import Path

from confluent_kafka.admin import AdminClient

from stack.cluster import ClusterState
from streams.config import Settings
from streams.ops.workers import WorkerPool
from streams.serde.records import CcdResult, VisitSummary
from streams.simulate.visits import Visits
from tests.integration.settings import isolated_settings


def send_visit(visits: Visits, group: str, sequence: int) -> None:
    """A nextVisit and both snaps of the 9 LSSTComCam detectors (sending it again repeats it exactly)."""
    visits.next_visit(group)
    visits.raws([visits.raw(group, d, s, sequence + s) for d in range(9) for s in (0, 1)])


def tallies(visits: Visits, summaries: int) -> tuple[Counter[str], Counter[str]]:
    """Results and summaries per group, once `summaries` summaries are out and nothing more comes."""
    out = [visits.codec.decode(v, VisitSummary) for v in visits.read(visits.topics.visit_summary.name, summaries,
                                                                     timeout=120, settle=4.0)]
    results = [visits.codec.decode(v, CcdResult) for v in visits.read(visits.topics.ccd_result.name, 0, settle=1.0)]
    return Counter(r.group_id for r in results), Counter(s.group_id for s in out)


def delete_deployment_topics(settings: Settings) -> None:
    """Delete every topic of this deployment (its own, its changelogs, faust's), as a reset would."""
    admin = AdminClient(settings.kafka_config())
    tag = settings.topic_prefix.split(".")[0]
    names = [t for t in admin.list_topics(timeout=15).topics if t.startswith((tag + ".", settings.app_id + "-"))]
    for future in admin.delete_topics(names, operation_timeout=30).values():
        future.result()
    deadline = time.monotonic() + 60
    while set(names) & set(admin.list_topics(timeout=15).topics):
        assert time.monotonic() < deadline, "topics not deleted"
        time.sleep(0.5)


def test_restarts_on_behind_empty_and_ahead_data_directories(cluster: ClusterState, tmp_path: Path) -> None:
    """Each visit has 9 results and 1 summary through every kind of restart."""
    settings = isolated_settings(cluster, tmp_path)
    pool, visits = WorkerPool(settings, tmp_path / "logs"), Visits(settings)
    data, snapshot = Path(settings.data_dir) / "w1", tmp_path / "snapshot"
    groups = [f"2026-11-25T07:0{i}:00.000" for i in range(4)]
    try:
        worker = pool.start("w1")
        send_visit(visits, groups[0], 1)
        assert tallies(visits, 1)[1] == {groups[0]: 1}
        worker.stop()
        shutil.copytree(data, snapshot)

        worker = pool.start("w1")
        send_visit(visits, groups[1], 3)
        assert tallies(visits, 2)[1] == {groups[0]: 1, groups[1]: 1}
        worker.stop()

        # Behind: the copy from before visit 1; visit 1 again must be recognised from the changelogs.
        shutil.rmtree(data)
        shutil.copytree(snapshot, data)
        worker = pool.start("w1")
        send_visit(visits, groups[1], 3)
        send_visit(visits, groups[2], 5)
        results, summaries = tallies(visits, 3)
        assert summaries == dict.fromkeys(groups[:3], 1) and results == dict.fromkeys(groups[:3], 9)
        worker.stop()

        # Empty: everything restored from the changelogs.
        shutil.rmtree(data)
        worker = pool.start("w1")
        send_visit(visits, groups[2], 5)
        send_visit(visits, groups[3], 7)
        results, summaries = tallies(visits, 4)
        assert summaries == dict.fromkeys(groups, 1) and results == dict.fromkeys(groups, 9)
        worker.stop()

        # Ahead: the topics were recreated under a kept data directory; visit 0 is new to them.
        delete_deployment_topics(settings)
        worker = pool.start("w1")
        send_visit(visits, groups[0], 1)
        results, summaries = tallies(visits, 1)
        assert summaries == {groups[0]: 1} and results == {groups[0]: 9}
        log = worker.text()
        assert "cleared, restoring from the changelog" in log
    finally:
        pool.stop_all()
