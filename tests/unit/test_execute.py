"""Running pipelines: the fallback list and how failures become results."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest
from astropy.io import fits

from streams.config import Settings
from streams.errors import NonRetriableError, RetriableError
from streams.pipelines import execute
from streams.pipelines.base import Outcome, PipelineUnavailable
from streams.serde.records import CcdResult, DetectorProgress, HeldSnap
from tests.fits_bombs import gzip_bomb, small_raw


class Scripted:
    """A pipeline that does what it is told: succeed, be unavailable, or raise."""

    def __init__(self, name: str, behaviour: BaseException | None) -> None:
        self.name = name
        self.behaviour = behaviour

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        return {"prep_butlerTotalTime": 0.5}

    def run(self, progress: DetectorProgress) -> Outcome:
        if self.behaviour is not None:
            raise self.behaviour
        return Outcome(metrics={"diaSourceCount": 3.0}, output_uris=["file:///out/diff.fits"])


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pipelines named after what they do."""
    behaviours: dict[str, BaseException | None] = {
        "ap": PipelineUnavailable("no template"), "single-frame": None, "isr": None,
        "flaky": RetriableError("butler timeout before any APDB write"),
        "apdb": NonRetriableError("APDB may have changed"), "buggy": ZeroDivisionError("division by zero"),
    }
    for name, behaviour in behaviours.items():
        monkeypatch.setitem(execute.PIPELINES, name, lambda _c, n=name, b=behaviour: Scripted(n, b))
    execute.pipeline.cache_clear()
    yield
    execute.pipeline.cache_clear()


def progress(*pipelines: str) -> DetectorProgress:
    """A dispatched detector with one snap."""
    return DetectorProgress(instrument="LSSTCam", group_id="g", detector=94, pipelines=list(pipelines),
                            snaps=[HeldSnap(snap=0, exposure_id=7, uri="file:///raw/7.fits", arrival_time=1.0)])


def test_falls_back_when_a_pipeline_cannot_run(scripted: None) -> None:
    """No template for AP: single-frame runs instead and says so."""
    result = execute.run(progress("ap", "single-frame", "isr"))
    assert (result.status, result.pipeline) == ("success", "single-frame")
    assert result.metrics == {"diaSourceCount": 3.0} and result.exposure_ids == [7]
    assert result.process_end_time >= result.process_start_time > 0


def test_retriable_and_non_retriable_failures(scripted: None) -> None:
    """The error's type says whether running again is safe; its message says what happened."""
    flaky, apdb = execute.run(progress("flaky")), execute.run(progress("apdb"))
    assert (flaky.status, flaky.retriable, flaky.error_class) == ("failed", True, "RetriableError")
    assert (apdb.status, apdb.retriable) == ("failed", False) and "APDB" in apdb.error_message


def test_a_pipeline_bug_fails_the_ccd_not_the_worker(scripted: None) -> None:
    """An unexpected exception is a failed, non-retriable result with the exception named."""
    result = execute.run(progress("buggy"))
    assert (result.status, result.retriable, result.error_class) == ("failed", False, "ZeroDivisionError")
    assert "division by zero" in result.error_message


def test_nothing_could_run(scripted: None) -> None:
    """Every pipeline unavailable: failed, with each one's reason."""
    result = execute.run(progress("ap", "unknown"))
    assert result.status == "failed" and result.error_class == "NoPipelineCouldRun"
    assert "no template" in result.error_message and "no pipeline named 'unknown'" in result.error_message


def test_stand_in_costs_what_it_is_configured_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in's preload reports the real system's preload timings."""
    execute.pipeline.cache_clear()
    monkeypatch.setattr(execute, "_settings", replace(Settings(), standin_preload_seconds=0.01,
                                                      standin_run_seconds=0.01))
    timings = execute.preload(progress("stand-in"))
    assert set(timings) == {"prep_butlerTotalTime", "prep_butlerSearchTime", "prep_butlerTransferTime",
                            "prep_butlerPreprocessTime"} and timings["prep_butlerTotalTime"] >= 0.01
    assert execute.run(progress("stand-in")).status == "success"
    execute.pipeline.cache_clear()


def test_every_built_in_pipeline_is_named_as_surveys_name_it() -> None:
    """Each name a survey may use builds the pipeline of that name."""
    assert {name: builder(Settings()).name for name, builder in execute.PIPELINES.items()} == {
        name: name for name in execute.PIPELINES}


def test_a_worker_does_not_load_the_science_stack() -> None:
    """The worker, its commands and its tools start without SciPy and astropy's WCS: only pipeline
    processes need them (they take seconds to import, paid by every `faust -A streams.app` command)."""
    loaded = subprocess.run([sys.executable, "-c", "import sys, streams.app; print(' '.join(sys.modules))"],
                            capture_output=True, text=True, check=True, timeout=120).stdout.split()
    assert not {"scipy", "astropy.wcs", "photutils", "streams.science"} & set(loaded)


def run_ap(tmp_path: Path, hdus: fits.HDUList) -> CcdResult:
    """The real `ap` pipeline, built first, on `hdus` written as detector 94's one snap."""
    raw = tmp_path / "raw" / "7.fits"
    raw.parent.mkdir()
    hdus.writeto(raw)
    execute.init_process(Settings(data_root=str(tmp_path), output_root=str(tmp_path / "out")))
    execute.pipeline.cache_clear()
    execute.pipeline("ap")
    try:
        return execute.run(replace(progress("ap"), snaps=[HeldSnap(snap=0, exposure_id=7, uri=raw.as_uri(),
                                                                   arrival_time=1.0)]))
    finally:
        execute.pipeline.cache_clear()


@pytest.mark.parametrize(("damage", "reason"), [
    ("drop Segment03", "MissingSegmentError"),
    ("instrument HSC", "NotLsstCamError"),
])
def test_a_raw_the_isr_cannot_read_fails_its_ccd_with_the_typed_reason(tmp_path: Path, damage: str,
                                                                      reason: str) -> None:
    """The real `ap` pipeline on a damaged camera raw: the CCD ends `failed`, not retriable, and the result says
    which file and what is wrong with it (not a bare ValueError from deep in the ISR)."""
    hdus = small_raw()
    if damage == "drop Segment03":
        del hdus["Segment03"]
    else:
        hdus[0].header["INSTRUME"] = "HSC"
    result = run_ap(tmp_path, hdus)
    assert (result.status, result.retriable, result.error_class) == ("failed", False, "NonRetriableError")
    assert str(tmp_path / "raw" / "7.fits") in result.error_message and reason in result.error_message
    assert ("Segment03" in result.error_message) == (damage == "drop Segment03")


def test_a_decompression_bomb_fails_its_ccd_without_inflating(tmp_path: Path) -> None:
    """Issue 14: a 1 MB raw whose Segment03 is one GZIP_1 tile inflating to 1 GiB (1 MB took 2.1 GB in 11 s). The
    CCD fails, not retriable, naming the raw, the segment and the compression; nothing near the bomb's size is
    ever allocated (the pipeline's peak stays under 64 MiB)."""
    hdus = small_raw()
    hdus[hdus.index_of("Segment03")] = gzip_bomb(hdus["Segment03"], 1 << 30)
    tracemalloc.start()
    try:
        result = run_ap(tmp_path, hdus)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (tmp_path / "raw" / "7.fits").stat().st_size < 2 << 20
    assert (result.status, result.retriable, result.error_class) == ("failed", False, "NonRetriableError")
    assert "OversizedRawError" in result.error_message and "Segment03: GZIP_1" in result.error_message
    assert peak < 64 << 20


def test_alert_production_on_a_simulated_camera_raw_fits_its_wcs_and_zero_point(tmp_path: Path) -> None:
    """The real `ap` pipeline on a simulated night's camera-format raws (no sky WCS, the boresight a few
    arcseconds off): the WCS is fitted to the preloaded reference stars and the zero point is the simulation's
    within 2%. Without a reference catalogue the pointing's WCS cannot place the template, so the CCD runs
    `single-frame` instead, its fallbacks flagged."""
    from streams.clock import tai_now
    from streams.science.geometry import CcdShape
    from streams.simulate import night as simulated

    night = simulated.plan_night(1, (94,), CcdShape(512, 512), start=datetime(2026, 11, 25, 3))
    arrivals = simulated.write_night(tmp_path, night)
    visit = night.visits[0]
    detector = replace(progress("ap", "single-frame"), group_id=visit.group_id, filters=simulated.FILTER,
                       position=[visit.ra, visit.dec], camera_angle=visit.camera_angle,
                       next_visit_time=tai_now(),
                       snaps=[HeldSnap(snap=s, exposure_id=raws[0].exposure_id, uri=raws[0].uri, arrival_time=1.0)
                              for s, raws in enumerate(arrivals[0])])
    try:
        execute.init_process(Settings(data_root=str(tmp_path), output_root=str(tmp_path / "out")))
        execute.pipeline.cache_clear()
        fitted = execute.run(detector)
        shutil.rmtree(tmp_path / "refcat")
        execute.init_process(Settings(data_root=str(tmp_path), output_root=str(tmp_path / "out")))  # a new cache
        execute.pipeline.cache_clear()
        pointing = execute.run(detector)
    finally:
        execute.pipeline.cache_clear()
    assert (fitted.status, fitted.pipeline) == ("success", "ap"), fitted.error_message
    assert fitted.metrics["astromFallback"] == 0 and fitted.metrics["astromRmsArcsec"] < 0.05
    assert fitted.metrics["photoCalibFallback"] == 0
    measured = 10 ** (-0.4 * (fitted.metrics["photoCalibZeroPoint"] - 31.4))
    assert measured == pytest.approx(simulated.throughput(night, 94), rel=0.02)
    assert (pointing.status, pointing.pipeline) == ("success", "single-frame")
    assert pointing.metrics["astromFallback"] == 1 and pointing.metrics["photoCalibFallback"] == 1
