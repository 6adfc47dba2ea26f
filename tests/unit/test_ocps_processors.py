"""The OCPS processors' `apply` on stand-in messages (no Kafka): a job's events change its table row and the
`ocps-jobs` record together, a started job's synthetic visit is staged with it, and the outcomes of a job's
visit, or a calibration sequence's summary, become job events."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings
from streams.core.instruments import parse_instruments
from streams.core.job import group_of
from streams.processors.ocps import OcpsJobs, OcpsOutcomes
from streams.runtime.driver import TopologyTestDriver
from streams.runtime.engine import Batch
from streams.serde.base import Record
from streams.serde.records import (
    CcdResult,
    DeadLetter,
    DetectorCommand,
    OcpsJob,
    OcpsJobEvent,
    RawImageAvailable,
    VisitExpected,
    VisitSummary,
)
from streams.simulate.camera import raw_key
from tests.unit.fake_kafka import FakeMessage, offline
from tests.unit.runtime.visits import driver_settings
from topology.keys import detector_key, snap_key, visit_key
from topology.topics import TopicSpec

INSTRUMENT = "LSSTComCam"
DETECTORS = [0, 1]
EXPOSURES = [2026112500501, 2026112500502]
JOB = "0123456789abcdef"
NOW = 1_800_000_000.0


def settings(root: Path, **changes: Any) -> Settings:
    """Default settings with `root` as the data root."""
    return replace(Settings.from_env({}), data_root=str(root), **changes)


def write_raws(root: Path) -> None:
    """A small file where the camera's naming puts each raw of the job."""
    for exposure in EXPOSURES:
        for detector in DETECTORS:
            path = root / "raw" / raw_key(INSTRUMENT, exposure, detector)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("raw\n")


def event(jobs: OcpsJobs, action: str, offset: int = 0, **fields: Any) -> FakeMessage:
    """A job event as the UWS API or a trigger sends it, consumed from the job-events topic."""
    spec = jobs.topics.ocps_job_events
    record = OcpsJobEvent(action=action, job_id=JOB, event_time=NOW, **fields)
    return FakeMessage(spec.name, jobs.codec.encode(spec.name, record), JOB.encode(), 0, offset)


def create(jobs: OcpsJobs, start: bool) -> FakeMessage:
    """The create event of a job over both exposures and detectors."""
    return event(jobs, "create", pipeline="stand-in", instrument=INSTRUMENT, detectors=DETECTORS,
                 exposures=EXPOSURES, start=start)


def produced(batch: Batch[Any]) -> list[tuple[str, bytes | None, Record | bytes]]:
    """What the batch would produce: (topic id, key, record)."""
    return [(spec.id, key, record) for spec, key, record in batch.records]


def phases(batch: Batch[Any], spec: TopicSpec) -> list[str]:
    """The phases of the job states the batch sends to `spec`."""
    return [record.phase for topic, _, record in batch.records if topic == spec and isinstance(record, OcpsJob)]


def test_a_job_created_to_run_stages_its_visit_with_its_states(tmp_path: Path) -> None:
    """QUEUED, then the visit's expectation, start commands and raws, then EXECUTING; the row is the last state."""
    write_raws(tmp_path)
    jobs = offline(OcpsJobs(settings(tmp_path)))
    batch = jobs._transform([create(jobs, start=True)], NOW)  # type: ignore[list-item]
    group = group_of(JOB)
    out = produced(batch)
    assert [(topic, key) for topic, key, _ in out] == [
        ("ocps_jobs", JOB.encode()), ("visit_expected", visit_key(INSTRUMENT, group).encode()),
        *[("detector_commands", detector_key(INSTRUMENT, group, d).encode()) for d in DETECTORS],
        *[("raw_image_available", snap_key(INSTRUMENT, group, d, snap).encode())
          for d in DETECTORS for snap in range(len(EXPOSURES))],
        ("ocps_jobs", JOB.encode())]
    assert phases(batch, jobs.topics.ocps_jobs) == ["QUEUED", "EXECUTING"]
    expected = out[1][2]
    assert isinstance(expected, VisitExpected) and expected.detectors == DETECTORS and expected.nimages == 2
    assert all(isinstance(r, DetectorCommand) and r.action == "start" and r.pipelines == ["stand-in"]
               for _, _, r in out[2:4])
    raws = [r for _, _, r in out[4:8]]
    assert all(isinstance(r, RawImageAvailable) and r.uri.startswith(tmp_path.as_uri()) for r in raws)
    row = batch.changes[0][JOB]
    assert row is not None and row.phase == "EXECUTING" and row.start_time == NOW


def test_a_job_whose_raws_are_missing_ends_in_error(tmp_path: Path) -> None:
    """No raw in the data repository: QUEUED then ERROR, saying which are missing; no visit is started."""
    jobs = offline(OcpsJobs(settings(tmp_path)))
    batch = jobs._transform([create(jobs, start=True)], NOW)  # type: ignore[list-item]
    assert phases(batch, jobs.topics.ocps_jobs) == ["QUEUED", "ERROR"]
    assert {topic for topic, _, _ in produced(batch)} == {"ocps_jobs"}
    row = batch.changes[0][JOB]
    assert row is not None and row.error_summary.startswith("no raw in the data repository")


def test_events_read_the_committed_row(tmp_path: Path) -> None:
    """Created PENDING; once that commits, RUN starts it; once that commits, ABORT cancels each detector."""
    write_raws(tmp_path)
    jobs = offline(OcpsJobs(settings(tmp_path)))
    for offset, (message, phase) in enumerate([(create(jobs, start=False), "PENDING"),
                                               (event(jobs, "run", 1), "EXECUTING"),
                                               (event(jobs, "abort", 2), "ABORTED")]):
        batch = jobs._transform([message], NOW + offset)  # type: ignore[list-item]
        jobs._apply(batch, {}, {})
        row = jobs.rows[0][JOB]
        assert row.phase == phase and phases(batch, jobs.topics.ocps_jobs)[-1] == phase
    cancels = [r for _, _, r in produced(batch) if isinstance(r, DetectorCommand)]
    assert [(c.action, c.detector) for c in cancels] == [("cancel", d) for d in DETECTORS]
    assert jobs.rows[0][JOB].error_summary == "aborted while EXECUTING"


def test_an_event_for_no_job_changes_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """RUN for an unknown job is logged: no row, no record."""
    jobs = offline(OcpsJobs(settings(tmp_path)))
    with caplog.at_level("INFO", logger="streams.processors.ocps"):
        batch = jobs._transform([event(jobs, "run")], NOW)  # type: ignore[list-item]
    assert not batch.records and not batch.changes and batch.consumed == 1
    assert [(getattr(r, "event", None), getattr(r, "fields", None)) for r in caplog.records] == [
        ("ocps job event ignored", {"action": "run", "job": JOB, "reason": f"run for unknown job {JOB}"})]
    assert f'ocps job event ignored action=run job={JOB} reason="run for unknown job {JOB}"' in caplog.text


def test_bytes_that_are_no_job_event_are_a_dead_letter_of_the_engine(tmp_path: Path) -> None:
    """The engine dead-letters an undecodable event in the processor's name; the table is untouched."""
    jobs = offline(OcpsJobs(settings(tmp_path)))
    batch = jobs._transform([FakeMessage(jobs.topics.ocps_job_events.name, b"junk", b"k")], NOW)  # type: ignore[list-item]
    [(topic, key, letter)] = produced(batch)
    assert topic == "dead_letter" and key == b"k" and not batch.changes
    assert isinstance(letter, DeadLetter) and letter.agent == "ocps-jobs" and letter.error_class == "WireFormatError"


def test_an_ended_job_is_forgotten_after_the_retention_time(tmp_path: Path) -> None:
    """`ocps_job_retention` after a job ended, its row is deleted and a tombstone goes to ocps-jobs; not before."""
    jobs = offline(OcpsJobs(settings(tmp_path, ocps_job_retention=100.0)))
    batch = jobs._transform([create(jobs, start=True)], NOW)  # type: ignore[list-item]
    jobs._apply(batch, {}, {})
    assert jobs.rows[0][JOB].phase == "ERROR"
    kept = jobs._transform([], NOW + 100)
    assert not kept.records and not kept.changes
    gone = jobs._transform([], NOW + 101)
    assert gone.changes == {0: {JOB: None}} and produced(gone) == [("ocps_jobs", JOB.encode(), None)]
    jobs._apply(gone, {}, {})
    assert jobs.rows == {0: {}}


def test_a_forgotten_job_leaves_a_tombstone_on_the_jobs_topic(tmp_path: Path) -> None:
    """Through the engine: the job's states on ocps-jobs are followed by a tombstone, which compaction keeps as the
    job's last word and every worker's view takes as its removal; the jobs table is empty."""
    config = replace(driver_settings(tmp_path / "data"), data_root=str(tmp_path), ocps_job_retention=100.0)
    with TopologyTestDriver(OcpsJobs(config), now=NOW) as driver:
        topics = driver.processors["ocps-jobs"].topics
        driver.pipe(topics.ocps_job_events, JOB, OcpsJobEvent(
            action="create", job_id=JOB, event_time=NOW, pipeline="stand-in", instrument=INSTRUMENT,
            detectors=DETECTORS, exposures=EXPOSURES, start=True))
        driver.run()
        assert [job.phase for job in driver.read(topics.ocps_jobs)] == ["QUEUED", "ERROR"]
        driver.advance(101)
        driver.run()
        *states, last = driver.messages(topics.ocps_jobs)
        assert len(states) == 2 and (last.key(), last.value()) == (JOB.encode(), None)
        assert driver.rows("ocps-jobs") == {}


def outcomes(root: Path) -> OcpsOutcomes:
    """The outcomes processor, offline, with one trigger on calibration sequences."""
    triggers = root / "ocps.toml"
    triggers.write_text('[[triggers]]\nname = "reduce"\nsurvey = "CALIB-SEQ-*"\npipeline = "calib-bias"\n')
    config = settings(root, ocps_triggers_file=str(triggers))
    return offline(OcpsOutcomes(config, parse_instruments(Path(config.instruments_file).read_text())))


def consumed(processor: OcpsOutcomes, spec: TopicSpec, record: Record) -> FakeMessage:
    """`record` as consumed from `spec`'s topic."""
    return FakeMessage(spec.name, processor.codec.encode(spec.name, record))


def test_a_job_visits_outcomes_become_its_events(tmp_path: Path) -> None:
    """A result and the summary of `ocps-<job id>` are that job's events; an observatory visit's result is not."""
    processor = outcomes(tmp_path)
    topics = processor.topics
    result = CcdResult(instrument=INSTRUMENT, group_id=group_of(JOB), detector=1, status="failed",
                       pipeline="stand-in", error_message="no", output_uris=["file:///out"])
    summary = VisitSummary(instrument=INSTRUMENT, group_id=group_of(JOB), reason="complete", detectors_expected=2,
                           counts={"success": 1, "failed": 1})
    batch = processor._transform([consumed(processor, topics.ccd_result, result),
                                  consumed(processor, topics.ccd_result, replace(result, group_id="2026-11-25")),
                                  consumed(processor, topics.visit_summary, summary)], NOW)  # type: ignore[list-item]
    out = produced(batch)
    assert [(topic, key) for topic, key, _ in out] == [("ocps_job_events", JOB.encode())] * 2
    first, second = (record for _, _, record in out)
    assert isinstance(first, OcpsJobEvent) and isinstance(second, OcpsJobEvent)
    assert (first.action, first.detector, first.status, first.ran_pipeline, first.error_message,
            first.output_uris) == ("ccd-result", 1, "failed", "stand-in", "no", ["file:///out"])
    assert (second.action, second.reason, second.detectors_expected, second.counts) == (
        "visit-summary", "complete", 2, {"success": 1, "failed": 1})


def test_a_calibration_sequences_summary_fires_its_trigger(tmp_path: Path) -> None:
    """A CALIB-SEQ visit's complete summary creates a started job over its exposures; another survey's none."""
    processor = outcomes(tmp_path)
    spec = processor.topics.visit_summary
    summary = VisitSummary(instrument=INSTRUMENT, group_id="2026-11-25T04:00:00.000", survey="CALIB-SEQ-BIAS",
                           exposure_ids=EXPOSURES, failed_detectors=[8])
    batch = processor._transform([consumed(processor, spec, summary),
                                  consumed(processor, spec, replace(summary, survey="BLOCK-1"))], NOW)  # type: ignore[list-item]
    [(topic, key, created)] = produced(batch)
    assert topic == "ocps_job_events" and isinstance(created, OcpsJobEvent) and key == created.job_id.encode()
    assert (created.action, created.pipeline, created.start, created.owner) == ("create", "calib-bias", True,
                                                                               "trigger:reduce")
    assert created.exposures == EXPOSURES and created.detectors == list(range(8))
