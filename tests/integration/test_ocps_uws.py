"""The OCPS job service over real HTTP, served by two real workers on the real broker.

Jobs are created on one worker and read on the other (a job's phase must be the same whichever
worker answers); they run as synthetic visits through the topology: shell pipelines declared in
this module's surveys file copy the raws, fail, or take their time. A calibration sequence's
visit summary creates a job by itself through a configured trigger. The workers have a read token
(every client here sends it unless told not to) and two named clients' job tokens besides the
operators' token.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.etree import ElementTree as ET

import httpx
import pytest
from confluent_kafka import Producer

from stack.cluster import ClusterState
from streams.config import Settings
from streams.core.focal_plane import detector_name
from streams.ops.workers import WorkerPool
from streams.serde.records import RawImageAvailable
from streams.simulate.camera import raw_key
from streams.simulate.visits import Visits
from tests.integration.settings import isolated_settings
from topology.topics import declare

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READ = {"Authorization": "Bearer read-only-token"}
ALICE = {"Authorization": "Bearer alice-token"}
BOB = {"Authorization": "Bearer bob-token"}
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
INSTRUMENT = "LSSTComCam"
DETECTORS = (0, 1, 2)
DAY_OBS = 20261125
EXPOSURES = (DAY_OBS * 100_000 + 501, DAY_OBS * 100_000 + 502)
SEQUENCE = (DAY_OBS * 100_000 + 601, DAY_OBS * 100_000 + 602)
SEQUENCE_GROUP = "2026-11-25T04:00:00.000"
SURVEYS = """
[surveys]
"CALIB-SEQ-*" = ["stand-in"]
"BLOCK-*" = ["stand-in"]

[pipelines.copy]
kind = "shell"
command = ["cp", "{raws}", "{output_dir}"]
timeout = 60

[pipelines.always-fails]
kind = "shell"
command = ["ls", "{output_dir}/no-such-file"]
timeout = 60

[pipelines.slow]
kind = "shell"
command = ["sleep", "20"]
timeout = 60
"""
TRIGGERS = """
[[triggers]]
name = "reduce-sequence"
survey = "CALIB-SEQ-*"
pipeline = "copy"
"""


@dataclass
class Service:
    """Two workers' UWS endpoints and a way to send visits."""

    urls: tuple[str, ...]
    visits: Visits
    settings: Settings
    pool: WorkerPool

    def client(self, worker: int = 0, reader: bool = True) -> httpx.Client:
        """A client of one worker that sends the read token (or, `reader` False, none); redirects are not
        followed, so tests see them."""
        return httpx.Client(base_url=self.urls[worker], timeout=90.0, headers=READ if reader else {})


def write_raws(root: Path, exposures: tuple[int, ...]) -> dict[tuple[int, int], Path]:
    """Small files where the camera's naming puts the raws of these exposures."""
    paths = {}
    for exposure in exposures:
        for detector in DETECTORS:
            path = root / "raw" / raw_key(INSTRUMENT, exposure, detector)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"raw of exposure {exposure} detector {detector}\n")
            paths[detector, exposure] = path
    return paths


@pytest.fixture(scope="module")
def service(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """Two workers serving the API, with shell pipelines and a trigger configured."""
    root = tmp_path_factory.mktemp("ocps")
    (root / "surveys.toml").write_text(SURVEYS)
    (root / "ocps.toml").write_text(TRIGGERS)
    (root / "instruments.toml").write_text(f'[{INSTRUMENT}]\ndetectors = "0-8"\ndisabled = [3, 4, 5, 6, 7, 8]\n')
    settings = isolated_settings(cluster, root, web_token=TOKEN, web_read_token=READ["Authorization"][7:],
                                 web_job_tokens="alice=alice-token, bob=bob-token",
                                 surveys_file=str(root / "surveys.toml"),
                                 ocps_triggers_file=str(root / "ocps.toml"),
                                 instruments_file=str(root / "instruments.toml"), pipeline_processes=1)
    write_raws(Path(settings.data_root), EXPOSURES + SEQUENCE)
    pool = WorkerPool(settings, root / "logs")
    try:
        first, second = pool.start("w1"), pool.start("w2")  # one after the other: no rebalance left to settle
        yield Service((first.url, second.url), Visits(settings, survey="BLOCK-1"), settings, pool)
    finally:
        pool.stop_all()


def create(service: Service, form: Mapping[str, str] | None = None, worker: int = 0, auth: Mapping[str, str] = AUTH,
           **parameters: str) -> str:
    """Create a job with a form (with the operators' token unless told); return its id (from the 303 redirect)."""
    with service.client(worker) as client:
        response = client.post("/ocps/jobs", data={**(form or {}), **parameters}, headers=auth)
    assert response.status_code == 303, response.text
    return str(response.headers["Location"]).rsplit("/", 1)[-1]


def job_json(service: Service, job_id: str, worker: int = 1, **query: str) -> dict[str, object]:
    """The job as JSON, from (by default) the other worker."""
    with service.client(min(worker, len(service.urls) - 1)) as client:
        response = client.get(f"/ocps/jobs/{job_id}", params=query, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_for_end(service: Service, job_id: str, timeout: float = 150.0) -> dict[str, object]:
    """Poll with UWS WAIT until the job is COMPLETED, ERROR or ABORTED."""
    deadline = time.monotonic() + timeout
    job = job_json(service, job_id)
    while job["phase"] not in ("COMPLETED", "ERROR", "ABORTED") and time.monotonic() < deadline:
        job = job_json(service, job_id, WAIT="20", PHASE=str(job["phase"]))
    return job


def path_of(uri: str) -> Path:
    """The local path of a file URI."""
    return Path(unquote(urlsplit(uri).path))


def test_creating_or_aborting_needs_the_bearer_token(service: Service) -> None:
    """No token or a wrong one: 401 with the reason, and no job is made; the read token reads, but changes
    nothing."""
    form = {"pipeline": "copy", "instrument": INSTRUMENT, "exposure": str(EXPOSURES[0])}
    with service.client(reader=False) as client:
        before = client.get("/ocps/jobs", headers=READ)
        missing = client.post("/ocps/jobs", data=form)
        wrong = client.post("/ocps/jobs", data=form, headers={"Authorization": "Bearer guessed"})
        read_only = client.post("/ocps/jobs", data=form, headers=READ)
        after = client.get("/ocps/jobs", headers=AUTH)  # a write token reads too
    assert before.status_code == 200 and ET.fromstring(before.content).tag == f"{UWS}jobs"
    assert missing.status_code == 401 and "Authorization: Bearer" in missing.text
    assert wrong.status_code == 401 and "not the configured" in wrong.text
    assert read_only.status_code == 401 and "not the configured" in read_only.text
    assert after.content == before.content, "a refused request made no job"
    job_id = create(service, form)  # PENDING: nothing runs
    with service.client(1) as client:
        refused = client.post(f"/ocps/jobs/{job_id}/phase", data={"PHASE": "ABORT"})
        phase = client.get(f"/ocps/jobs/{job_id}/phase")
    assert refused.status_code == 401 and phase.text == "PENDING"


def test_reading_needs_the_read_token_where_one_is_set(service: Service) -> None:
    """Without a token or with a wrong one, the job service's reads and the JSON views answer 401; health,
    readiness and metrics stay open; a view asks the other worker with the token (none unreachable)."""
    job_id = create(service, pipeline="copy", instrument=INSTRUMENT, exposure=str(EXPOSURES[0]))
    with service.client(reader=False) as client:
        for path in ("/ocps/jobs", f"/ocps/jobs/{job_id}", f"/ocps/jobs/{job_id}/phase", "/visits/",
                     "/local/visits/", f"/focal-plane/{INSTRUMENT}/"):
            for headers in ({}, {"Authorization": "Bearer guessed"}):
                response = client.get(path, headers=headers)
                assert response.status_code == 401 and "bearer" in response.text.lower(), (path, response.text)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert all(client.get(path).status_code == 200 for path in ("/health/", "/metrics", "/dashboard/"))
        assert client.get("/ready/").status_code in (200, 503)
        visits = client.get("/visits/", headers=READ)
    assert visits.status_code == 200 and visits.json()["unreachable"] == [], visits.text


def test_faust_router_and_table_views_are_not_served(service: Service) -> None:
    """faust's own /router/ (every worker's URL) and /table/ (table rows) views answer 404 even with a token."""
    with service.client(reader=False) as client:
        for path in ("/router/", "/table/", "/router/detector/key/", "/table/detector/"):
            assert client.get(path, headers=AUTH).status_code == 404, path


def test_only_its_owner_or_the_operators_may_change_a_job(service: Service) -> None:
    """A job created with alice's token is alice's: bob's abort or delete is refused (403) and changes nothing;
    alice may abort it, and the operators' token may abort anyone's."""
    form = {"pipeline": "copy", "instrument": INSTRUMENT, "exposure": str(EXPOSURES[0])}
    alices, other = create(service, form, auth=ALICE), create(service, form, auth=ALICE)
    assert job_json(service, alices)["owner"] == "alice"
    with service.client(1) as client:
        aborted_by_bob = client.post(f"/ocps/jobs/{alices}/phase", data={"PHASE": "ABORT"}, headers=BOB)
        deleted_by_bob = client.delete(f"/ocps/jobs/{alices}", headers=BOB)
        run_by_bob = client.post(f"/ocps/jobs/{alices}/phase", data={"PHASE": "RUN"}, headers=BOB)
        assert client.get(f"/ocps/jobs/{alices}/phase").text == "PENDING"
        deleted_by_alice = client.delete(f"/ocps/jobs/{alices}", headers=ALICE)
        deleted_by_operators = client.delete(f"/ocps/jobs/{other}", headers=AUTH)
    for refused in (aborted_by_bob, deleted_by_bob, run_by_bob):
        assert refused.status_code == 403 and "belongs to alice" in refused.text, refused.text
    assert deleted_by_alice.status_code == 303 and deleted_by_operators.status_code == 303
    assert job_json(service, alices)["phase"] == job_json(service, other)["phase"] == "ABORTED"


def test_a_record_that_is_no_job_does_not_stop_the_job_view(service: Service) -> None:
    """Bytes no job decodes from on the job topic are skipped: both workers go on answering, with the jobs
    created after them; a tombstone (an expired job's) takes its job out of every worker's view."""
    topic = declare(service.settings).ocps_jobs.name
    producer = Producer(service.settings.kafka_config())
    producer.produce(topic, b"not a job", key=b"not-a-job")
    producer.flush(30)
    job_id = create(service, pipeline="copy", instrument=INSTRUMENT, exposure=str(EXPOSURES[0]))
    for worker in (0, 1):
        with service.client(worker) as client:
            listing = client.get("/ocps/jobs", params={"format": "json"})
        assert listing.status_code == 200 and job_id in [j["job_id"] for j in listing.json()["jobs"]]
    producer.produce(topic, None, key=job_id.encode())
    producer.flush(30)
    for worker in (0, 1):
        with service.client(worker) as client:
            assert client.get(f"/ocps/jobs/{job_id}").status_code == 404


def test_a_job_runs_to_completed_with_its_results_on_either_worker(service: Service) -> None:
    """Created PENDING on one worker, run on the other: the synthetic visit copies each raw; results link them."""
    job_id = create(service, pipeline="copy", instrument=INSTRUMENT, exposure=f"{EXPOSURES[0]},{EXPOSURES[1]}",
                    detector="0-1", runid="copy test")
    for worker in (0, 1):
        assert job_json(service, job_id, worker)["phase"] == "PENDING"
    with service.client(1) as client:
        run = client.post(f"/ocps/jobs/{job_id}/phase", data={"PHASE": "RUN"}, headers=AUTH)
    assert run.status_code == 303 and run.headers["Location"] == f"/ocps/jobs/{job_id}"
    job = wait_for_end(service, job_id)
    assert job["phase"] == "COMPLETED", job
    with service.client(0) as client:
        document = ET.fromstring(client.get(f"/ocps/jobs/{job_id}").content)
        results = ET.fromstring(client.get(f"/ocps/jobs/{job_id}/results").content)
        listing = ET.fromstring(client.get("/ocps/jobs", params={"PHASE": "COMPLETED"}).content)
    assert document.findtext(f"{UWS}phase") == "COMPLETED" and document.findtext(f"{UWS}runId") == "copy test"
    assert document.find(f"{UWS}startTime").text and document.find(f"{UWS}endTime").text  # type: ignore[union-attr]
    hrefs = [r.get("{http://www.w3.org/1999/xlink}href") or "" for r in results.findall(f"{UWS}result")]
    assert len(hrefs) == 2, "one output folder per detector"
    for detector, href in zip((0, 1), sorted(hrefs), strict=True):
        copied = sorted(p.name for p in path_of(href).iterdir())
        assert copied == sorted(f"CC_O_{e // 100_000}_{e % 100_000:06d}_{detector_name(INSTRUMENT, detector)}.fits"
                                for e in EXPOSURES)
    assert job_id in [ref.get("id") for ref in listing.findall(f"{UWS}jobref")]


def test_a_failing_pipeline_ends_in_error_with_the_reason(service: Service) -> None:
    """JSON parameters with PHASE=RUN start at once; a failing pipeline gives ERROR and /error says why."""
    with service.client() as client:
        response = client.post("/ocps/jobs", json={"pipeline": "always-fails", "instrument": INSTRUMENT,
                                                   "exposure": [EXPOSURES[0]], "detector": 2, "PHASE": "RUN"},
                               headers=AUTH)
    assert response.status_code == 303, response.text
    job_id = response.headers["Location"].rsplit("/", 1)[-1]
    job = wait_for_end(service, job_id)
    assert job["phase"] == "ERROR"
    with service.client(1) as client:
        error = client.get(f"/ocps/jobs/{job_id}/error")
        rerun = client.post(f"/ocps/jobs/{job_id}/phase", data={"PHASE": "RUN"}, headers=AUTH)
    assert error.status_code == 200 and "detector 2 failed" in error.text and "no-such-file" in error.text
    assert rerun.status_code == 409 and "only a PENDING job can be run" in rerun.text


def test_bad_requests_get_a_4xx_that_says_why(service: Service) -> None:
    """Unknown pipeline, missing or invalid parameters, missing raws, unknown job, bad phase: each says why."""
    base = {"pipeline": "copy", "instrument": INSTRUMENT, "exposure": str(EXPOSURES[0])}
    cases = [
        (base | {"pipeline": "nope"}, "unknown pipeline 'nope'"),
        ({"instrument": INSTRUMENT, "exposure": "1"}, "'pipeline' is required"),
        (base | {"instrument": "HSC"}, "unknown"),
        ({k: v for k, v in base.items() if k != "exposure"}, "'exposure' is required"),
        (base | {"exposure": "12x"}, "exposure ids are integers"),
        (base | {"detector": "7"}, "not active detectors"),
        (base | {"detector": "0-99999999"}, "not a detector id"),
        (base | {"colour": "red"}, "unknown parameter(s) colour"),
        (base | {"exposure": str(EXPOSURES[0] + 50)}, "no raw in the data repository"),
        (base | {"PHASE": "ABORT"}, "only PHASE=RUN"),
    ]
    with service.client() as client:
        for form, why in cases:
            response = client.post("/ocps/jobs", data=form, headers=AUTH)
            assert response.status_code == 400 and why in response.text, (form, response.text)
        not_json = client.post("/ocps/jobs", content=b"{", headers=AUTH | {"Content-Type": "application/json"})
        assert not_json.status_code == 400 and "not JSON" in not_json.text
        unknown = client.get("/ocps/jobs/0123456789abcdef")
        assert unknown.status_code == 404 and "no job" in unknown.text
        job_id = create(service, base)
        bad_phase = client.post(f"/ocps/jobs/{job_id}/phase", data={"PHASE": "SUSPEND"}, headers=AUTH)
        assert bad_phase.status_code == 400 and "PHASE=RUN or PHASE=ABORT" in bad_phase.text
        assert client.get("/ocps/jobs", params={"LAST": "0"}).status_code == 400


def test_abort_a_pending_and_an_executing_job(service: Service) -> None:
    """DELETE aborts a PENDING job; PHASE=ABORT an EXECUTING one; a second abort is refused."""
    pending = create(service, pipeline="copy", instrument=INSTRUMENT, exposure=str(EXPOSURES[0]), detector="0")
    running = create(service, pipeline="slow", instrument=INSTRUMENT, exposure=str(EXPOSURES[1]), detector="0",
                     PHASE="RUN")
    assert job_json(service, running)["phase"] == "EXECUTING"
    with service.client(1) as client:
        deleted = client.delete(f"/ocps/jobs/{pending}", headers=AUTH)
        aborted = client.post(f"/ocps/jobs/{running}/phase", data={"PHASE": "ABORT"}, headers=AUTH)
        again = client.post(f"/ocps/jobs/{running}", data={"ACTION": "DELETE"}, headers=AUTH)
    assert deleted.status_code == 303 and aborted.status_code == 303
    assert again.status_code == 409 and "already ABORTED" in again.text
    for job_id, was in ((pending, "PENDING"), (running, "EXECUTING")):
        for worker in (0, 1):
            job = job_json(service, job_id, worker)
            assert job["phase"] == "ABORTED" and job["error_summary"] == f"aborted while {was}"


def test_the_end_of_a_calibration_sequence_creates_a_job(service: Service) -> None:
    """A CALIB-SEQ visit's summary fires the trigger: a job copies the sequence's raws, owned by the trigger."""
    visits = service.visits
    visits.next_visit(SEQUENCE_GROUP, instrument=INSTRUMENT, survey="CALIB-SEQ-BIAS", nimages=2)
    visits.raws([RawImageAvailable(instrument=INSTRUMENT, group_id=SEQUENCE_GROUP, detector=d, snap=snap,
                                   exposure_id=exposure, uri=f"file://{service.settings.data_root}/unused/{d}")
                 for d in DETECTORS for snap, exposure in enumerate(SEQUENCE)])
    deadline = time.monotonic() + 120
    triggered: list[dict[str, object]] = []
    while not triggered and time.monotonic() < deadline:
        with service.client(1) as client:
            listing = client.get("/ocps/jobs", headers={"Accept": "application/json"}).json()["jobs"]
        triggered = [j for j in listing if j["owner"] == "trigger:reduce-sequence"]
        time.sleep(0.5)
    assert len(triggered) == 1, listing
    job = wait_for_end(service, str(triggered[0]["job_id"]))
    assert job["phase"] == "COMPLETED", job
    assert job["exposures"] == list(SEQUENCE) and job["detectors"] == list(DETECTORS)
    results = job["results"]
    assert isinstance(results, list) and len(results) == len(DETECTORS)
    for result in results:
        assert len(list(path_of(result["output_uris"][0]).iterdir())) == len(SEQUENCE)


def test_jobs_survive_a_restart_of_every_worker(service: Service) -> None:
    """After SIGKILL of both workers, a new one lists every job as it was and runs a PENDING one."""
    pending = create(service, pipeline="copy", instrument=INSTRUMENT, exposure=str(EXPOSURES[0]), detector="1")
    with service.client(0) as client:
        before = {j["job_id"]: j["phase"] for j in client.get("/ocps/jobs?format=json").json()["jobs"]}
    assert before[pending] == "PENDING" and "COMPLETED" in before.values() and "ABORTED" in before.values()
    for worker in service.pool.started:
        worker.stop(signal.SIGKILL)
    service.urls = (service.pool.start("w3").url,)
    with service.client(0) as client:
        after = {j["job_id"]: j["phase"] for j in client.get("/ocps/jobs?format=json").json()["jobs"]}
        run = client.post(f"/ocps/jobs/{pending}/phase", data={"PHASE": "RUN"}, headers=AUTH)
    assert after == before
    assert run.status_code == 303
    assert wait_for_end(service, pending)["phase"] == "COMPLETED"
