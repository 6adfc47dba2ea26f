"""Sky background and the PSF's size."""

from __future__ import annotations

import warnings

import numpy as np
from photutils.background import Background2D, MedianBackground
from photutils.detection import find_peaks
from photutils.utils.exceptions import NoDetectionsWarning

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def subtract_background(image: np.ndarray, mask: np.ndarray | None = None, box: int = 128) -> tuple[np.ndarray, float]:
    """(image minus its smooth background, the background's median level) [electrons]."""
    box = max(16, min(box, image.shape[0] // 4, image.shape[1] // 4))
    background = Background2D(image, (box, box), filter_size=(3, 3), mask=mask,
                              bkg_estimator=MedianBackground())
    return (image - background.background).astype(np.float32), float(background.background_median)


def find_stars(image: np.ndarray, variance: np.ndarray, threshold: float = 30.0, border: int = 15,
               separation: int = 12, limit: int = 200) -> np.ndarray:
    """(y, x) of the `limit` brightest isolated peaks: local maxima (photutils' `find_peaks`, as fast as a
    maximum filter of our own and the same peaks) above `threshold` sigma, away from edges."""
    with warnings.catch_warnings():  # no peak at a high threshold is an answer: a lower one is tried
        warnings.simplefilter("ignore", NoDetectionsWarning)
        peaks = find_peaks(image, threshold * np.sqrt(np.maximum(variance, 1e-6)), box_size=2 * separation + 1,
                           border_width=border)
    if peaks is None:
        return np.empty((0, 2), dtype=np.intp)
    ys, xs = np.asarray(peaks["y_peak"]), np.asarray(peaks["x_peak"])
    order = np.argsort(image[ys, xs])[::-1][:limit]
    return np.column_stack([ys[order], xs[order]])


STAR_THRESHOLDS = (30.0, 15.0, 8.0)
"""Significances tried in turn to find stars for the PSF (sparse fields have few bright ones)."""


def psf_sigma(image: np.ndarray, variance: np.ndarray, bright: np.ndarray, radius: int = 8) -> float:
    """The PSF's Gaussian sigma [pixels]: the median adaptive-moment width of the brightest stars;
    NaN when no star stands out even at the lowest threshold.

    `bright` are the stars already found at the first (highest) threshold; lower thresholds are
    searched only when fewer than three stand out there.
    """
    stars = bright
    for threshold in STAR_THRESHOLDS[1:]:
        if len(stars) >= 3:
            break
        stars = find_stars(image, variance, threshold)
    sigmas = [adaptive_sigma(image, int(y), int(x), radius) for y, x in stars[:PSF_STARS]]
    finite = [value for value in sigmas if np.isfinite(value)]
    return float(np.median(finite)) if finite else float("nan")


PSF_STARS = 25
"""The brightest stars the PSF size is measured on."""


def adaptive_sigma(image: np.ndarray, y: int, x: int, radius: int, iterations: int = 20) -> float:
    """A star's Gaussian sigma from adaptive moments (weights matched to the star, robust to noise).

    For a Gaussian star, moments weighted by a Gaussian of the same width are half its variance, so
    iterating width = sqrt(2 x weighted moment) converges to the star's sigma.
    """
    stamp = image[y - radius:y + radius + 1, x - radius:x + radius + 1]
    if stamp.shape != (2 * radius + 1, 2 * radius + 1):
        return float("nan")
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    sigma, cy, cx = 2.0, 0.0, 0.0
    for _ in range(iterations):
        weighted = stamp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2))
        total = weighted.sum()
        if total <= 0:
            return float("nan")
        cy, cx = (weighted * yy).sum() / total, (weighted * xx).sum() / total
        moment = (weighted * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / total / 2
        if moment <= 0 or not 0.3 < (new := float(np.sqrt(2 * moment))) < radius:
            return float("nan")
        if abs(new - sigma) < 1e-4:
            return new
        sigma = new
    return sigma
