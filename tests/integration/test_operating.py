"""What an operator watches during a visit: the JSON views, the dashboard in a real browser, the
Prometheus metrics and the JSON logs, on two real workers (started with the faust CLI).

One LSSTCam visit: detectors 0-99 get both snaps; a shell pipeline (`test {detector} -lt 80`)
succeeds on 0-79 and fails on 80-99; detectors 100-188 get no raw and wait (their image deadline
is far away). Once that picture is stable it is checked in the views, on the page and in the
metrics; then the visit is canceled, the waiting CCDs turn `canceled` and the summary appears.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from stack.cluster import PROJECT_ROOT, ClusterState
from streams.config import Settings
from streams.ops.workers import READY, WorkerPool
from streams.simulate.visits import Visits
from tests.integration import browser
from tests.integration.settings import isolated_settings

GROUP = "2026-11-25T03:00:00.000"
SURVEYS = """
[surveys]
"BLOCK-DASH*" = ["below-80"]

[pipelines.below-80]
kind = "shell"
command = ["test", "{detector}", "-lt", "80"]
timeout = 30
"""
TOKEN = "dashboard-test-token-0451"
SCREENSHOT = PROJECT_ROOT / ".local" / "artifacts" / "dashboard.png"


@dataclass
class Night:
    """Two workers, the visit sent to them, and how to reach them."""

    settings: Settings
    urls: list[str]
    logs: list[Path]
    visits: Visits

    def get(self, path: str, worker: int = 0) -> Any:
        response = httpx.get(self.urls[worker] + path, timeout=30)
        response.raise_for_status()
        return response.json()

    def visit(self, worker: int = 0) -> Any:
        return self.get(f"/visits/LSSTCam/{GROUP}/", worker)

    def wait_for(self, condition: str, check: Any, timeout: float = 120) -> Any:
        """The visit's view once `check` holds (a 404 until its nextVisit has been fanned out)."""
        deadline = time.monotonic() + timeout
        while True:
            response = httpx.get(self.urls[0] + f"/visits/LSSTCam/{GROUP}/", timeout=30)
            if response.status_code != 404:
                response.raise_for_status()
                if check(view := response.json()):
                    return view
            assert time.monotonic() < deadline, f"no {condition} after {timeout} s: {response.text[:300]}"
            time.sleep(1)


def states(ccds: list[dict[str, Any]]) -> dict[int, str]:
    return {int(ccd["detector"]): ccd["state"] for ccd in ccds}


def scrape(night: Night) -> dict[str, float]:
    """Every sample of both workers' /metrics, summed over the workers."""
    totals: Counter[str] = Counter()
    for url in night.urls:
        text = httpx.get(url + "/metrics", timeout=30).text
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                totals[name] += float(value)
    return dict(totals)


@pytest.fixture(scope="module")
def night(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    root = tmp_path_factory.mktemp("operating")
    surveys = root / "surveys.toml"
    surveys.write_text(SURVEYS)
    settings = isolated_settings(cluster, root, surveys_file=str(surveys), pipeline_processes=1,
                                 log_format="json", web_token=TOKEN)
    pool = WorkerPool(settings, root / "logs")
    try:
        workers = [pool.start(name, wait=False) for name in ("w1", "w2")]
        for worker in workers:
            worker.wait_for(READY, timeout=120)
        visits = Visits(settings, survey="BLOCK-DASH")
        night = Night(settings, [w.url for w in workers], [w.log for w in workers], visits)
        deadline = time.monotonic() + 60
        while not all(httpx.get(url + "/ready/", timeout=30).status_code == 200 for url in night.urls):
            assert time.monotonic() < deadline, "the workers never became ready"
            time.sleep(1)
        visits.next_visit(GROUP, instrument="LSSTCam", duration=30.0)
        visits.raws([visits.raw(GROUP, d, s, 1 + s, instrument="LSSTCam") for d in range(100) for s in (0, 1)])
        visits.send_bytes(visits.topics.raw_image_available.name, [b"\x07not a raw"])
        yield night
    finally:
        pool.stop_all()


def test_views_merge_every_worker_whichever_answers(night: Night) -> None:
    view = night.wait_for("100 results", lambda v: v["counts"]["done"] + v["counts"]["failed"] == 100)
    expected = {d: "done" if d < 80 else "failed" if d < 100 else "waiting" for d in range(189)}
    assert states(view["ccds"]) == expected
    assert view["counts"] == {"waiting": 89, "preloading": 0, "processing": 0, "done": 80, "failed": 20,
                              "timed out": 0, "canceled": 0}
    assert next(c for c in view["ccds"] if c["detector"] == 94)["name"] == "R22_S11"
    assert view["unreachable"] == []
    assert night.visit(worker=1) == night.visit(worker=0) | {"unreachable": []}  # either worker answers the same
    overview = night.get("/visits/", worker=1)
    [flying] = overview["in_flight"]
    assert (flying["group_id"], flying["results"], flying["detectors_expected"]) == (GROUP, 100, 189)
    assert flying["counts"] == {"failed": 20, "success": 80}
    assert sum(overview["latency"]["counts"]) == 100
    assert httpx.get(f"{night.urls[0]}/visits/LSSTCam/2026-01-01T00:00:00.000/", timeout=30).status_code == 404
    for url in night.urls:
        assert httpx.get(url + "/health/", timeout=30).json()["status"] == "ok"
        assert TOKEN not in httpx.get(url + "/visits/", timeout=30).text


def test_dashboard_shows_the_visits_ccd_states(night: Night) -> None:
    night.wait_for("100 results", lambda v: v["counts"]["done"] + v["counts"]["failed"] == 100)
    page = browser.dom(night.urls[1] + "/dashboard/")
    shown = {int(r["data-detector"]): r["data-state"] for r in browser.elements(page, "rect", "ccd")}
    assert len(shown) == 189
    assert shown == states(night.visit()["ccds"])
    assert Counter(shown.values()) == {"done": 80, "failed": 20, "waiting": 89}
    assert f"LSSTCam/{GROUP}" in page and "waiting 89" in page and "failed 20" in page
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.screenshot(night.urls[1] + "/dashboard/", SCREENSHOT)


def test_metrics_count_the_visit(night: Night) -> None:
    night.wait_for("100 results", lambda v: v["counts"]["done"] + v["counts"]["failed"] == 100)
    deadline = time.monotonic() + 60
    while (metrics := scrape(night)).get('prompt_streams_dead_letters_total{agent="detector"}') != 1:
        assert time.monotonic() < deadline, "the dead letter was not counted"
        time.sleep(1)
    assert metrics['prompt_streams_results_total{instrument="LSSTCam",status="success"}'] == 80
    assert metrics['prompt_streams_results_total{instrument="LSSTCam",status="failed"}'] == 20
    assert metrics["prompt_streams_dispatch_latency_seconds_count"] == 100
    assert metrics["prompt_streams_gather_latency_seconds_count"] == 100
    assert metrics["prompt_streams_raw_to_result_seconds_count"] == 100
    assert metrics["prompt_streams_visits_in_flight"] == 1
    assert metrics['prompt_streams_records_processed_total{processor="detector"}'] >= 189 + 100
    assert any(name.startswith("prompt_streams_consumer_lag{") for name in metrics)


def test_cancel_turns_waiting_ccds_canceled_and_summarises(night: Night) -> None:
    night.wait_for("100 results", lambda v: v["counts"]["done"] + v["counts"]["failed"] == 100)
    night.visits.cancel(GROUP)
    view = night.wait_for("summary", lambda v: v["summary_time"] > 0)
    assert view["counts"]["canceled"] == 89
    [recent] = night.get("/visits/")["recent"]
    assert recent["counts"] == {"canceled": 89, "failed": 20, "success": 80}
    page = browser.dom(night.urls[0] + "/dashboard/")
    shown = {int(r["data-detector"]): r["data-state"] for r in browser.elements(page, "rect", "ccd")}
    assert Counter(shown.values()) == {"done": 80, "failed": 20, "canceled": 89}
    assert "canceled 89" in page and f'data-visit="LSSTCam/{GROUP}"' in page
    deadline = time.monotonic() + 30
    while scrape(night).get('prompt_streams_results_total{instrument="LSSTCam",status="canceled"}') != 89:
        assert time.monotonic() < deadline, "the canceled results were not counted"
        time.sleep(1)
    assert scrape(night)["prompt_streams_visits_in_flight"] == 0


def test_logs_are_json_labelled_and_without_secrets(night: Night) -> None:
    night.wait_for("100 results", lambda v: v["counts"]["done"] + v["counts"]["failed"] == 100)
    entries = []
    for log in night.logs:
        text = log.read_text()
        assert TOKEN not in text
        entries += [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert {"time", "level", "logger", "message", "worker"} <= entries[0].keys()
    labelled = [e for e in entries if e.get("group") == GROUP]
    assert any(e.get("event") == "next visit fanned out" and e["instrument"] == "LSSTCam" and e["detectors"] == 189
               for e in labelled)
    outcomes = {e["detector"]: e for e in labelled if e.get("event") == "detector result"}
    assert outcomes[5]["instrument"] == "LSSTCam" and outcomes[5]["status"] == "success"
    assert outcomes[85]["visit"] == 2026112500001 and outcomes[85]["status"] == "failed"
