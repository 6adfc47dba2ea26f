"""The job service's handlers over a job view in memory: who may read, who may change a job, how many WAIT polls
block, and a job view that outlives records it cannot read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import replace
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from streams.config import Settings
from streams.errors import RegistryError
from streams.runtime.context import Context
from streams.runtime.driver import MemoryRegistry
from streams.serde.codec import Codec
from streams.serde.records import OcpsJob
from streams.web.auth import Tokens
from streams.web.uws import JobService, JobView

TOPIC = "prompt.ocps-jobs"
SETTINGS = replace(Settings(), web_token="ops", web_job_tokens="alice=a-token,bob=b-token", web_read_token="r")


class MemoryView:
    """Jobs in memory; `wait` blocks until `release` is set (and counts its callers)."""

    def __init__(self, jobs: dict[str, OcpsJob]) -> None:
        self.jobs = jobs
        self.waits = 0
        self.release = asyncio.Event()

    async def fresh(self) -> None:
        """Always fresh."""

    async def wait(self, job_id: str, done: Callable[[OcpsJob], bool], timeout: float) -> OcpsJob | None:
        self.waits += 1
        await self.release.wait()
        return self.jobs.get(job_id)


def service_of(*jobs: OcpsJob, settings: Settings = SETTINGS) -> tuple[JobService, MemoryView, list[Any]]:
    """A job service over these jobs; the events it sends go to the list."""
    sent: list[Any] = []

    async def send(topic: Any, key: str, value: Any) -> asyncio.Future[None]:
        sent.append(value)
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    context = SimpleNamespace(settings=settings, codec=None, send=send,
                              topics=SimpleNamespace(ocps_jobs=SimpleNamespace(name=TOPIC), ocps_job_events=None))
    service = JobService(cast(Context, context), Tokens.from_settings(settings))
    view = MemoryView({job.job_id: job for job in jobs})
    service.view = cast(JobView, view)
    return service, view, sent


def request(method: str, path: str, token: str | None = None) -> web.Request:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    job = path.split("?")[0].removeprefix("/ocps/jobs").strip("/").split("/")[0]
    return make_mocked_request(method, path, headers=headers, match_info={"job": job} if job else {})


def run(handler: Coroutine[Any, Any, web.StreamResponse]) -> web.StreamResponse:
    return asyncio.run(handler)


def test_reads_need_the_read_token_or_a_write_token_once_one_is_set() -> None:
    """List, job and phase: 401 without a token or with a wrong one; the read token and write tokens read."""
    service, _, _ = service_of(OcpsJob(job_id="j1"))
    for handler, path in ((service.list_jobs, "/ocps/jobs"), (service.read, "/ocps/jobs/j1"),
                          (service.phase, "/ocps/jobs/j1/phase")):
        for token in (None, "guess"):
            with pytest.raises(web.HTTPUnauthorized):
                run(handler(request("GET", path, token)))
        for token in ("r", "ops", "a-token"):
            assert run(handler(request("GET", path, token))).status == 200
    open_service, _, _ = service_of(OcpsJob(job_id="j1"), settings=replace(SETTINGS, web_read_token=""))
    assert run(open_service.read(request("GET", "/ocps/jobs/j1"))).status == 200


def test_another_clients_abort_is_forbidden_and_sends_nothing() -> None:
    """alice's job: bob's DELETE is 403 naming the owner; the read token's is 401; alice's and the operators'
    go to the job agent (303)."""
    service, view, sent = service_of(OcpsJob(job_id="j1", owner="alice"), OcpsJob(job_id="j2", owner="alice"))
    view.release.set()
    with pytest.raises(web.HTTPForbidden) as forbidden:
        run(service.delete(request("DELETE", "/ocps/jobs/j1", "b-token")))
    assert "belongs to alice" in (forbidden.value.text or "")
    with pytest.raises(web.HTTPUnauthorized):
        run(service.delete(request("DELETE", "/ocps/jobs/j1", "r")))
    assert sent == []
    for job_id, token in (("j1", "a-token"), ("j2", "ops")):
        with pytest.raises(web.HTTPSeeOther):
            run(service.delete(request("DELETE", f"/ocps/jobs/{job_id}", token)))
    assert [(event.action, event.job_id) for event in sent] == [("abort", "j1"), ("abort", "j2")]


def test_wait_polls_beyond_the_cap_answer_at_once_with_the_phase() -> None:
    """With one poll blocked and a cap of one, the next WAIT poll answers at once (the job as it is); the
    blocked one goes on and frees its place."""
    service, view, _ = service_of(OcpsJob(job_id="j1", phase="EXECUTING"))
    service.max_waiting = 1

    async def polls() -> web.StreamResponse:
        first = asyncio.create_task(service.read(request("GET", "/ocps/jobs/j1?WAIT=30", "r")))
        while view.waits == 0:
            await asyncio.sleep(0)
        second = await asyncio.wait_for(service.read(request("GET", "/ocps/jobs/j1?WAIT=30", "r")), 30)
        assert view.waits == 1 and service.waiting == 1
        view.release.set()
        await first
        return second

    second = run(polls())
    assert second.status == 200 and b"EXECUTING" in cast(web.Response, second).body  # type: ignore[operator]
    assert service.waiting == 0


def job_view() -> tuple[JobView, Codec, MemoryRegistry]:
    registry = MemoryRegistry()
    codec = Codec(registry)
    return JobView(SETTINGS, TOPIC, codec), codec, registry


def test_a_record_that_is_no_job_is_skipped_and_the_view_goes_on() -> None:
    """Garbage bytes or a key that is not text: skipped with a log line, the job as it was; the next record
    applies."""
    view, codec, _ = job_view()
    view.take(b"j1", codec.encode(TOPIC, OcpsJob(job_id="j1", phase="PENDING")), 0)
    view.take(b"j1", b"\x00\x00\x00\x00\x07garbage", 1)
    view.take(b"\xff\xfe", codec.encode(TOPIC, OcpsJob(job_id="j2")), 2)
    assert list(view.jobs) == ["j1"] and view.jobs["j1"].phase == "PENDING"
    view.take(b"j1", codec.encode(TOPIC, OcpsJob(job_id="j1", phase="QUEUED")), 3)
    assert view.jobs["j1"].phase == "QUEUED"


def test_a_tombstone_forgets_the_job() -> None:
    """A record with no value (an expired job's tombstone) takes the job out of the view."""
    view, codec, _ = job_view()
    view.take(b"j1", codec.encode(TOPIC, OcpsJob(job_id="j1")), 0)
    view.take(b"j1", None, 1)
    assert view.jobs == {}


def test_a_registry_outage_is_not_taken_for_a_bad_record() -> None:
    """When the registry cannot be asked, the record is not skipped: the reader is told, to read it again."""
    _, codec, registry = job_view()
    record = codec.encode(TOPIC, OcpsJob(job_id="j1"))
    fresh_view = JobView(SETTINGS, TOPIC, Codec(registry))  # it has not seen the schema yet
    registry.available = False
    with pytest.raises(RegistryError):
        fresh_view.take(b"j1", record, 0)
    registry.available = True
    fresh_view.take(b"j1", record, 0)
    assert list(fresh_view.jobs) == ["j1"]
