"""Alert Production on one detector: raws and calibrations in, calibrated and difference images and
DIA sources out, with the time each step took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.fft
from astropy.table import Table
from astropy.wcs import WCS
from scipy.ndimage import minimum_filter
from scipy.spatial import cKDTree

from streams.data.refcat import RefStars
from streams.errors import NonRetriableError
from streams.science import astrometry, background, detection, diffim, isr, photometry
from streams.science.forced import psf_photometry
from streams.science.geometry import CcdShape, detector_wcs


class NoPsf(NonRetriableError, ValueError):  # noqa: N818 (a condition of the data)
    """No star stands out enough to measure the PSF: the image cannot be calibrated."""


class NoTemplate(NonRetriableError, ValueError):  # noqa: N818 (a condition a fallback pipeline handles)
    """No template covers the detector: difference imaging cannot run."""


@dataclass(frozen=True)
class Template:
    """A template tile: a sky-subtracted deep image [e- per science exposure], its variance, WCS and PSF."""

    image: np.ndarray
    variance: np.ndarray
    wcs: WCS
    psf_sigma: float


@dataclass
class Timer:
    """Seconds per pipeline step."""

    steps: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Time the block as step `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class Calibrated:
    """A detector after ISR, snap combination, background subtraction, astrometry and photometric calibration."""

    image: np.ndarray
    variance: np.ndarray
    wcs: WCS
    """Fitted to the reference catalogue, or the pointing's when the fit failed (see `astrometry`)."""
    background: float
    psf_sigma: float
    cosmic_rays: int
    stars: np.ndarray
    """(y, x) of the bright stars (above 30 sigma): for the PSF and the matching kernel."""
    astrometry: astrometry.Solution
    photo_calib: photometry.PhotoCalib
    """Electrons to nJy: fitted to the reference stars, or the nominal zero point when it could not be."""


@dataclass(frozen=True)
class Difference:
    """The difference image and what was found in it."""

    image: np.ndarray
    variance: np.ndarray
    template: np.ndarray
    """The template as subtracted: resampled and PSF-matched to the science image (for cutouts)."""
    sources: Table
    template_coverage: float
    kernel_stars: int
    """Star stamps the matching kernel was fitted on (below diffim.MIN_STAMPS: analytic kernel)."""


STAR_THRESHOLD = 5.0
"""Stars for astrometry and the zero point: peaks above this significance, STAR_SEPARATION apart (the PSF uses
those above background.STAR_THRESHOLDS[0]). Faint ones count: a sparse field or a small CCD has few bright ones."""
STAR_SEPARATION = 6
"""[pixels] Peaks closer than this are one star."""
ASTROMETRY_STARS = 1000
"""At most this many stars, the brightest, are matched to the reference catalogue."""
NOMINAL_ZERO_POINT = 28.4
"""AB magnitude that gives 1 electron per second: the fallback when no reference star can calibrate the CCD."""


def bright_isolated(image: np.ndarray, variance: np.ndarray, found: np.ndarray, separation: int = 12,
                    border: int = 15, limit: int = 200) -> np.ndarray:
    """Of the stars `found` (y, x, brightest first), those `background.find_stars` would give the PSF and the
    matching kernel: above its first threshold, `border` from the edges, and the brightest within `separation`."""
    peaks = image[found[:, 0], found[:, 1]]
    strong = peaks / np.sqrt(np.maximum(variance[found[:, 0], found[:, 1]], 1e-6)) > background.STAR_THRESHOLDS[0]
    height, width = image.shape
    inside = (found[:, 0] >= border) & (found[:, 0] < height - border) & (found[:, 1] >= border) & \
        (found[:, 1] < width - border)
    tree = cKDTree(found)
    brightest = np.array([peaks[i] >= peaks[tree.query_ball_point(found[i], separation, p=np.inf)].max()
                          for i in np.flatnonzero(strong & inside)], dtype=bool)
    chosen = found[np.flatnonzero(strong & inside)[brightest]] if len(brightest) else found[:0]
    return chosen[:limit]


def pointing_wcs(raw: isr.Raw, shape: tuple[int, int]) -> WCS:
    """The WCS the boresight (RA, DEC, ROTPA) and the detector's place in the focal plane predict."""
    ra, dec, rotation = raw.boresight
    return detector_wcs(raw.instrument, raw.detector, ra, dec, rotation, CcdShape(*shape))


def nominal_calibration(exposure_time: float) -> photometry.PhotoCalib:
    """The nominal zero point for an image in electrons per `exposure_time` seconds, flagged as not fitted."""
    zero_point = NOMINAL_ZERO_POINT + 2.5 * np.log10(exposure_time)
    return photometry.PhotoCalib(10 ** (-0.4 * (zero_point - photometry.AB_NJY_ZERO)), zero_point, 0,
                                 float("nan"), False)


def calibrate(raws: list[isr.Raw], calibs: isr.Calibrations, references: RefStars | None, timer: Timer,
              threads: int = 1) -> Calibrated:
    """ISR per snap, the snaps combined with cosmic-ray rejection, background removed, PSF measured, the WCS
    fitted to the reference stars and the zero point measured on them.

    With `threads` > 1, the amplifiers are corrected in parallel.
    """
    with timer.step("assembly"):
        assembled = [isr.assemble(raw, calibs.amps, threads) for raw in raws]
    with timer.step("isr"):
        snaps = [isr.remove_instrument(raw, image, calibs) for raw, image in zip(raws, assembled, strict=True)]
    with timer.step("snapCombine"):
        image, variance, hits = isr.combine_snaps(snaps)
    with timer.step("background"):
        image, level = background.subtract_background(image)
    with timer.step("psf"):
        found = background.find_stars(image, variance, STAR_THRESHOLD, border=STAR_SEPARATION,
                                      separation=STAR_SEPARATION, limit=ASTROMETRY_STARS)
        stars = bright_isolated(image, variance, found)
        sigma = background.psf_sigma(image, variance, stars)
    if not np.isfinite(sigma):
        raise NoPsf(f"no star above {background.STAR_THRESHOLDS[-1]:.0f} sigma to measure the PSF")
    with timer.step("astrometry"):
        x, y = astrometry.centroids(image, found)
        measured = psf_photometry(image, variance, sigma, x, y)
        initial = pointing_wcs(raws[0], image.shape)
        if references is None or not len(references.ra):
            solution = astrometry.Solution(initial, False, 0, float("nan"), np.array([], int), np.array([], int),
                                           "no reference catalogue covers the detector")
        else:
            solution = astrometry.solve(x, y, measured.flux, initial, references.ra, references.dec, image.shape)
    with timer.step("photoCal"):
        calibration = photometry.zero_point(
            measured.flux[solution.star_index], measured.flux_err[solution.star_index],
            references.flux[solution.ref_index]) if references is not None and solution.fitted else None
        if calibration is None or not calibration.fitted:
            calibration = nominal_calibration(raws[0].exposure_time)
    return Calibrated(image, variance, solution.wcs, level, sigma, int(hits.sum()), stars, solution, calibration)


def difference(calexp: Calibrated, templates: list[Template], timer: Timer, threads: int = 1) -> Difference:
    """Template resampled and PSF-matched, subtracted; DIA sources detected above 5 sigma.

    With `threads` > 1, the convolutions use that many FFT workers and detection runs in bands.

    Raises:
        NoTemplate: no template tile covers any of the detector.
    """
    shape = calexp.image.shape
    with timer.step("rewarpTemplate"):
        warped = np.zeros(shape, dtype=np.float32)
        warped_variance = np.zeros(shape, dtype=np.float32)
        covered = np.zeros(shape, dtype=bool)
        for tile in templates:
            data, valid = diffim.resample(tile.image, tile.wcs, calexp.wcs, shape, threads)
            var, _ = diffim.resample(tile.variance, tile.wcs, calexp.wcs, shape, threads)
            fresh = valid & ~covered
            warped[fresh], warped_variance[fresh] = data[fresh], var[fresh]
            covered |= valid
    if not covered.any():
        raise NoTemplate("no template overlaps the detector")
    with timer.step("subtractImages"):
        stars = calexp.stars
        stars = stars[covered[stars[:, 0], stars[:, 1]]] if len(stars) else stars
        template_sigma = float(np.median([t.psf_sigma for t in templates]))
        kernel, offset = diffim.fit_kernel(calexp.image, warped, stars, calexp.psf_sigma, template_sigma)
        with scipy.fft.set_workers(threads):
            image, variance = diffim.subtract(calexp.image, calexp.variance, warped, warped_variance, kernel, offset)
        matched = calexp.image - image
    with timer.step("detectAndMeasureDiaSource"):
        reach = kernel.shape[0]
        inner = minimum_filter(covered.astype(np.uint8), size=2 * reach + 1, mode="constant") > 0
        sources = detection.detect(image, variance, inner, calexp.psf_sigma, calexp.wcs, matched, threads=threads)
    return Difference(image, variance, matched, sources, float(covered.mean()), len(stars))
