"""Replay for reprocessing, as an operator runs it: `faust -A streams.app replay` beside a live worker.

Two LSSTComCam visits run live (one complete, with half its raws typed into the wrong partition as
kcat would; one whose detector 4 never gets a raw), next to a LATISS visit the replay filters out.
The replay must give the same results and summaries under its own name, and leave every live topic,
changelog and consumer group exactly as it was.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from stack.cluster import ClusterState
from streams.config import Settings
from streams.ops.replay_plan import replay_settings
from streams.ops.workers import WorkerPool
from streams.runtime.topic_reader import offsets, partitions_of, reader
from streams.serde.records import CcdResult, VisitSummary
from streams.simulate.visits import Visits, by_group
from tests.integration.command_line import faust
from tests.integration.settings import isolated_settings
from topology.tables import changelogs
from topology.topics import declare

COMPLETE, MISSING, OTHER = "2026-11-25T05:00:00.000", "2026-11-25T05:01:00.000", "2026-11-25T05:02:00.000"
DETECTORS = range(9)
VOLATILE = {"worker", "next_visit_time", "fanout_time", "preload_done_time", "first_raw_time", "process_start_time",
            "process_end_time", "result_time", "summary_time", "next_visit_to_first_raw", "raw_to_result_p50",
            "raw_to_result_max", "next_visit_to_summary", "metrics", "metrics_sum", "metrics_mean"}


def comparable(record: CcdResult | VisitSummary, output_root: str) -> dict[str, Any]:
    """A result or summary without what differs between runs: worker names, times, measured costs."""
    data = {key: value for key, value in record.to_dict().items() if key not in VOLATILE}
    if "output_uris" in data:
        data["output_uris"] = [uri.replace(output_root, "<outputs>") for uri in data["output_uris"]]
    for name in ("metrics", "metrics_sum"):
        if name in record.to_dict():
            data[name + " names"] = sorted(record.to_dict()[name])
    return data


def live_state(settings: Settings) -> dict[str, int]:
    """End offsets of every live topic and changelog, and the committed offsets of the live consumer groups."""
    names = [spec.name for spec in [*declare(settings).all(), *changelogs(settings)]]
    consumer = reader(settings)
    try:
        state = {f"{name}/{p}": offsets(consumer, name, p)[1] for name in names
                 for p in partitions_of(consumer, name)}
    finally:
        consumer.close()
    admin = AdminClient(settings.kafka_config())
    for group in (settings.app_id, f"{settings.app_id}-gather"):
        found = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group].result()
        partitions: list[TopicPartition] = found.topic_partitions
        state |= {f"{group}:{tp.topic}/{tp.partition}": tp.offset for tp in partitions}
    return state


def test_replay_gives_the_same_results_and_leaves_live_state_alone(cluster: ClusterState, tmp_path: Path) -> None:
    """Replaying two visits under a name of their own reproduces their results; live topics and groups are unchanged."""
    # An image timeout short enough for a quick `timeout` result, long enough for a freshly started replay worker.
    live = isolated_settings(cluster, tmp_path, image_timeout=10.0, process_timeout=10.0)
    pool = WorkerPool(live, tmp_path / "logs")
    pool.start("live")
    visits = Visits(live)
    try:
        visits.next_visit(COMPLETE, instrument="LSSTComCam")
        visits.raws([visits.raw(COMPLETE, d, 0, 1) for d in DETECTORS])
        typed = [json.dumps(visits.raw(COMPLETE, d, 1, 2).to_dict()).encode() for d in DETECTORS]
        visits.send_bytes(visits.topics.raw_image_available.name, typed, partition=1)  # re-routed by the worker
        visits.next_visit(MISSING, instrument="LSSTComCam")
        visits.raws([visits.raw(MISSING, d, s, 3 + s) for d in DETECTORS if d != 4 for s in (0, 1)])
        visits.next_visit(OTHER, instrument="LATISS")
        visits.raws([visits.raw(OTHER, 0, s, 5 + s, instrument="LATISS") for s in (0, 1)])
        original = {group: (by_group(visits.summaries(3), group), sorted(by_group(visits.results(19), group),
                                                                        key=lambda r: r.detector))
                    for group in (COMPLETE, MISSING)}
        before = live_state(live)

        done = faust(live, "replay", "--name", f"{live.app_id}-replay", "--instrument", "LSSTComCam",
                     "--from-offset", "0", timeout=600)
        assert live_state(live) == before
    finally:
        pool.stop_all()
    report = done.stdout
    assert re.search(r"events replayed: 36 \(.*nextVisit 2, .*nextVisitCanceled 0, .*raw-image-available 34\)",
                     report), report
    assert "visits completed: 2 of 2" in report and re.search(r"time taken: [0-9.]+ s", report)

    replayed = Visits(replay_settings(live, f"{live.app_id}-replay"))
    summaries, results = replayed.summaries(2), replayed.results(18)
    assert {s.group_id for s in summaries} == {COMPLETE, MISSING}, "LATISS was filtered out"
    for group, (live_summaries, live_results) in original.items():
        assert [comparable(s, live.output_root) for s in by_group(summaries, group)] == \
            [comparable(s, live.output_root) for s in live_summaries]
        again = sorted(by_group(results, group), key=lambda r: r.detector)
        assert [comparable(r, replayed.settings.output_root) for r in again] == \
            [comparable(r, live.output_root) for r in live_results]
    assert original[MISSING][0][0].counts["timeout"] == 1 and original[COMPLETE][0][0].counts["success"] == 9
    assert {r.worker for r in results if r.status == "success"} == {"replay-1"}, "processed by the replay's worker"

    again = faust(live, "replay", "--name", f"{live.app_id}-replay", "--from-offset", "0", fails=True)
    assert "was used before" in again.stderr, "a second replay under the same name would skip its visits"
