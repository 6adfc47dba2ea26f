"""The OCPS job service: IVOA UWS 1.1 over the workers' web server, under /ocps/jobs.

Every worker serves it and every worker answers the same: job state has one writer (the
`ocps-jobs` agent) and one record, the compacted `ocps-jobs` topic, which each worker reads into
a `JobView`. Before answering, a worker catches its view up to the topic's end, so a job's phase
is right whichever worker is asked. Requests that change a job go to the agent as events; the
worker waits until the agent's answer is in its view, then redirects to the job (303, as UWS says).

    POST   /ocps/jobs                 create (pipeline, instrument, exposure, detector; PHASE=RUN starts it)
    GET    /ocps/jobs                 list (PHASE= filters, LAST= the newest n)
    GET    /ocps/jobs/{id}            the job (UWS XML; JSON with Accept: application/json); WAIT= blocks
    GET    /ocps/jobs/{id}/phase      its phase (text)
    POST   /ocps/jobs/{id}/phase      PHASE=RUN or PHASE=ABORT
    GET    /ocps/jobs/{id}/results    its results (outputs per detector)
    GET    /ocps/jobs/{id}/error      its error summary (text)
    GET    /ocps/jobs/{id}/parameters its parameters
    DELETE /ocps/jobs/{id}            abort (also POST /ocps/jobs/{id} with ACTION=DELETE)

Creating needs a write token (`streams.web.auth`), and the job belongs to that token's name; running,
aborting or deleting it needs the same token or the operators' (403 for anyone else's). Reads need
the read token (or a write token) when one is configured. A worker holds at most MAX_WAITING WAIT
polls at once: beyond, a poll answers at once with the job as it is, as UWS allows.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from streams.clock import tai_minus_utc, tai_now
from streams.config import Settings
from streams.core import job as jobs_core
from streams.core.job import FINAL, JobRequestError, Phase
from streams.data import raws
from streams.errors import DecodeError, RegistryError
from streams.observability import logs
from streams.pipelines.execute import known_pipelines
from streams.runtime.context import Context
from streams.runtime.topic_reader import JOB_VIEW_GROUP_PREFIX
from streams.serde.codec import Codec
from streams.serde.records import OcpsJob, OcpsJobEvent
from streams.web.auth import CHALLENGE, Tokens, owner_refusal

log = logs.events(__name__)
ROOT = "/ocps/jobs"
UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("uws", UWS)
ET.register_namespace("xlink", XLINK)
ET.register_namespace("xsi", XSI)
MAX_WAIT = 60.0
"""Longest a request blocks (UWS WAIT, or waiting for the agent to take a change in)."""
MAX_WAITING = 64
"""UWS WAIT polls one worker holds at once (each holds a connection): more answer at once."""
REGISTRY_RETRY_S = 1.0
"""Pause before the job view reads a record again when the schema registry could not be asked."""


class JobView:
    """Every job's latest state, read from the compacted job topic by a thread of its own."""

    def __init__(self, settings: Settings, topic: str, codec: Codec) -> None:
        self.settings, self.topic, self.codec = settings, topic, codec
        self.jobs: dict[str, OcpsJob] = {}
        self.position = 0
        """Offset of the next record to read: everything before it is in `jobs`."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._probe: Consumer | None = None

    def _consumer(self) -> Consumer:
        return Consumer(self.settings.kafka_config() | {
            "group.id": f"{JOB_VIEW_GROUP_PREFIX}{uuid.uuid4().hex}", "enable.auto.commit": False,
            "isolation.level": "read_committed"})

    def start(self) -> None:
        """Start reading (once): the whole topic, then whatever comes."""
        if self._thread is None:
            self._probe = self._consumer()
            self._thread = threading.Thread(target=self._read, name="uws-job-view", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop reading."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._probe is not None:
            self._probe.close()

    def take(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        """Apply one record of the job topic: a job's new state, or a tombstone (no value) that forgets it.

        A record that is no job (bytes that do not decode, a key that is not text) is skipped with a log
        line: every request waits for this reader, so it must never stop on one record.

        Raises:
            RegistryError: the schema registry could not be asked (the record must be read again).
        """
        try:
            job_id = (key or b"").decode()
            if value is None:
                self.jobs.pop(job_id, None)
            else:
                self.jobs[job_id] = self.codec.decode(value, OcpsJob)
        except (DecodeError, UnicodeDecodeError) as error:
            log.warning("no job record: skipped", topic=self.topic, offset=offset, reason=error)

    def _read(self) -> None:
        consumer = self._consumer()
        consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        try:
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is None:
                    at = consumer.position([TopicPartition(self.topic, 0)])[0].offset
                    self.position = max(self.position, at)
                elif message.error() is None:
                    offset = message.offset() or 0
                    try:
                        self.take(message.key(), message.value(), offset)
                    except RegistryError as error:
                        log.warning("registry unavailable: reading again", topic=self.topic, offset=offset,
                                    reason=error, pause_s=REGISTRY_RETRY_S)
                        self._stop.wait(REGISTRY_RETRY_S)
                        consumer.seek(TopicPartition(self.topic, 0, offset))
                        continue
                    self.position = max(self.position, offset + 1)
        finally:
            consumer.close()

    async def fresh(self) -> None:
        """Return once the view holds everything the topic held when called.

        Raises:
            web.HTTPServiceUnavailable: the topic's end cannot be read or reached in time.
        """
        self.start()
        assert self._probe is not None
        probe = self._probe
        try:
            _, end = await asyncio.to_thread(probe.get_watermark_offsets, TopicPartition(self.topic, 0), 10.0, False)
        except Exception as error:
            raise web.HTTPServiceUnavailable(text=f"job state cannot be read now: {error}\n") from error
        deadline = time.monotonic() + MAX_WAIT
        while self.position < end:
            if time.monotonic() > deadline:
                raise web.HTTPServiceUnavailable(text="job state is still being read: try again\n")
            await asyncio.sleep(0.02)

    async def wait(self, job_id: str, done: Callable[[OcpsJob], bool], timeout: float) -> OcpsJob | None:
        """The job once `done(job)` holds, or as it is after `timeout` s (None if there is no such job)."""
        self.start()  # a worker's first request may be a creation: it waits for the job without a read before
        deadline = time.monotonic() + timeout
        while (job := self.jobs.get(job_id)) is None or not done(job):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return job


def iso(tai: float) -> str | None:
    """A TAI time as UWS writes times: ISO 8601 UTC; None for 'not yet'."""
    if not tai:
        return None
    return datetime.fromtimestamp(tai - tai_minus_utc(), UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _element(parent: ET.Element, name: str, text: str | None, **attributes: str) -> ET.Element:
    child = ET.SubElement(parent, f"{{{UWS}}}{name}", attributes)
    if text is None:
        child.set(f"{{{XSI}}}nil", "true")
    else:
        child.text = text
    return child


def _parameters(parent: ET.Element, job: OcpsJob) -> ET.Element:
    element = ET.SubElement(parent, f"{{{UWS}}}parameters")
    for name, value in sorted(job.parameters.items()):
        _element(element, "parameter", value, id=name)
    return element


def _results(parent: ET.Element, job: OcpsJob) -> ET.Element:
    element = ET.SubElement(parent, f"{{{UWS}}}results")
    for result in job.results:
        for index, uri in enumerate(result.output_uris):
            ET.SubElement(element, f"{{{UWS}}}result", {
                "id": f"detector-{result.detector}-{index}", f"{{{XLINK}}}href": uri, f"{{{XLINK}}}type": "simple"})
    return element


def _document(root: ET.Element) -> bytes:
    return bytes(ET.tostring(root, encoding="UTF-8", xml_declaration=True))


def job_xml(job: OcpsJob) -> bytes:
    """The UWS 1.1 `job` document."""
    root = ET.Element(f"{{{UWS}}}job", {"version": "1.1"})
    _element(root, "jobId", job.job_id)
    _element(root, "runId", job.run_id or None)
    _element(root, "ownerId", job.owner or None)
    _element(root, "phase", job.phase)
    _element(root, "quote", None)
    _element(root, "creationTime", iso(job.creation_time))
    _element(root, "startTime", iso(job.start_time))
    _element(root, "endTime", iso(job.end_time))
    _element(root, "executionDuration", "0")
    _element(root, "destruction", None)
    _parameters(root, job)
    _results(root, job)
    if job.phase in (Phase.ERROR, Phase.ABORTED) and job.error_summary:
        summary = ET.SubElement(root, f"{{{UWS}}}errorSummary", {"type": "fatal", "hasDetail": "false"})
        _element(summary, "message", job.error_summary)
    info = ET.SubElement(root, f"{{{UWS}}}jobInfo")
    for name, value in (("pipeline", job.pipeline), ("instrument", job.instrument), ("groupId", job.group_id),
                        ("detectors", ",".join(map(str, job.detectors))),
                        ("exposures", ",".join(map(str, job.exposures))), ("summaryReason", job.summary_reason)):
        ET.SubElement(info, name).text = value
    return _document(root)


def jobs_xml(jobs: list[OcpsJob]) -> bytes:
    """The UWS 1.1 `jobs` list."""
    root = ET.Element(f"{{{UWS}}}jobs", {"version": "1.1"})
    for job in jobs:
        ref = ET.SubElement(root, f"{{{UWS}}}jobref", {"id": job.job_id, f"{{{XLINK}}}href": f"{ROOT}/{job.job_id}"})
        _element(ref, "phase", job.phase)
        _element(ref, "runId", job.run_id or None)
        _element(ref, "ownerId", job.owner or None)
        _element(ref, "creationTime", iso(job.creation_time))
    return _document(root)


def results_xml(job: OcpsJob) -> bytes:
    """The UWS `results` document."""
    return _document(_results(ET.Element("unused"), job))


def parameters_xml(job: OcpsJob) -> bytes:
    """The UWS `parameters` document."""
    return _document(_parameters(ET.Element("unused"), job))


def _wants_json(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return request.query.get("format", "").lower() == "json" or (
        "application/json" in accept and "xml" not in accept.split("application/json")[0])


def _xml(body: bytes) -> web.Response:
    return web.Response(body=body, content_type="text/xml", charset="utf-8")


def _refuse(status: type[web.HTTPException], why: str, **kwargs: Any) -> web.HTTPException:
    """A 4xx whose body says why."""
    return status(text=why.rstrip("\n") + "\n", **kwargs)


async def _pairs(request: web.Request) -> list[tuple[str, str]]:
    """The request's parameters: query string, then a form or a JSON object (lists give repeated values).

    Raises:
        web.HTTPBadRequest: a body that is neither.
    """
    pairs = list(request.query.items())
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as error:
            raise _refuse(web.HTTPBadRequest, f"the body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise _refuse(web.HTTPBadRequest, "the JSON body must be an object of parameters")
        for key, value in body.items():
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, str | int):
                    raise _refuse(web.HTTPBadRequest, f"parameter {key!r}: a string, a number or a list of them")
                pairs.append((str(key), str(item)))
    elif request.body_exists:
        if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise _refuse(web.HTTPBadRequest, f"unsupported content type {request.content_type}: send a form "
                                              "(application/x-www-form-urlencoded) or application/json")
        pairs += [(key, str(value)) for key, value in (await request.post()).items()]
    return pairs


class JobService:
    """The handlers, over one worker's view and producer."""

    def __init__(self, context: Context, tokens: Tokens) -> None:
        self.context = context
        self.settings = context.settings
        self.tokens = tokens
        self.view = JobView(context.settings, context.topics.ocps_jobs.name, context.codec)
        self.pipelines = known_pipelines(context.settings)
        self.max_waiting = MAX_WAITING
        self.waiting = 0
        """WAIT polls blocked now."""

    def routes(self) -> list[web.RouteDef]:
        """Every UWS route."""
        return [
            web.get(ROOT, self.list_jobs), web.post(ROOT, self.create),
            web.get(ROOT + "/{job}", self.read), web.post(ROOT + "/{job}", self.post_job),
            web.delete(ROOT + "/{job}", self.delete),
            web.get(ROOT + "/{job}/phase", self.phase), web.post(ROOT + "/{job}/phase", self.change_phase),
            web.get(ROOT + "/{job}/results", self.results), web.get(ROOT + "/{job}/error", self.error),
            web.get(ROOT + "/{job}/parameters", self.parameters),
        ]

    # -- helpers ---------------------------------------------------------------------------------
    def _authorize(self, request: web.Request) -> str:
        """The name of the request's write token (401 without one)."""
        caller, why = self.tokens.writer(request.headers)
        if why:
            raise _refuse(web.HTTPUnauthorized, why, headers=CHALLENGE)
        return caller

    def _may_read(self, request: web.Request) -> None:
        if why := self.tokens.read_refusal(request.headers):
            raise _refuse(web.HTTPUnauthorized, why, headers=CHALLENGE)

    async def _job(self, request: web.Request) -> OcpsJob:
        """The job the path names, fresh (401 for a request that may not read, 404 for no such job)."""
        self._may_read(request)
        await self.view.fresh()
        job_id = request.match_info["job"]
        job = self.view.jobs.get(job_id)
        if job is None:
            raise _refuse(web.HTTPNotFound, f"no job {job_id!r}: list the jobs at {ROOT}")
        return job

    async def _own_job(self, request: web.Request) -> OcpsJob:
        """The job the path names, for a change by its owner or the operators (401 or 403 for anyone else)."""
        caller = self._authorize(request)
        job = await self._job(request)
        if why := owner_refusal(caller, job.owner, job.job_id):
            raise _refuse(web.HTTPForbidden, why)
        return job

    async def _send(self, event: OcpsJobEvent) -> None:
        topic = self.context.topics.ocps_job_events
        delivered = await self.context.send(topic, event.job_id, event)
        await delivered

    async def _apply(self, job: OcpsJob, action: str) -> web.StreamResponse:
        """Ask the agent for a phase change; redirect to the job once it took it in."""
        if why := jobs_core.refusal(job, action):
            raise _refuse(web.HTTPConflict, why)
        await self._send(OcpsJobEvent(action=action, job_id=job.job_id, event_time=tai_now()))
        await self.view.wait(job.job_id, lambda j: j.updated_time != job.updated_time, MAX_WAIT)
        raise web.HTTPSeeOther(f"{ROOT}/{job.job_id}")

    # -- handlers --------------------------------------------------------------------------------
    async def list_jobs(self, request: web.Request) -> web.StreamResponse:
        """Every job, oldest first; PHASE= keeps those in the phase(s) given, LAST= the newest n."""
        self._may_read(request)
        await self.view.fresh()
        jobs = sorted(self.view.jobs.values(), key=lambda j: (j.creation_time, j.job_id))
        phases = {p.upper() for p in request.query.getall("PHASE", [])}
        if unknown := phases - set(Phase):
            raise _refuse(web.HTTPBadRequest, f"unknown PHASE {', '.join(sorted(unknown))}: "
                                              f"one of {', '.join(Phase)}")
        jobs = [j for j in jobs if not phases or j.phase in phases]
        if "LAST" in request.query:
            try:
                last = int(request.query["LAST"])
            except ValueError:
                last = -1
            if last < 1:
                raise _refuse(web.HTTPBadRequest, "LAST must be a positive integer")
            jobs = jobs[-last:]
        if _wants_json(request):
            return web.json_response({"jobs": [{"job_id": j.job_id, "phase": j.phase, "run_id": j.run_id,
                                                "owner": j.owner, "creation_time": iso(j.creation_time),
                                                "href": f"{ROOT}/{j.job_id}"} for j in jobs]})
        return _xml(jobs_xml(jobs))

    async def create(self, request: web.Request) -> web.StreamResponse:
        """Create a job (303 to it), owned by the name of the request's token; PHASE=RUN starts it at once."""
        owner = self._authorize(request)
        try:
            event = jobs_core.parse_request(await _pairs(request), self.pipelines, self.context.instruments,
                                            jobs_core.new_job_id(), tai_now())
        except JobRequestError as error:
            raise _refuse(web.HTTPBadRequest, str(error)) from error
        event = replace(event, owner=owner)
        uris = await asyncio.to_thread(raws.find_raws, Path(self.settings.data_root), event.instrument,
                                       list(event.exposures), list(event.detectors))
        if missing := jobs_core.missing_inputs(event, uris):
            raise _refuse(web.HTTPBadRequest, missing)
        await self._send(event)
        if await self.view.wait(event.job_id, lambda job: True, MAX_WAIT) is None:
            return web.Response(status=202, text=f"job {event.job_id} accepted, not yet registered\n",
                                headers={"Location": f"{ROOT}/{event.job_id}"})
        raise web.HTTPSeeOther(f"{ROOT}/{event.job_id}")

    async def read(self, request: web.Request) -> web.StreamResponse:
        """The job; with WAIT=n, block up to n s while it is in an active phase (or the PHASE= given), unless
        MAX_WAITING polls already block: then it answers at once."""
        job = await self._job(request)
        if "WAIT" in request.query:
            try:
                wait = float(request.query["WAIT"])
            except ValueError as error:
                raise _refuse(web.HTTPBadRequest, "WAIT must be a number of seconds") from error
            wait = MAX_WAIT if wait < 0 else min(wait, MAX_WAIT)
            seen = request.query.get("PHASE", job.phase).upper()
            if job.phase not in FINAL and seen == job.phase and self.waiting < self.max_waiting:
                self.waiting += 1
                try:
                    job = await self.view.wait(job.job_id, lambda j: j.phase != seen, wait) or job
                finally:
                    self.waiting -= 1
        if _wants_json(request):
            return web.json_response(job.to_dict())
        return _xml(job_xml(job))

    async def phase(self, request: web.Request) -> web.StreamResponse:
        """The phase, as text."""
        return web.Response(text=(await self._job(request)).phase)

    async def change_phase(self, request: web.Request) -> web.StreamResponse:
        """PHASE=RUN starts a PENDING job; PHASE=ABORT aborts one that has not ended."""
        job = await self._own_job(request)
        phase = dict((k.lower(), v) for k, v in await _pairs(request)).get("phase", "").upper()
        actions = {"RUN": "run", "ABORT": "abort"}
        if phase not in actions:
            raise _refuse(web.HTTPBadRequest, f"PHASE={phase or '(missing)'}: send PHASE=RUN or PHASE=ABORT")
        return await self._apply(job, actions[phase])

    async def post_job(self, request: web.Request) -> web.StreamResponse:
        """ACTION=DELETE, the UWS way to delete with a POST."""
        job = await self._own_job(request)
        action = dict((k.lower(), v) for k, v in await _pairs(request)).get("action", "").upper()
        if action != "DELETE":
            raise _refuse(web.HTTPBadRequest, f"ACTION={action or '(missing)'}: only ACTION=DELETE")
        return await self._apply(job, "abort")

    async def delete(self, request: web.Request) -> web.StreamResponse:
        """Abort the job (its record is kept, in phase ABORTED)."""
        return await self._apply(await self._own_job(request), "abort")

    async def results(self, request: web.Request) -> web.StreamResponse:
        """The outputs of each detector."""
        job = await self._job(request)
        if _wants_json(request):
            return web.json_response({"results": [r.to_dict() for r in job.results]})
        return _xml(results_xml(job))

    async def error(self, request: web.Request) -> web.StreamResponse:
        """Why the job is in ERROR or ABORTED (404 when it is not)."""
        job = await self._job(request)
        if job.phase not in (Phase.ERROR, Phase.ABORTED):
            raise _refuse(web.HTTPNotFound, f"job {job.job_id} is {job.phase}: it has no error")
        return web.Response(text=job.error_summary)

    async def parameters(self, request: web.Request) -> web.StreamResponse:
        """The parameters as given."""
        job = await self._job(request)
        if _wants_json(request):
            return web.json_response(job.parameters)
        return _xml(parameters_xml(job))


def register(app: faust.App, context: Context, tokens: Tokens) -> JobService:
    """Serve the UWS routes from `app`'s web server."""
    service = JobService(context, tokens)
    web_app: web.Application = app.web.web_app  # type: ignore[attr-defined]
    web_app.add_routes(service.routes())

    async def stop_view(_: web.Application) -> None:
        service.view.stop()

    web_app.on_cleanup.append(stop_view)
    return service
