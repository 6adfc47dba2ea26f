"""The built-in science pipelines: `ap` (Alert Production), `single-frame`, `isr`, in fallback order.

All three share one bounded cache per pipeline process, filled by the preload: the master
calibrations valid at the visit time for the detector and filter (bias, dark, flat and the
per-amplifier gains and read noise, `ptc`), the template tiles and the reference stars that
overlap the detector's predicted footprint (Rubin preloads its refcat shards the same way). `ap`
raises PipelineUnavailable when no template covers the detector, so `single-frame` runs instead,
as in the real system.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from cachetools import LRUCache

from streams.config import Settings
from streams.data import refcat, repository
from streams.data.storage import Storage
from streams.errors import NonRetriableError
from streams.pipelines.associate_apdb import AssociateApdb, Exposure
from streams.pipelines.base import Outcome, PipelineUnavailable
from streams.science import isr
from streams.science.alert_production import Calibrated, NoPsf, NoTemplate, Template, Timer, calibrate, difference
from streams.science.association import band_of
from streams.science.background import FWHM_PER_SIGMA
from streams.science.geometry import PIXEL_ARCSEC, CcdShape, detector_wcs, footprint
from streams.serde.records import DetectorProgress

UNIX_EPOCH_MJD = 40587.0
RAW_LIMIT = 512 << 20
"""A raw larger than this (512 MiB) is refused as absurd."""


@dataclass(frozen=True)
class Inputs:
    """What a detector's run needs besides its raws."""

    calibrations: isr.Calibrations
    templates: list[Template]
    references: refcat.RefStars
    """The reference stars of the detector's padded footprint, in its band, at the visit's epoch."""
    files: dict[str, str]
    """The calibration files used, by type (they go into the outputs' headers)."""
    shape: CcdShape


class Science:
    """Shared by the science pipelines of one process: settings, storage, the preload cache."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = Path(settings.data_root)
        self.storage = Storage(settings)
        self.cache: LRUCache[Hashable, Any] = LRUCache(maxsize=settings.preload_cache_items)
        """Calibrations, template tiles and reference stars read, the least recently used dropped first."""

    def preloaded(self, key: Hashable, load: Callable[[], Any]) -> Any:
        """The value of `key` read before, or read now with `load()` and kept."""
        if key not in self.cache:
            self.cache[key] = load()
        return self.cache[key]

    def inputs(self, progress: DetectorProgress, filter_name: str, timings: dict[str, float] | None = None) -> Inputs:
        """Calibrations and templates for this detector's visit, from the cache when preloaded.

        Raises:
            MissingCalibration: no valid calibration of some type.
            UnsafePath: a filter that is not a plain name (it names the template folder).
        """
        repository.check_name("filter", filter_name)
        timings = {} if timings is None else timings
        started = time.perf_counter()
        found = {kind: repository.find_calibration(self.root, progress.instrument, kind, progress.detector,
                                                   filter_name, progress.next_visit_time)
                 for kind in repository.CALIB_TYPES}
        searched = time.perf_counter()
        calibs = {kind: self.preloaded(("calib", f.path), partial(read_calibration, f)) for kind, f in found.items()}
        read_calibs = time.perf_counter()
        height, width = calibs["bias"].shape
        wcs = detector_wcs(progress.instrument, progress.detector, progress.position[0], progress.position[1],
                           progress.camera_angle, CcdShape(height, width))
        ra, dec = footprint(wcs, CcdShape(height, width))
        tiles = repository.find_templates(self.root, progress.instrument, filter_name, ra, dec)
        searched_templates = time.perf_counter()
        templates = [self.preloaded(("template", t), partial(repository.read_template, t)) for t in tiles]
        band, epoch = band_of(filter_name), julian_year(progress.next_visit_time)
        references = self.preloaded(("refcat", tuple(np.round(ra, 6)), tuple(np.round(dec, 6)), band, round(epoch, 1)),
                                    lambda: refcat.load(self.root, ra, dec, band, epoch))
        done = time.perf_counter()
        search = (searched - started) + (searched_templates - read_calibs)
        timings |= {"prep_butlerSearchTime": search, "prep_butlerTransferTime": done - started - search,
                    "prep_butlerPreprocessTime": 0.0, "prep_butlerTotalTime": done - started}
        return Inputs(isr.Calibrations(calibs["bias"], calibs["dark"], calibs["flat"], calibs["ptc"]), templates,
                      references, {kind: f.path.name for kind, f in found.items()}, CcdShape(height, width))

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Fetch the inputs ahead of the raws; report the real system's preload timings."""
        timings: dict[str, float] = {}
        try:
            self.inputs(progress, progress.filters.split(",")[0], timings)
        except NonRetriableError:  # a missing calibration too
            return {}  # the run will say so
        return timings

    def raws(self, progress: DetectorProgress) -> list[isr.Raw]:
        """The held snaps, read and checked against what the events said.

        Raises:
            NonRetriableError: a raw whose header names another detector or group.
        """
        raws = [self._read(snap.uri) for snap in progress.snaps]
        for raw, snap in zip(raws, progress.snaps, strict=True):
            said = (raw.instrument, raw.detector, str(raw.header.get("GROUPID", progress.group_id)))
            if said != (progress.instrument, progress.detector, progress.group_id):
                raise NonRetriableError(f"{snap.uri}: its header says {said[0]} detector {said[1]} group {said[2]}, "
                                        f"the event said {progress.instrument} detector {progress.detector} group "
                                        f"{progress.group_id}")
        return raws

    def _read(self, uri: str) -> isr.Raw:
        """One raw, read as the camera wrote it.

        Raises:
            NonRetriableError: the file is not a raw the ISR can read (the message says what is wrong).
        """
        try:
            return isr.read_raw(self.storage.read(uri, RAW_LIMIT))
        except isr.RawFormatError as bad:
            raise NonRetriableError(f"{uri}: {type(bad).__name__}: {bad}") from bad

    def output_folder(self, progress: DetectorProgress) -> Path:
        """Where this detector's outputs go: its parts were validated on arrival, and the folder is checked to
        resolve under the output root anyway before it is created (a symbolic link or a part that slipped through
        must not put outputs elsewhere).

        Raises:
            UnsafePath: the folder would lie outside the output root.
        """
        root = Path(self.settings.output_root)
        folder = repository.contained(root, root / progress.instrument / progress.group_id / str(progress.detector))
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def calibrate(self, progress: DetectorProgress, timer: Timer) -> tuple[Calibrated, Inputs, list[isr.Raw]]:
        """Raws read, inputs found (preloaded or not), ISR and calibration done.

        Raises:
            NonRetriableError: no valid calibration, or raws that contradict the events.
        """
        with timer.step("readRaws"):
            raws = self.raws(progress)
        filter_name = raw_filter(raws[0], progress, progress.filters.split(",")[0])
        try:
            inputs = self.inputs(progress, filter_name)
            return calibrate(raws, inputs.calibrations, inputs.references, timer, self.settings.ccd_threads), \
                inputs, raws
        except (repository.MissingCalibration, NoPsf) as cannot:
            raise NonRetriableError(str(cannot)) from cannot

    def write_image(self, folder: Path, name: str, image: np.ndarray, variance: np.ndarray,
                    header: fits.Header, inputs: Inputs) -> str:
        """Write an image with its variance and the calibrations it used; return its URI."""
        header = header.copy()
        for kind, file in inputs.files.items():
            header[f"{kind.upper()}FILE"] = file
        path = folder / f"{name}.fits"
        fits.HDUList([fits.PrimaryHDU(image, header=header), fits.ImageHDU(variance, name="VARIANCE")]).writeto(
            path, overwrite=True)
        return path.as_uri()


def raw_filter(raw: isr.Raw, progress: DetectorProgress, default: str) -> str:
    """The first raw's FILTER header (`default` if it has none), checked.

    Raises:
        NonRetriableError: a FILTER that is not a plain name, naming the raw's file and the value.
    """
    try:
        return repository.check_name("filter", str(raw.header.get("FILTER", default)))
    except repository.UnsafePath as bad:
        raise NonRetriableError(f"{progress.snaps[0].uri if progress.snaps else 'the raw'}: {bad}") from bad


def read_calibration(found: repository.CalibrationFile) -> np.ndarray | isr.AmpCalibration:
    """A master's pixels, or the ptc's gains and read noise.

    Raises:
        NonRetriableError: a ptc that cannot be read or lacks an amplifier.
    """
    if found.calib_type != "ptc":
        return repository.read_calibration(found.path)
    try:
        return repository.read_ptc(found.path)
    except ValueError as bad:
        raise NonRetriableError(str(bad)) from bad


def calexp_metrics(calexp: Calibrated, timer: Timer) -> dict[str, float]:
    """Metrics every science pipeline reports: the image's, the astrometric fit's and the zero point's."""
    solution, calib = calexp.astrometry, calexp.photo_calib
    fits_quality = ({"astromRmsArcsec": solution.rms_arcsec} if solution.fitted else {}) \
        | ({"photoCalibScatter": calib.scatter} if calib.fitted else {})  # no NaN in a result
    return {"backgroundLevel": calexp.background, "psfFwhm": calexp.psf_sigma * FWHM_PER_SIGMA * PIXEL_ARCSEC,
            "cosmicRayCount": float(calexp.cosmic_rays), "astromMatchCount": float(solution.matches),
            "astromFallback": float(not solution.fitted), "photoCalibZeroPoint": calib.zero_point,
            "photoCalibStarCount": float(calib.stars), "photoCalibFallback": float(not calib.fitted),
            **fits_quality, **{f"{step}Time": t for step, t in timer.steps.items()}}


def calexp_header(raw: isr.Raw, calexp: Calibrated) -> fits.Header:
    """The raw's primary header with the fitted (or pointing) WCS and the zero point: what a reader of the
    calibrated and difference images needs to put them on the sky and in nJy."""
    header = raw.header.copy()
    header.update(calexp.wcs.to_header(relax=True))
    header["ASTROMOK"] = (calexp.astrometry.fitted, "WCS fitted to the reference catalogue")
    header["MAGZERO"] = (calexp.photo_calib.zero_point, "AB mag of 1 electron in this image")
    header["NJYPERE"] = (calexp.photo_calib.njy_per_electron, "nJy per electron")
    header["PHOTOOK"] = (calexp.photo_calib.fitted, "zero point fitted to reference stars")
    return header


def julian_year(tai_seconds: float) -> float:
    """The Julian epoch of a TAI Unix time (proper motions are applied to it)."""
    return float(refcat.julian_year(tai_seconds / 86400.0 + UNIX_EPOCH_MJD))


_science: Science | None = None


def science(settings: Settings) -> Science:
    """The process's one Science (and so one cache)."""
    global _science
    if _science is None or _science.settings is not settings:
        _science = Science(settings)
    return _science


class SciencePipeline:
    """What the built-in science pipelines share: the process's Science and its preload."""

    name: str

    def __init__(self, settings: Settings) -> None:
        self.science = science(settings)

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Calibrations and templates into the process's cache (any of the pipelines may use them)."""
        return self.science.preload(progress)


class AlertProduction(SciencePipeline):
    """ISR, calibration, difference imaging against the template, DIA source detection, association with the
    APDB and the alert packets. Without a template, or without a WCS fitted to the reference stars (the
    pointing's is arcseconds off: the subtraction would be dipoles), `single-frame` runs instead."""

    name = "ap"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.associate = AssociateApdb(settings)

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Calibrations and templates, then the APDB's history of the detector's region (loadDiaCatalogs)."""
        timings: dict[str, float] = {}
        try:
            inputs = self.science.inputs(progress, progress.filters.split(",")[0], timings)
        except NonRetriableError:  # a missing calibration too
            return {}  # the run will say so
        return timings | {"prep_apdbTime": self.associate.preload(progress, inputs.shape)}

    def run(self, progress: DetectorProgress) -> Outcome:
        """The full chain; PipelineUnavailable if no template covers the detector."""
        timer = Timer()
        calexp, inputs, raws = self.science.calibrate(progress, timer)
        if not calexp.astrometry.fitted:  # the template would land arcseconds off: dipoles, not alerts
            raise PipelineUnavailable(f"no astrometric solution ({calexp.astrometry.reason}): difference imaging "
                                      "needs one")
        try:
            diff = difference(calexp, inputs.templates, timer, self.science.settings.ccd_threads)
        except NoTemplate as missing:
            raise PipelineUnavailable(str(missing)) from missing
        with timer.step("writeOutputs"):
            folder = self.science.output_folder(progress)
            header = calexp_header(raws[0], calexp)
            uris = [self.science.write_image(folder, "calexp", calexp.image, calexp.variance, header, inputs),
                    self.science.write_image(folder, "difference", diff.image, diff.variance, header, inputs)]
            catalog = folder / "dia_sources.fits"
            diff.sources.write(catalog, overwrite=True)
            uris.append(catalog.as_uri())
        alerts = self.associate.run(progress, Exposure.from_ap(progress, raws, calexp, diff), folder, timer)
        uris.append(alerts.uri)
        metrics = calexp_metrics(calexp, timer) | alerts.metrics | {"diaSourceCount": float(len(diff.sources)),
                                                   "templateCoverage": diff.template_coverage,
                                                   "kernelStarCount": float(diff.kernel_stars),
                                                   "residualRejectedCount": float(diff.sources.meta["residuals"])}
        return Outcome(metrics=metrics, output_uris=uris)


class SingleFrame(SciencePipeline):
    """ISR and calibration only: for when no template exists."""

    name = "single-frame"

    def run(self, progress: DetectorProgress) -> Outcome:
        """Calibrate and write the calibrated exposure."""
        timer = Timer()
        calexp, inputs, raws = self.science.calibrate(progress, timer)
        folder = self.science.output_folder(progress)
        uri = self.science.write_image(folder, "calexp", calexp.image, calexp.variance, calexp_header(raws[0], calexp),
                                       inputs)
        return Outcome(metrics=calexp_metrics(calexp, timer), output_uris=[uri])


class IsrOnly(SciencePipeline):
    """Instrument signature removal only, snaps combined: the daytime checkout's pipeline."""

    name = "isr"

    def run(self, progress: DetectorProgress) -> Outcome:
        """ISR each snap, combine them, write the result."""
        timer = Timer()
        with timer.step("readRaws"):
            raws = self.science.raws(progress)
        try:
            inputs = self.science.inputs(progress, raw_filter(raws[0], progress, ""))
        except repository.MissingCalibration as missing:
            raise NonRetriableError(str(missing)) from missing
        with timer.step("isr"):
            image, variance, hits = isr.combine_snaps([isr.remove_signature(r, inputs.calibrations) for r in raws])
        uri = self.science.write_image(self.science.output_folder(progress), "postisr", image, variance,
                                       raws[0].header, inputs)
        return Outcome(metrics={"cosmicRayCount": float(hits.sum()), "isrMedian": float(np.median(image)),
                                **{f"{k}Time": v for k, v in timer.steps.items()}}, output_uris=[uri])
