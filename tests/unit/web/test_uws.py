"""The UWS 1.1 documents the job service writes."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from streams.serde.records import OcpsJob, OcpsJobResult
from streams.web.uws import job_xml, jobs_xml, results_xml

UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"
NIL = "{http://www.w3.org/2001/XMLSchema-instance}nil"
HREF = "{http://www.w3.org/1999/xlink}href"
T0 = 1_800_000_000.0 + 37.0  # TAI: 2027-01-15T08:00:00 UTC


def job(**changes: object) -> OcpsJob:
    """An ended job with one failed detector."""
    fields: dict[str, object] = {
        "job_id": "0123456789abcdef", "phase": "ERROR", "pipeline": "copy", "run_id": "night 1",
        "parameters": {"pipeline": "copy", "exposure": "1,2"}, "creation_time": T0, "start_time": T0 + 1,
        "end_time": T0 + 2, "error_summary": "1 of 2 detectors did not succeed: detector 1 failed: boom",
        "results": [OcpsJobResult(detector=0, status="success", output_uris=["file:///o/0/a", "file:///o/0/b"]),
                    OcpsJobResult(detector=1, status="failed", error_message="boom")]}
    return OcpsJob(**(fields | changes))  # type: ignore[arg-type]


def test_the_job_document_has_the_uws_elements_in_order() -> None:
    """jobId, runId, ownerId, phase, quote, times, duration, destruction, parameters, results, errorSummary."""
    root = ET.fromstring(job_xml(job()))
    assert root.tag == f"{UWS}job" and root.get("version") == "1.1"
    assert [child.tag.removeprefix(UWS) for child in root] == [
        "jobId", "runId", "ownerId", "phase", "quote", "creationTime", "startTime", "endTime",
        "executionDuration", "destruction", "parameters", "results", "errorSummary", "jobInfo"]
    assert root.findtext(f"{UWS}creationTime") == "2027-01-15T08:00:00.000Z"
    assert root.find(f"{UWS}ownerId").get(NIL) == "true"  # type: ignore[union-attr]
    assert {p.get("id"): p.text for p in root.iter(f"{UWS}parameter")} == {"pipeline": "copy", "exposure": "1,2"}
    assert root.findtext(f"{UWS}errorSummary/{UWS}message") == job().error_summary


def test_times_not_reached_are_nil_and_a_running_job_has_no_error() -> None:
    """A PENDING job: no start or end time, no errorSummary element."""
    root = ET.fromstring(job_xml(job(phase="PENDING", start_time=0.0, end_time=0.0, results=[])))
    assert root.find(f"{UWS}startTime").get(NIL) == "true"  # type: ignore[union-attr]
    assert root.find(f"{UWS}errorSummary") is None


def test_results_and_the_job_list() -> None:
    """One uws:result per output URI; one jobref per job, linking it."""
    results = ET.fromstring(results_xml(job()))
    assert [(r.get("id"), r.get(HREF)) for r in results] == [("detector-0-0", "file:///o/0/a"),
                                                             ("detector-0-1", "file:///o/0/b")]
    listing = ET.fromstring(jobs_xml([job()]))
    assert [(ref.get("id"), ref.get(HREF), ref.findtext(f"{UWS}phase")) for ref in listing] == [
        ("0123456789abcdef", "/ocps/jobs/0123456789abcdef", "ERROR")]
