"""Sky background and the PSF's size."""

from __future__ import annotations

import numpy as np
from photutils.background import Background2D, MedianBackground
from scipy.ndimage import maximum_filter

FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


def subtract_background(image: np.ndarray, mask: np.ndarray | None = None, box: int = 128) -> tuple[np.ndarray, float]:
    """(image minus its smooth background, the background's median level) [electrons]."""
    box = max(16, min(box, image.shape[0] // 4, image.shape[1] // 4))
    background = Background2D(image, (box, box), filter_size=(3, 3), mask=mask,
                              bkg_estimator=MedianBackground())
    return (image - background.background).astype(np.float32), float(background.background_median)


def find_stars(image: np.ndarray, variance: np.ndarray, threshold: float = 30.0, border: int = 15,
               separation: int = 12, limit: int = 200) -> np.ndarray:
    """(y, x) of bright, isolated peaks: local maxima above `threshold` sigma, away from edges."""
    significance = image / np.sqrt(np.maximum(variance, 1e-6))
    peaks = (image == maximum_filter(image, size=2 * separation + 1)) & (significance > threshold)
    peaks[:border, :] = peaks[-border:, :] = peaks[:, :border] = peaks[:, -border:] = False
    ys, xs = np.nonzero(peaks)
    order = np.argsort(image[ys, xs])[::-1][:limit]
    return np.column_stack([ys[order], xs[order]])


def psf_sigma(image: np.ndarray, variance: np.ndarray, stars: np.ndarray | None = None, radius: int = 8) -> float:
    """The PSF's Gaussian sigma [pixels]: the median second moment of bright stars' stamps."""
    stars = find_stars(image, variance) if stars is None else stars
    sigmas = []
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    for y, x in stars:
        stamp = image[y - radius:y + radius + 1, x - radius:x + radius + 1]
        if stamp.shape != yy.shape or stamp.sum() <= 0:
            continue
        weight = stamp / stamp.sum()
        cy, cx = (weight * yy).sum(), (weight * xx).sum()
        second = (weight * ((yy - cy) ** 2 + (xx - cx) ** 2)).sum() / 2.0
        if second > 0:
            sigmas.append(np.sqrt(second))
    return float(np.median(sigmas)) if sigmas else float("nan")
