"""OCPS jobs (IVOA UWS 1.1): parameters checked, phases moved, and a job turned into a synthetic visit.

A job runs on the same workers and pipelines as the night's visits: it becomes a visit whose group
id is `ocps-<job id>`, with a start command per detector naming the job's pipeline, the raws of
the named exposures (one snap each, in the order given) and what the gather should expect. The
visit's per-CCD results and summary come back as job events and end the job (COMPLETED when every
detector succeeded, ERROR otherwise); ABORT cancels the visit. A job is forgotten some time after it
ends (`expired`). Everything here is pure: the job agent feeds it events in order and sends what it
returns.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from streams.core.instruments import Instrument, parse_detectors
from streams.core.policy import Policy
from streams.errors import NonRetriableError
from streams.serde.records import (
    DetectorCommand,
    OcpsJob,
    OcpsJobEvent,
    OcpsJobResult,
    RawImageAvailable,
    VisitExpected,
)

GROUP_PREFIX = "ocps-"
SURVEY = "OCPS"
"""Survey of a job's synthetic visit (its summary says where it came from)."""
JOB_ID = re.compile(r"^[0-9a-f]{16}$")
DETECTOR_RANGE = re.compile(r"^\d{1,4}(-\d{1,4})?$")
MAX_EXPOSURES = Policy().max_nimages
ERROR_DETAILS = 5
"""Failed detectors described in a job's error summary (the rest are counted)."""


class Phase(StrEnum):
    """UWS 1.1 execution phases (the ones a job of this service can be in)."""

    PENDING = "PENDING"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    COMPLETED = "COMPLETED"
    ERROR = "ERROR"
    ABORTED = "ABORTED"


FINAL = frozenset({Phase.COMPLETED, Phase.ERROR, Phase.ABORTED})


class JobRequestError(NonRetriableError, ValueError):
    """A request that cannot make a job (HTTP 400): the message says why."""


PARAMETERS = {
    "pipeline": "the named pipeline to run (required)",
    "instrument": "instrument of the inputs (required)",
    "exposure": "exposure ids of the inputs, comma-separated or repeated (required)",
    "detector": "detectors to process, e.g. 0-188 or 0,94, comma-separated or repeated (default: every active one)",
}
"""The job parameters a client may send, with what they mean."""
CONTROL = ("phase", "runid")
"""UWS control parameters accepted when a job is created (PHASE=RUN starts it at once)."""


@dataclass(frozen=True)
class Decision:
    """What one event does to a job: its new state (None: unchanged) and what to send."""

    job: OcpsJob | None
    start: bool = False
    """Look up the inputs and fan the synthetic visit out (the job is QUEUED)."""
    cancel: bool = False
    """Cancel the synthetic visit's detectors (an EXECUTING job was aborted)."""
    ignored: str = ""
    """Why the event changed nothing (for the log)."""


def new_job_id() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex[:16]


def triggered_job_id(trigger: str, instrument: str, group_id: str) -> str:
    """The job id a trigger gives a visit: the same every time, so a repeated event makes no second job."""
    return hashlib.sha256(f"{trigger}/{instrument}/{group_id}".encode()).hexdigest()[:16]


def group_of(job_id: str) -> str:
    """The group id of a job's synthetic visit."""
    return GROUP_PREFIX + job_id


def job_of_group(group_id: str) -> str | None:
    """The job whose synthetic visit has this group id, or None for an observatory visit."""
    job_id = group_id.removeprefix(GROUP_PREFIX)
    return job_id if group_id.startswith(GROUP_PREFIX) and JOB_ID.match(job_id) else None


def _values(pairs: Sequence[tuple[str, str]], name: str) -> list[str]:
    """Every comma-separated value given for `name` (repeated parameters add up)."""
    return [part.strip() for key, value in pairs if key == name for part in value.split(",") if part.strip()]


def _single(pairs: Sequence[tuple[str, str]], name: str) -> str:
    values = [value.strip() for key, value in pairs if key == name]
    if len(values) > 1:
        raise JobRequestError(f"parameter {name!r} given {len(values)} times: it takes one value")
    return values[0] if values else ""


def parse_request(pairs: Sequence[tuple[str, str]], pipelines: Collection[str],
                  instruments: Mapping[str, Instrument], job_id: str, now: float) -> OcpsJobEvent:
    """The `create` event for a client's parameters (names case-insensitive, as UWS says).

    Raises:
        JobRequestError: an unknown parameter or pipeline, a missing or invalid value; the message says which.
    """
    pairs = [(key.strip().lower(), value) for key, value in pairs]
    unknown = sorted({key for key, _ in pairs} - set(PARAMETERS) - set(CONTROL))
    if unknown:
        raise JobRequestError(f"unknown parameter(s) {', '.join(unknown)}; a job takes "
                              + "; ".join(f"{name}: {doc}" for name, doc in PARAMETERS.items()))
    phase = _single(pairs, "phase").upper()
    if phase not in ("", "RUN"):
        raise JobRequestError(f"PHASE={phase} cannot be given when creating a job: only PHASE=RUN")
    pipeline = _single(pairs, "pipeline")
    if not pipeline:
        raise JobRequestError("parameter 'pipeline' is required: " + PARAMETERS["pipeline"])
    if pipeline not in pipelines:
        raise JobRequestError(f"unknown pipeline {pipeline!r}: known pipelines are {', '.join(sorted(pipelines))}")
    name = _single(pairs, "instrument")
    if name not in instruments:
        raise JobRequestError(f"parameter 'instrument' is {'missing' if not name else repr(name) + ', unknown'}: "
                              f"expected one of {', '.join(sorted(instruments))}")
    instrument = instruments[name]
    exposures = parse_exposures(_values(pairs, "exposure"))
    ranges = _values(pairs, "detector")
    if bad := [part for part in ranges if not DETECTOR_RANGE.match(part)]:
        raise JobRequestError(f"parameter 'detector': {', '.join(bad)} is not a detector id or a range like 0-8")
    detectors = sorted(parse_detectors(",".join(ranges))) or list(instrument.active)
    inactive = [d for d in detectors if d not in instrument.active]
    if inactive:
        raise JobRequestError(f"detector(s) {', '.join(map(str, inactive))} are not active detectors of {name}")
    parameters = {key: ",".join(value for k, value in pairs if k == key) for key, _ in pairs if key in PARAMETERS}
    return OcpsJobEvent(action="create", job_id=job_id, event_time=now, pipeline=pipeline, instrument=name,
                        detectors=detectors, exposures=exposures, parameters=parameters,
                        run_id=_single(pairs, "runid"), start=phase == "RUN")


def parse_exposures(values: Sequence[str]) -> list[int]:
    """Exposure ids, in the order given (it is their snap order).

    Raises:
        JobRequestError: none, a non-integer, a repeated one, or more than a visit may have.
    """
    if not values:
        raise JobRequestError("parameter 'exposure' is required: " + PARAMETERS["exposure"])
    try:
        exposures = [int(value) for value in values]
    except ValueError as error:
        raise JobRequestError(f"parameter 'exposure': {error}: exposure ids are integers") from error
    if any(e <= 0 for e in exposures) or len(set(exposures)) != len(exposures):
        raise JobRequestError("parameter 'exposure': exposure ids must be positive and each given once")
    if len(exposures) > MAX_EXPOSURES:
        raise JobRequestError(f"parameter 'exposure': {len(exposures)} exposures, at most {MAX_EXPOSURES}")
    return exposures


def refusal(job: OcpsJob, action: str) -> str | None:
    """Why a client's phase change cannot be done to `job` now, or None when it can."""
    if action == "run" and job.phase != Phase.PENDING:
        return f"job {job.job_id} is {job.phase}: only a PENDING job can be run"
    if action == "abort" and job.phase in FINAL:
        return f"job {job.job_id} is already {job.phase}: there is nothing to abort"
    return None


def decide(job: OcpsJob | None, event: OcpsJobEvent, now: float) -> Decision:
    """The one place a job changes: what `event` does to `job` (None: no such job yet)."""
    if job is not None and job.phase == Phase.QUEUED and (event.action == "run" or event.start):
        # Only a replay finds a job QUEUED (it is started in the same step it is queued): a worker
        # stopped between the two, so start it now (starting a visit twice changes nothing).
        return Decision(job, start=True)
    if event.action == "create":
        if job is not None:
            return Decision(None, ignored=f"job {event.job_id} exists already")
        created = OcpsJob(job_id=event.job_id, phase=Phase.QUEUED if event.start else Phase.PENDING,
                          pipeline=event.pipeline, instrument=event.instrument, group_id=group_of(event.job_id),
                          detectors=list(event.detectors), exposures=list(event.exposures),
                          parameters=dict(event.parameters), run_id=event.run_id, owner=event.owner,
                          reference_time=event.reference_time, creation_time=now, updated_time=now)
        return Decision(created, start=event.start)
    if job is None:
        return Decision(None, ignored=f"{event.action} for unknown job {event.job_id}")
    if event.action in ("run", "abort"):
        why = refusal(job, event.action)
        if why:
            return Decision(None, ignored=why)
        if event.action == "run":
            return Decision(replace(job, phase=Phase.QUEUED, updated_time=now), start=True)
        aborted = replace(job, phase=Phase.ABORTED, end_time=now, updated_time=now,
                          error_summary=f"aborted while {job.phase}")
        return Decision(aborted, cancel=job.phase == Phase.EXECUTING)
    if event.action == "ccd-result":
        if any(r.detector == event.detector for r in job.results):
            return Decision(None, ignored=f"job {job.job_id}: detector {event.detector} has its result already")
        result = OcpsJobResult(detector=event.detector, status=event.status, pipeline=event.ran_pipeline,
                               error_message=event.error_message, output_uris=list(event.output_uris))
        results = sorted([*job.results, result], key=lambda r: r.detector)
        return Decision(_finish(replace(job, results=results, updated_time=now), now))
    if event.action == "visit-summary":
        if job.summary_reason:
            return Decision(None, ignored=f"job {job.job_id}: its summary came already")
        summarised = replace(job, summary_reason=event.reason, counts=dict(event.counts),
                             detectors_expected=event.detectors_expected, updated_time=now)
        return Decision(_finish(summarised, now))
    return Decision(None, ignored=f"unknown action {event.action!r}")


def _finish(job: OcpsJob, now: float) -> OcpsJob:
    """An EXECUTING job ends once its summary and every detector's result are in."""
    if job.phase != Phase.EXECUTING or not job.summary_reason or len(job.results) < job.detectors_expected:
        return job
    if job.summary_reason == "canceled":
        return replace(job, phase=Phase.ABORTED, end_time=now, error_summary="its visit was canceled")
    failed = [r for r in job.results if r.status != "success"]
    if not failed:
        return replace(job, phase=Phase.COMPLETED, end_time=now)
    details = "; ".join(f"detector {r.detector} {r.status}" + (f": {r.error_message}" if r.error_message else "")
                        for r in failed[:ERROR_DETAILS])
    more = f"; and {len(failed) - ERROR_DETAILS} more" if len(failed) > ERROR_DETAILS else ""
    return replace(job, phase=Phase.ERROR, end_time=now,
                   error_summary=f"{len(failed)} of {len(job.results)} detectors did not succeed: {details}{more}")


def expired(job: OcpsJob, retention: float, now: float) -> bool:
    """Whether a job is old enough to be forgotten: `retention` after it ended, or after its last change for a
    PENDING job never run (UWS lets a service destroy any job), so the jobs kept do not grow with the jobs ever
    made. QUEUED and EXECUTING jobs are in flight: their visit ends them."""
    if job.phase in FINAL:
        return now - job.end_time > retention
    return job.phase == Phase.PENDING and now - job.updated_time > retention


def started(job: OcpsJob, now: float) -> OcpsJob:
    """The job once its synthetic visit is fanned out."""
    return replace(job, phase=Phase.EXECUTING, start_time=now, updated_time=now,
                   reference_time=job.reference_time or now)


def failed_to_start(job: OcpsJob, reason: str, now: float) -> OcpsJob:
    """The job when its visit cannot be started (its inputs are missing)."""
    return replace(job, phase=Phase.ERROR, end_time=now, updated_time=now, error_summary=reason)


@dataclass(frozen=True)
class JobVisit:
    """What to send to run a job: the start commands, the gather's expectation and the raws."""

    commands: tuple[DetectorCommand, ...]
    expected: VisitExpected
    raws: tuple[RawImageAvailable, ...]


def plan_job(job: OcpsJob, uris: Mapping[tuple[int, int], str], policy: Policy, now: float) -> JobVisit:
    """The synthetic visit of an EXECUTING job; `uris` holds the raw of each (detector, exposure)."""
    image_deadline = policy.image_deadline(now, 0.0)
    commands = tuple(DetectorCommand(
        action="start", instrument=job.instrument, group_id=job.group_id, detector=detector, survey=SURVEY,
        pipelines=[job.pipeline], nimages=len(job.exposures), coordinate_system=1, next_visit_time=job.reference_time,
        fanout_time=now, image_deadline=image_deadline, command_time=now) for detector in job.detectors)
    expected = VisitExpected(instrument=job.instrument, group_id=job.group_id, survey=SURVEY,
                             pipelines=[job.pipeline], detectors=list(job.detectors), nimages=len(job.exposures),
                             next_visit_time=job.reference_time, fanout_time=now,
                             deadline=policy.visit_deadline(now, 0.0))
    raws = tuple(RawImageAvailable(instrument=job.instrument, group_id=job.group_id, detector=detector, snap=snap,
                                   exposure_id=exposure, uri=uris[detector, exposure], arrival_time=now)
                 for detector in job.detectors for snap, exposure in enumerate(job.exposures))
    return JobVisit(commands, expected, raws)


def plan_abort(job: OcpsJob, now: float) -> tuple[DetectorCommand, ...]:
    """A cancel command for each detector of an aborted job's visit."""
    return tuple(DetectorCommand(action="cancel", instrument=job.instrument, group_id=job.group_id,
                                 detector=detector, command_time=now) for detector in job.detectors)


def missing_inputs(job: OcpsJob | OcpsJobEvent, uris: Mapping[tuple[int, int], str]) -> str | None:
    """What a job lacks among its raws, said for people, or None when every one was found."""
    missing = [(d, e) for d in job.detectors for e in job.exposures if (d, e) not in uris]
    if not missing:
        return None
    shown = ", ".join(f"exposure {e} detector {d}" for d, e in missing[:ERROR_DETAILS])
    more = f" and {len(missing) - ERROR_DETAILS} more" if len(missing) > ERROR_DETAILS else ""
    return f"no raw in the data repository for {shown}{more}"
