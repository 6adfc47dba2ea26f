"""The visit topology on a real broker with a real worker: one run, many visits, one per scenario.

Every scenario is a group of its own on LSSTComCam (9 detectors), sent together to one worker
started with the faust CLI; each test below checks one scenario's results and its one summary.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from stack.cluster import ClusterState
from streams.clock import tai_now
from streams.ops.workers import WorkerPool
from streams.serde.records import CcdResult, DeadLetter, LogMessage, Metric, RawImageAvailable, VisitSummary
from streams.simulate.visits import Visits, by_group, exposure_id
from tests.integration.settings import isolated_settings

DETECTORS = list(range(9))
GROUPS = {name: f"2026-11-25T02:{i:02d}:00.000" for i, name in enumerate(
    ["complete", "early", "missing", "unknown_nimages", "partial", "rerun", "cancel", "ignored"])}


@dataclass
class Run:
    """Everything the scenarios produced."""

    results: list[CcdResult]
    summaries: list[VisitSummary]
    dead_letters: list[DeadLetter]
    cancel_time: float
    metrics: list[Metric] = field(default_factory=list)
    log_messages: list[LogMessage] = field(default_factory=list)


def both_snaps(visits: Visits, group: str, detectors: list[int], first: int = 1) -> list[RawImageAvailable]:
    """Snaps 0 and 1 of each detector, exposures `first` and `first + 1`."""
    return [visits.raw(group, d, snap, first + snap) for d in detectors for snap in (0, 1)]


def bad_next_visits() -> dict[str, tuple[bytes, str]]:
    """nextVisit events that make no sense (sent now, so not merely expired), with their dead letter's reason."""

    def line(group: str, **changes: object) -> bytes:
        good = {"groupId": group, "instrument": "LSSTComCam", "coordinateSystem": 2, "rotationSystem": 2,
                "nimages": 2, "private_sndStamp": tai_now()}
        return json.dumps(good | changes).encode()

    return {
        "garbage": (b"\x07garbage", "WireFormatError"),
        "unknown instrument": (line("bad-1", instrument="HSC"), "unknown instrument"),
        "negative nimages": (line("bad-2", nimages=-1), "nimages -1"),
        "absurd duration": (line("bad-3", duration=1e9), "duration"),
        "unsupported coordinates": (line("bad-4", coordinateSystem=3), "OBSERVED"),
    }


def bad_raws(visits: Visits) -> dict[str, tuple[bytes, str]]:
    """Raw arrivals that make no sense, as JSON lines, with what their dead letter must say."""
    good = {"instrument": "LSSTComCam", "group_id": GROUPS["complete"], "detector": 0, "snap": 0,
            "exposure_id": exposure_id(900), "uri": f"file://{visits.settings.data_root}/raw/x.fits"}

    def line(**changes: object) -> bytes:
        return json.dumps(good | changes).encode()

    return {
        "unknown instrument": (line(instrument="LSSTCamX"), "unknown instrument"),
        "wrong detector": (line(detector=99), "has no detector 99"),
        "outside the data root": (line(uri="file:///etc/passwd"), "outside the data root"),
        "path traversal": (line(uri=f"file://{visits.settings.data_root}/../../etc/passwd"), "normalised"),
        "other scheme": (line(uri="http://example.org/x.fits"), "unsupported URI scheme"),
        "wrong type": (line(detector="R22_S11"), "SchemaMismatch|detector"),
    }


@pytest.fixture(scope="module")
def run(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Send every scenario to one worker and collect what came out."""
    root = tmp_path_factory.mktemp("scenarios")
    settings = isolated_settings(cluster, root, image_timeout=3.0, process_timeout=10.0)
    pool = WorkerPool(settings, root / "logs")
    pool.start("w1")
    visits = Visits(settings)
    g = GROUPS
    try:
        # complete, with duplicate raws
        visits.next_visit(g["complete"])
        arrivals = both_snaps(visits, g["complete"], DETECTORS)
        visits.raws(arrivals + arrivals[:6])
        # raws before their nextVisit
        visits.raws(both_snaps(visits, g["early"], DETECTORS, first=20))
        time.sleep(0.5)
        visits.next_visit(g["early"])
        # detector 4 never gets its raws
        visits.next_visit(g["missing"])
        visits.raws(both_snaps(visits, g["missing"], [d for d in DETECTORS if d != 4], first=30))
        # nimages unknown: three snaps, processed at the image deadline
        visits.next_visit(g["unknown_nimages"], nimages=0)
        visits.raws([visits.raw(g["unknown_nimages"], d, s, 40 + s) for d in DETECTORS for s in range(3)])
        # detectors 0-2 only get snap 0 of 2
        visits.next_visit(g["partial"])
        visits.raws([visits.raw(g["partial"], d, s, 50 + s) for d in DETECTORS for s in (0, 1) if s == 0 or d > 2])
        # an aborted attempt (exposure 60, snap 0), then the re-run under the same group (62, 63)
        visits.next_visit(g["rerun"])
        visits.raws([visits.raw(g["rerun"], d, 0, 60) for d in DETECTORS])
        visits.next_visit(g["rerun"], duration=2.0)
        visits.raws(both_snaps(visits, g["rerun"], DETECTORS, first=62))
        # no pipeline for this survey
        visits.next_visit(g["ignored"], survey="BLOCK-T454")
        # bad input next to the good visits
        visits.send_bytes(visits.topics.next_visit.name, [value for value, _ in bad_next_visits().values()])
        visits.send_bytes(visits.topics.raw_image_available.name, [v for v, _ in bad_raws(visits).values()])
        # canceled after detectors 0-3 finished
        visits.next_visit(g["cancel"], duration=30.0)
        visits.raws(both_snaps(visits, g["cancel"], [0, 1, 2, 3], first=70))
        deadline = time.monotonic() + 60
        while len(by_group(visits.results(1, settle=0.2, timeout=5), g["cancel"])) < 4:
            assert time.monotonic() < deadline, "detectors 0-3 of the canceled visit never finished"
        cancel_time = visits.cancel(g["cancel"])
        results = visits.results(9 * len(GROUPS), settle=4.0)
        summaries = visits.summaries(len(GROUPS), settle=1.0)
        letters = visits.dead_letters(len(bad_next_visits()) + len(bad_raws(visits)), settle=1.0)
        metrics = [visits.codec.decode(v, Metric) for v in visits.read(visits.topics.metrics.name, 1, settle=1.0)]
        logs = [visits.codec.decode(v, LogMessage) for v in visits.read(visits.topics.log_messages.name, 1,
                                                                         settle=1.0)]
        yield Run(results, summaries, letters, cancel_time, metrics, logs)
    finally:
        pool.stop_all()


def statuses(run: Run, scenario: str) -> Counter[str]:
    """Result statuses of one scenario."""
    return Counter(r.status for r in by_group(run.results, GROUPS[scenario]))


def only_summary(run: Run, scenario: str) -> VisitSummary:
    """The scenario's one summary (fails if there are none or several)."""
    [summary] = by_group(run.summaries, GROUPS[scenario])
    return summary


def test_every_detector_of_every_visit_has_exactly_one_result(run: Run) -> None:
    """No result lost, none repeated, duplicate raws included."""
    assert Counter((r.group_id, r.detector) for r in run.results) == Counter(
        (g, d) for g in GROUPS.values() for d in DETECTORS)
    assert Counter(s.group_id for s in run.summaries) == Counter(GROUPS.values())


def test_complete_visit(run: Run) -> None:
    """Nine successes, each with both snaps' exposures, and a complete summary."""
    results = by_group(run.results, GROUPS["complete"])
    assert statuses(run, "complete") == {"success": 9}
    assert all(r.exposure_ids == [exposure_id(1), exposure_id(2)] and r.snaps_processed == 2 for r in results)
    assert all(r.fanout_time <= r.preload_done_time <= r.process_start_time <= r.process_end_time <= r.result_time
               for r in results), "timings in causal order"
    summary = only_summary(run, "complete")
    assert summary.reason == "complete" and summary.counts["success"] == 9
    assert summary.raw_to_result_max > 0 and summary.metrics_sum["snapsProcessed"] == 18


def test_raws_before_next_visit_are_matched(run: Run) -> None:
    """Raws that came first were held in the presence table and processed."""
    assert statuses(run, "early") == {"success": 9}
    assert all(r.snaps_processed == 2 for r in by_group(run.results, GROUPS["early"]))


def test_detector_without_raws_times_out(run: Run) -> None:
    """Detector 4 never got a raw: a timeout result at its image deadline; the rest succeed."""
    results = {r.detector: r for r in by_group(run.results, GROUPS["missing"])}
    assert results[4].status == "timeout" and results[4].error_class == "ImageTimeout"
    assert statuses(run, "missing") == {"success": 8, "timeout": 1}
    assert only_summary(run, "missing").failed_detectors == [4]


def test_unknown_nimages_processes_what_came_at_the_deadline(run: Run) -> None:
    """nimages = 0: all three snaps processed once the image deadline passed."""
    results = by_group(run.results, GROUPS["unknown_nimages"])
    assert statuses(run, "unknown_nimages") == {"success": 9}
    assert all(r.snaps_processed == 3 for r in results)
    assert all(r.process_start_time >= r.fanout_time + 2 * 1.0 + 3.0 - 0.5 for r in results)


def test_partial_snaps_are_processed_at_the_deadline(run: Run) -> None:
    """Detectors 0-2 got one of two snaps: processed with one; the others with two."""
    processed = {r.detector: r.snaps_processed for r in by_group(run.results, GROUPS["partial"])}
    assert processed == {d: 1 if d <= 2 else 2 for d in DETECTORS}
    assert statuses(run, "partial") == {"success": 9}


def test_rerun_group_processes_the_newest_exposures(run: Run) -> None:
    """The aborted attempt's exposure is superseded by the re-run's two snaps."""
    for result in by_group(run.results, GROUPS["rerun"]):
        assert result.exposure_ids == [exposure_id(62), exposure_id(63)]
    assert only_summary(run, "rerun").exposure_ids == [exposure_id(62), exposure_id(63)]


def test_cancel_stops_pending_detectors_at_once(run: Run) -> None:
    """Detectors 0-3 had finished; 4-8 are canceled; the summary follows within a second."""
    results = {r.detector: r.status for r in by_group(run.results, GROUPS["cancel"])}
    assert results == {d: "success" if d <= 3 else "canceled" for d in DETECTORS}
    summary = only_summary(run, "cancel")
    assert summary.reason == "canceled" and summary.counts["canceled"] == 5
    assert summary.summary_time - run.cancel_time < 1.0


def test_survey_without_pipeline_is_ignored(run: Run) -> None:
    """Every detector of an unknown survey's visit reports ignored."""
    assert statuses(run, "ignored") == {"ignored": 9}
    assert only_summary(run, "ignored").counts["ignored"] == 9


def test_bad_input_goes_to_dead_letters_with_reasons(run: Run, cluster: ClusterState) -> None:
    """Each bad nextVisit and raw is a dead letter saying what is wrong; the visits beside them completed."""
    reasons = [f"{d.error_class}: {d.reason}" for d in run.dead_letters]
    expected = [why for _, why in bad_next_visits().values()] + ["unknown instrument", "has no detector 99",
                                                               "outside the data root", "normalised",
                                                               "unsupported URI scheme", "detector"]
    assert len(run.dead_letters) == len(expected)
    for why in expected:
        assert any(why.split("|")[0] in reason for reason in reasons), (why, reasons)
    assert all(d.value for d in run.dead_letters), "the original bytes are kept"


def test_metrics_events_per_ccd_and_per_visit(run: Run) -> None:
    """Each CCD reports the real system's preload timings and the framework's; each visit its own."""
    complete = [m for m in run.metrics if m.group_id == GROUPS["complete"]]
    per_ccd = Counter(m.name for m in complete if m.detector >= 0)
    for name in ("prep_butlerTotalTime", "prep_butlerSearchTime", "prep_butlerTransferTime",
                 "prep_butlerPreprocessTime", "rawToResultTime", "pipelineRunTime"):
        assert per_ccd[name] == 9, name
    per_visit = {m.name: m.value for m in complete if m.detector == -1}
    assert per_visit["ccdSuccessCount"] == 9.0 and per_visit["nextVisitToSummaryTime"] > 0
    assert all(m.unit == "s" for m in complete if m.name.endswith("Time"))


def test_worker_warnings_reach_the_log_messages_topic(run: Run) -> None:
    """The worker forwards its WARNING records (here: the dead letters) for the SAL bridge, not its INFO ones."""
    dead = [m for m in run.log_messages if m.message.startswith("dead letter ")]
    assert dead and len(dead) + sum(m.suppressed for m in run.log_messages) >= len(run.dead_letters), \
        "each dead letter's warning is forwarded or counted as suppressed"
    assert {m.name for m in dead} == {"streams.runtime.engine"}, "every processor's letters come from the engine"
    assert all(m.level == 30 and m.worker == "w1" and m.line_number > 0 for m in dead)
    assert all(m.level >= 30 for m in run.log_messages)
