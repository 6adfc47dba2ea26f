"""The OCPS agents: jobs move through their phases, run as synthetic visits, and end with their summaries.

`ocps-jobs` is the single writer of job state. Its topic has one partition, so it sees every job's
events in order (requests from the UWS API, triggers' creates, and the outcomes of each job's visit)
and keeps the `jobs` table; each new state also goes to the compacted `ocps-jobs` topic, which the
UWS API reads. `ocps-outcomes` watches the topology's outputs: results and summaries of a job's
visit become events of that job, and the summaries of other visits fire the configured triggers.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from streams import edge, raws
from streams.clock import tai_now
from streams.context import Context
from streams.core import job as jobs_core
from streams.core.job import Phase
from streams.core.triggers import parse_triggers, triggered
from streams.pipelines.execute import known_pipelines
from streams.records import CcdResult, OcpsJob, OcpsJobEvent, VisitSummary
from topology.keys import detector_key, snap_key, visit_key

log = logging.getLogger(__name__)
JOBS = "ocps-jobs"
OUTCOMES = "ocps-outcomes"


def register(app: faust.App, context: Context) -> None:
    """Attach both agents and the jobs table to `app`."""
    topics, settings = context.topics, context.settings
    spec = context.tables.jobs
    table = context.table(spec.name, spec.partitions)
    changelog = spec.changelog(settings.app_id)
    triggers = parse_triggers(Path(settings.ocps_triggers_file).read_text(), known_pipelines(settings))

    async def save(job: OcpsJob) -> None:
        table[job.job_id.encode()] = context.codec.encode(changelog, job)
        await context.send(topics.ocps_jobs, job.job_id, job)
        log.info("ocps job %s (%s, %s): %s%s", job.job_id, job.pipeline, job.owner or "api", job.phase,
                 f": {job.error_summary}" if job.error_summary else "")

    async def start(job: OcpsJob) -> None:
        """Find the inputs and fan the job's visit out, or end the job when an input is missing."""
        uris = raws.find_raws(Path(settings.data_root), job.instrument, list(job.exposures),
                                    list(job.detectors))
        now = tai_now()
        if missing := jobs_core.missing_inputs(job, uris):
            await save(jobs_core.failed_to_start(job, missing, now))
            return
        running = jobs_core.started(job, now)
        plan = jobs_core.plan_job(running, uris, context.policy, now)
        await context.send(topics.visit_expected, visit_key(running.instrument, running.group_id), plan.expected)
        for command in plan.commands:
            await context.send(topics.detector_commands,
                               detector_key(command.instrument, command.group_id, command.detector), command)
        for raw in plan.raws:
            await context.send(topics.raw_image_available,
                               snap_key(raw.instrument, raw.group_id, raw.detector, raw.snap), raw)
        await save(running)

    @app.agent(context.channel(topics.ocps_job_events), name=JOBS)
    async def ocps_jobs(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with edge.guard(context, event, JOBS):
                request = context.decode(topics.ocps_job_events, event.value, OcpsJobEvent)
                stored = table.get(request.job_id.encode())
                job = context.codec.decode(stored, OcpsJob) if stored else None
                decision = jobs_core.decide(job, request, tai_now())
                if decision.job is None:
                    log.info("ocps job event %s: %s", request.action, decision.ignored)
                    continue
                await save(decision.job)
                if decision.start and decision.job.phase == Phase.QUEUED:
                    await start(decision.job)
                if decision.cancel:
                    for command in jobs_core.plan_abort(decision.job, tai_now()):
                        await context.send(topics.detector_commands,
                                           detector_key(command.instrument, command.group_id, command.detector),
                                           command)

    @app.agent(context.channel(topics.visit_summary, topics.ccd_result), name=OUTCOMES)
    async def ocps_outcomes(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with edge.guard(context, event, OUTCOMES):
                now = tai_now()
                if event.message.topic == topics.visit_summary.name:
                    summary = context.decode(topics.visit_summary, event.value, VisitSummary)
                    job_id = jobs_core.job_of_group(summary.group_id)
                    events = [OcpsJobEvent(action="visit-summary", job_id=job_id, event_time=now,
                                           reason=summary.reason, counts=dict(summary.counts),
                                           detectors_expected=summary.detectors_expected)] if job_id else \
                        triggered(triggers, summary, context.instruments, now)
                else:
                    result = context.decode(topics.ccd_result, event.value, CcdResult)
                    job_id = jobs_core.job_of_group(result.group_id)
                    events = [OcpsJobEvent(action="ccd-result", job_id=job_id, event_time=now,
                                           detector=result.detector, status=result.status,
                                           ran_pipeline=result.pipeline, error_message=result.error_message,
                                           output_uris=list(result.output_uris))] if job_id else []
                for job_event in events:
                    await context.send(topics.ocps_job_events, job_event.job_id, job_event)
