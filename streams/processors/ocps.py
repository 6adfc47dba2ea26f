"""The OCPS processors: jobs move through their phases, run as synthetic visits, and end with their summaries.

`ocps-jobs` is the single writer of job state. Its topic has one partition, so it sees every job's
events in order (requests from the UWS API, triggers' creates, and the outcomes of each job's visit)
and keeps the `jobs` table; each new state also goes to the compacted `ocps-jobs` topic, which the
UWS API reads. Its tick forgets the jobs past `PROMPT_STREAMS_OCPS_JOB_RETENTION` (`jobs_core.expired`):
their rows, and, by a tombstone, their records on the compacted topic and in every worker's view.
`ocps-outcomes` watches the topology's outputs: results and summaries of a job's
visit become events of that job, and the summaries of other visits fire the configured triggers.

Both run on the engine (`streams.runtime.engine`): a job's new state, its table row, the records that
start or cancel its visit and the consumed offset commit in one transaction, so a crash between
queueing a job and starting it can no longer leave it QUEUED, and a job event is neither lost nor
sent twice by a rebalance.
"""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import Message

from streams.config import Settings
from streams.core import job as jobs_core
from streams.core.instruments import Instrument
from streams.core.job import Phase
from streams.core.triggers import parse_triggers, triggered
from streams.data import raws
from streams.observability import logs
from streams.pipelines.execute import known_pipelines
from streams.runtime.engine import Batch, TransactionalProcessor, message_partition
from streams.serde.base import Record
from streams.serde.records import CcdResult, DetectorCommand, OcpsJob, OcpsJobEvent, VisitSummary
from topology.graph import declare_graph
from topology.keys import detector_key, snap_key, visit_key

log = logs.events(__name__)


class OcpsJobs(TransactionalProcessor[OcpsJob]):
    """Moves each job through its phases on its events, and starts or cancels its synthetic visit."""

    row_type = OcpsJob

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, declare_graph(settings).ocps_jobs)
        self.data_root = Path(settings.data_root)

    def apply(self, batch: Batch[OcpsJob], message: Message, now: float) -> None:
        """One event decides the job's new state; a queued job starts, an aborted one cancels its visit."""
        request = self.decode(self.topics.ocps_job_events, message, OcpsJobEvent)
        logs.bind(request)
        partition = message_partition(message)
        decision = jobs_core.decide(self.state(batch, partition, request.job_id), request, now)
        if decision.job is None:
            log.info("ocps job event ignored", action=request.action, job=request.job_id, reason=decision.ignored)
            return
        self._save(batch, partition, decision.job)
        if decision.start and decision.job.phase == Phase.QUEUED:
            self._start(batch, partition, decision.job, now)
        if decision.cancel:
            self._command(batch, jobs_core.plan_abort(decision.job, now))

    def tick(self, batch: Batch[OcpsJob], now: float) -> None:
        """Jobs past the retention time are forgotten: their row, and their record on the ocps-jobs topic."""
        for partition, rows in self.rows.items():
            for job_id in list(rows):
                job = self.state(batch, partition, job_id)
                if job is not None and jobs_core.expired(job, self.settings.ocps_job_retention, now):
                    self.stage(batch, partition, job_id, None)
                    batch.records.append((self.topics.ocps_jobs, job_id.encode(), None))
                    log.info("ocps job forgotten after the retention time", job=job_id, pipeline=job.pipeline,
                             phase=job.phase)

    def _save(self, batch: Batch[OcpsJob], partition: int, job: OcpsJob) -> None:
        """The job's new state: its table row, and the record the UWS API reads."""
        self.stage(batch, partition, job.job_id, job)
        batch.records.append((self.topics.ocps_jobs, job.job_id.encode(), job))
        log.info("ocps job", job=job.job_id, pipeline=job.pipeline, owner=job.owner or "api", phase=job.phase,
                 **({"error": job.error_summary} if job.error_summary else {}))

    def _start(self, batch: Batch[OcpsJob], partition: int, job: OcpsJob, now: float) -> None:
        """Find the inputs and fan the job's visit out, or end the job when an input is missing."""
        uris = raws.find_raws(self.data_root, job.instrument, list(job.exposures), list(job.detectors))
        if missing := jobs_core.missing_inputs(job, uris):
            self._save(batch, partition, jobs_core.failed_to_start(job, missing, now))
            return
        running = jobs_core.started(job, now)
        plan = jobs_core.plan_job(running, uris, self.policy, now)
        batch.records.append((self.topics.visit_expected, visit_key(running.instrument, running.group_id).encode(),
                              plan.expected))
        self._command(batch, plan.commands)
        for raw in plan.raws:
            batch.records.append((self.topics.raw_image_available,
                                  snap_key(raw.instrument, raw.group_id, raw.detector, raw.snap).encode(), raw))
        self._save(batch, partition, running)

    def _command(self, batch: Batch[OcpsJob], commands: tuple[DetectorCommand, ...]) -> None:
        for command in commands:
            key = detector_key(command.instrument, command.group_id, command.detector)
            batch.records.append((self.topics.detector_commands, key.encode(), command))


class OcpsOutcomes(TransactionalProcessor[Record]):
    """Turns a job's visit's results and summary into its events, and other visits' summaries into triggered
    jobs; stateless."""

    row_type = Record

    def __init__(self, settings: Settings, instruments: dict[str, Instrument]) -> None:
        super().__init__(settings, declare_graph(settings).ocps_outcomes)
        self.instruments = instruments
        self.triggers = parse_triggers(Path(settings.ocps_triggers_file).read_text(), known_pipelines(settings))

    def apply(self, batch: Batch[Record], message: Message, now: float) -> None:
        """A summary or a result of a job's visit becomes that job's event; another visit's summary may create
        jobs."""
        if message.topic() == self.topics.visit_summary.name:
            summary = self.decode(self.topics.visit_summary, message, VisitSummary)
            logs.bind(summary)
            job_id = jobs_core.job_of_group(summary.group_id)
            events = [OcpsJobEvent(action="visit-summary", job_id=job_id, event_time=now, reason=summary.reason,
                                   counts=dict(summary.counts), detectors_expected=summary.detectors_expected)] \
                if job_id else triggered(self.triggers, summary, self.instruments, now)
        else:
            result = self.decode(self.topics.ccd_result, message, CcdResult)
            logs.bind(result)
            job_id = jobs_core.job_of_group(result.group_id)
            events = [OcpsJobEvent(action="ccd-result", job_id=job_id, event_time=now, detector=result.detector,
                                   status=result.status, ran_pipeline=result.pipeline,
                                   error_message=result.error_message, output_uris=list(result.output_uris))] \
                if job_id else []
        for event in events:
            batch.records.append((self.topics.ocps_job_events, event.job_id.encode(), event))
