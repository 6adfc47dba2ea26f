"""Forced PSF photometry: the flux at given positions, whether or not anything was detected there."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Forced:
    """Per position: PSF flux and its error (NaN where the PSF falls off the image), and whether it was cut."""

    flux: np.ndarray
    flux_err: np.ndarray
    edge: np.ndarray
    """The PSF footprint runs off the image (the flux is from the pixels inside)."""
    off_image: np.ndarray
    """The position itself is off the image: no flux."""


def psf_photometry(image: np.ndarray, variance: np.ndarray, psf_sigma: float, x: np.ndarray,
                   y: np.ndarray) -> Forced:
    """The PSF-weighted flux sum P.I / sum P^2 of a Gaussian PSF centred on each (sub-pixel) position: the
    same estimator detection uses, so forced and detected fluxes agree."""
    half = int(np.ceil(4 * psf_sigma))
    offsets = np.arange(-half, half + 1)
    height, width = image.shape
    x, y = np.asarray(x, float), np.asarray(y, float)
    off_image = ~((x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5))
    columns = np.rint(x)[:, None] + offsets[None, :]
    rows = np.rint(y)[:, None] + offsets[None, :]
    profile_x = np.exp(-0.5 * ((columns - x[:, None]) / psf_sigma) ** 2)
    profile_y = np.exp(-0.5 * ((rows - y[:, None]) / psf_sigma) ** 2)
    psf = profile_y[:, :, None] * profile_x[:, None, :]
    psf /= psf.sum(axis=(1, 2), keepdims=True)
    inside_x = (columns >= 0) & (columns < width)
    inside_y = (rows >= 0) & (rows < height)
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    r = np.clip(rows, 0, height - 1).astype(np.intp)[:, :, None]
    c = np.clip(columns, 0, width - 1).astype(np.intp)[:, None, :]
    weights = np.where(inside, psf, 0.0)
    norm = (weights ** 2).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        flux = (weights * image[r, c]).sum(axis=(1, 2)) / norm
        flux_err = np.sqrt((weights ** 2 * variance[r, c]).sum(axis=(1, 2))) / norm
    flux[off_image], flux_err[off_image] = np.nan, np.nan
    return Forced(flux, flux_err, ~inside.all(axis=(1, 2)), off_image)
