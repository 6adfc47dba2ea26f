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

from streams.science import background, detection, diffim, isr


class NoPsf(ValueError):  # noqa: N818 (a condition of the data)
    """No star stands out enough to measure the PSF: the image cannot be calibrated."""


class NoTemplate(ValueError):  # noqa: N818 (a condition a fallback pipeline handles)
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
    """A detector after ISR, snap combination and background subtraction."""

    image: np.ndarray
    variance: np.ndarray
    wcs: WCS
    background: float
    psf_sigma: float
    cosmic_rays: int
    stars: np.ndarray
    """(y, x) of the bright stars (above 30 sigma): for the PSF and the matching kernel."""


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


def calibrate(raws: list[isr.Raw], calibs: isr.Calibrations, timer: Timer, threads: int = 1) -> Calibrated:
    """ISR per snap, the snaps combined with cosmic-ray rejection, background removed, PSF measured.

    With `threads` > 1, the amplifiers are corrected in parallel.
    """
    with timer.step("isr"):
        snaps = [isr.remove_signature(raw, calibs, threads) for raw in raws]
    with timer.step("snapCombine"):
        image, variance, hits = isr.combine_snaps(snaps)
    with timer.step("background"):
        image, level = background.subtract_background(image)
    with timer.step("psf"):
        stars = background.find_stars(image, variance, background.STAR_THRESHOLDS[0])
        sigma = background.psf_sigma(image, variance, stars)
    if not np.isfinite(sigma):
        raise NoPsf(f"no star above {background.STAR_THRESHOLDS[-1]:.0f} sigma to measure the PSF")
    return Calibrated(image, variance, raws[0].wcs, level, sigma, int(hits.sum()), stars)


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
