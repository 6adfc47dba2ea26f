"""OCPS jobs without Kafka: parameters, phase transitions, the synthetic visit, triggers."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import Settings
from streams.core.job import (
    JobRequestError,
    Phase,
    decide,
    expired,
    group_of,
    job_of_group,
    missing_inputs,
    parse_request,
    plan_abort,
    plan_job,
    refusal,
    started,
)
from streams.core.triggers import TriggerConfigError, parse_triggers, triggered
from streams.serde.records import OcpsJob, OcpsJobEvent, VisitSummary
from tests.unit.core.flow import INSTRUMENTS, POLICY, T0

PIPELINES = ("copy", "stand-in", "calib-bias")
JOB = "0123456789abcdef"


def request(**parameters: str) -> OcpsJobEvent:
    """The create event for these parameters (TestCam: detectors 0-2 active)."""
    pairs = {"pipeline": "copy", "instrument": "TestCam", "exposure": "2026112500001"} | parameters
    return parse_request(list(pairs.items()), PIPELINES, INSTRUMENTS, JOB, T0)


def event(action: str, **fields: object) -> OcpsJobEvent:
    """A job event at T0."""
    return OcpsJobEvent(action=action, job_id=JOB, event_time=T0, **fields)  # type: ignore[arg-type]


def executing(detectors: tuple[int, ...] = (0, 1)) -> OcpsJob:
    """A job whose visit was fanned out."""
    created = decide(None, request(detector=",".join(map(str, detectors)), PHASE="RUN"), T0).job
    assert created is not None and created.phase == Phase.QUEUED
    return started(created, T0 + 1)


def test_parameters_become_a_create_event() -> None:
    """Names are case-insensitive, lists come comma-separated or repeated, detectors default to all active."""
    created = parse_request([("PIPELINE", "copy"), ("Instrument", "TestCam"), ("exposure", "2026112500003, 7"),
                             ("exposure", "5"), ("RUNID", "night 1")], PIPELINES, INSTRUMENTS, JOB, T0)
    assert created.exposures == [2026112500003, 7, 5] and created.detectors == [0, 1, 2]
    assert created.run_id == "night 1" and not created.start
    assert created.parameters == {"pipeline": "copy", "instrument": "TestCam", "exposure": "2026112500003, 7,5"}
    assert request(detector="1-2", phase="run").detectors == [1, 2] and request(phase="run").start


@pytest.mark.parametrize(("changes", "why"), [
    ({"pipeline": "nope"}, "unknown pipeline 'nope': known pipelines are calib-bias, copy, stand-in"),
    ({"pipeline": ""}, "'pipeline' is required"),
    ({"instrument": "HSC"}, "'HSC', unknown"),
    ({"exposure": ""}, "'exposure' is required"),
    ({"exposure": "1,1"}, "each given once"),
    ({"exposure": "-4"}, "must be positive"),
    ({"exposure": ",".join(map(str, range(1, 102)))}, "at most 100"),
    ({"detector": "3"}, "3 are not active detectors of TestCam"),
    ({"detector": "1-99999"}, "not a detector id"),
    ({"shape": "round"}, "unknown parameter(s) shape"),
    ({"phase": "ABORT"}, "only PHASE=RUN"),
])
def test_bad_parameters_are_refused_with_the_reason(changes: dict[str, str], why: str) -> None:
    """Each mistake is named in the error (the API's 400 body)."""
    with pytest.raises(JobRequestError) as error:
        request(**changes)
    assert why in str(error.value)


def test_a_job_goes_pending_queued_executing_completed() -> None:
    """Create, run, fan out; results and the summary (in either order) complete it."""
    pending = decide(None, request(detector="0,1"), T0).job
    assert pending is not None and pending.phase == Phase.PENDING and pending.group_id == group_of(JOB)
    queued = decide(pending, event("run"), T0 + 1)
    assert queued.start and queued.job is not None and queued.job.phase == Phase.QUEUED
    job = started(queued.job, T0 + 2)
    assert job.phase == Phase.EXECUTING and job.start_time == job.reference_time == T0 + 2
    job = decide(job, event("ccd-result", detector=1, status="success", output_uris=["file:///o/1"]), T0 + 3).job
    assert job is not None
    job = decide(job, event("visit-summary", reason="complete", detectors_expected=2), T0 + 4).job
    assert job is not None and job.phase == Phase.EXECUTING, "a result is still missing"
    job = decide(job, event("ccd-result", detector=0, status="success"), T0 + 5).job
    assert job is not None and job.phase == Phase.COMPLETED and job.end_time == T0 + 5
    assert [r.detector for r in job.results] == [0, 1] and job.results[1].output_uris == ["file:///o/1"]


def test_a_failed_detector_ends_the_job_in_error_with_why() -> None:
    """The error summary names the failed detectors and their messages."""
    job = executing()
    for detector, status in ((0, "success"), (1, "failed")):
        job = decide(job, event("ccd-result", detector=detector, status=status,
                                error_message="boom" if status == "failed" else ""), T0).job or job
    job = decide(job, event("visit-summary", reason="complete", detectors_expected=2), T0 + 9).job
    assert job is not None and job.phase == Phase.ERROR
    assert job.error_summary == "1 of 2 detectors did not succeed: detector 1 failed: boom"


def test_abort_and_its_refusals() -> None:
    """PENDING aborts at once; EXECUTING aborts and cancels its detectors; an ended job refuses."""
    pending = decide(None, request(), T0).job
    assert pending is not None
    aborted = decide(pending, event("abort"), T0 + 1)
    assert aborted.job is not None and aborted.job.phase == Phase.ABORTED and not aborted.cancel
    running = decide(executing(), event("abort"), T0 + 2)
    assert running.job is not None and running.cancel and running.job.error_summary == "aborted while EXECUTING"
    assert [(c.action, c.detector, c.group_id) for c in plan_abort(running.job, T0)] == [
        ("cancel", 0, group_of(JOB)), ("cancel", 1, group_of(JOB))]
    assert refusal(running.job, "abort") == f"job {JOB} is already ABORTED: there is nothing to abort"
    assert refusal(running.job, "run") == f"job {JOB} is ABORTED: only a PENDING job can be run"
    assert decide(running.job, event("abort"), T0 + 3).job is None, "a second abort changes nothing"
    late = decide(running.job, event("ccd-result", detector=0, status="success"), T0 + 4).job
    assert late is not None and late.phase == Phase.ABORTED and len(late.results) == 1


def test_repeated_events_change_nothing() -> None:
    """A second create, result or summary (redelivery) is ignored; events of unknown jobs too."""
    job = executing((0,))
    assert decide(job, request(), T0).job is None
    done = decide(job, event("ccd-result", detector=0, status="success"), T0).job
    assert done is not None and decide(done, event("ccd-result", detector=0, status="failed"), T0).job is None
    assert decide(None, event("run"), T0).ignored == f"run for unknown job {JOB}"


def test_a_job_left_queued_by_a_crash_starts_when_its_event_is_replayed() -> None:
    """QUEUED was saved but the fan-out never happened: the replayed run (or create) starts it."""
    pending = decide(None, request(), T0).job
    assert pending is not None
    queued = decide(pending, event("run"), T0).job
    assert queued is not None and queued.phase == Phase.QUEUED
    assert decide(queued, event("run"), T0 + 1).start
    queued_at_creation = decide(None, request(PHASE="RUN"), T0).job
    assert queued_at_creation is not None and decide(queued_at_creation, request(PHASE="RUN"), T0 + 1).start
    assert refusal(queued, "run") is not None, "a client cannot run it twice"


def test_the_synthetic_visit() -> None:
    """One start command per detector naming the pipeline, one raw per (detector, exposure) as its snap."""
    job = decide(None, request(detector="0,2", exposure="11,12", PHASE="RUN"), T0).job
    assert job is not None
    job = started(job, T0)
    uris = {(d, e): f"file:///raw/{e}/{d}.fits" for d in (0, 2) for e in (11, 12)}
    plan = plan_job(job, uris, POLICY, T0)
    assert [(c.detector, c.pipelines, c.nimages, c.group_id) for c in plan.commands] == [
        (0, ["copy"], 2, group_of(JOB)), (2, ["copy"], 2, group_of(JOB))]
    assert plan.expected.detectors == [0, 2] and plan.expected.deadline == POLICY.visit_deadline(T0, 0.0)
    assert [(r.detector, r.snap, r.exposure_id) for r in plan.raws] == [(0, 0, 11), (0, 1, 12), (2, 0, 11),
                                                                         (2, 1, 12)]
    assert missing_inputs(job, uris) is None
    del uris[2, 12]
    assert missing_inputs(job, uris) == "no raw in the data repository for exposure 12 detector 2"


def test_job_groups_are_recognised() -> None:
    """Only ocps-<16 hex> names a job; the observatory's group ids do not."""
    assert job_of_group(group_of(JOB)) == JOB
    assert job_of_group("2026-11-25T03:14:15.926") is None and job_of_group("ocps-nothex") is None


TRIGGERS = """
[[triggers]]
name = "reduce"
survey = "CALIB-SEQ-*"
pipeline = "calib-bias"
"""


def summary(**changes: object) -> VisitSummary:
    """A calibration sequence's summary on TestCam."""
    fields: dict[str, object] = {"instrument": "TestCam", "group_id": "2026-11-25T04:00:00.000",
                                 "survey": "CALIB-SEQ-BIAS", "reason": "complete", "exposure_ids": [21, 22],
                                 "next_visit_time": T0, "failed_detectors": [1]}
    return VisitSummary(**(fields | changes))  # type: ignore[arg-type]


def test_a_sequence_summary_triggers_one_job_over_its_exposures() -> None:
    """The same summary twice gives the same job id; other surveys, reasons and job visits give none."""
    triggers = parse_triggers(TRIGGERS, PIPELINES)
    jobs = triggered(triggers, summary(), INSTRUMENTS, T0)
    assert len(jobs) == 1 and jobs == triggered(triggers, summary(), INSTRUMENTS, T0)
    job = jobs[0]
    assert (job.pipeline, job.exposures, job.detectors, job.start) == ("calib-bias", [21, 22], [0, 2], True)
    assert job.owner == "trigger:reduce" and job.reference_time == T0
    assert triggered(triggers, summary(survey="BLOCK-1"), INSTRUMENTS, T0) == []
    assert triggered(triggers, summary(reason="deadline"), INSTRUMENTS, T0) == []
    assert triggered(triggers, summary(group_id=group_of(JOB)), INSTRUMENTS, T0) == []


def test_bad_trigger_files_are_refused() -> None:
    """Unknown pipelines or reasons, missing keys and repeated names stop the configuration."""
    for text, why in ((TRIGGERS.replace("calib-bias", "nope"), "unknown pipeline"),
                      (TRIGGERS + 'reasons = ["sometimes"]\n', "unknown reasons"),
                      (TRIGGERS.replace('survey = "CALIB-SEQ-*"\n', ""), "bad trigger configuration"),
                      (TRIGGERS + TRIGGERS, "unique")):
        with pytest.raises(TriggerConfigError, match=why):
            parse_triggers(text, PIPELINES)
    assert parse_triggers(Path(Settings().ocps_triggers_file).read_text(), PIPELINES) == (), "none by default"


def test_ended_and_never_run_jobs_expire_after_the_retention_time() -> None:
    """An ended job is forgotten `retention` after it ended, a PENDING one after its last change; jobs in flight
    (QUEUED, EXECUTING) never are: their visit ends them."""
    running = executing()
    aborted = decide(running, event("abort"), T0 + 5).job
    assert aborted is not None and aborted.phase == Phase.ABORTED
    assert expired(aborted, 10, T0 + 16) and not expired(aborted, 10, T0 + 14)
    pending = decide(None, request(), T0).job
    queued = decide(None, request(PHASE="RUN"), T0).job
    assert pending is not None and pending.phase == Phase.PENDING and queued is not None
    assert expired(pending, 10, T0 + 11) and not expired(pending, 10, T0 + 9)
    assert not expired(running, 10, T0 + 1e6) and not expired(queued, 10, T0 + 1e6)
