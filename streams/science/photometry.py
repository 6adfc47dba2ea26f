"""Photometric calibration: a CCD's zero point from the reference stars matched to its stars, so DIA fluxes are
in nJy.

The zero point is the slope of instrumental flux against reference flux, fitted by weighted least squares after
the per-star ratios are sigma-clipped (each in units of its own error): variable stars, blends and mismatches leave,
and since the reference fluxes carry no measurement noise here the slope is unbiased (a mean of ratios of noisy
fluxes is not).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.stats import mad_std, sigma_clip

AB_NJY_ZERO = 31.4
"""AB magnitude of 1 nJy."""
MIN_SIGNAL_TO_NOISE = 10.0
"""Stars measured less well than this add noise and, near the detection limit, bias (they were found because they
fluctuated up)."""
CLIP_SIGMA = 3.0
SYSTEMATIC_FLOOR = 0.01
"""Fractional error added to each star's (colour terms, catalogue errors), so a few bright stars do not outweigh
all the others."""


@dataclass(frozen=True)
class PhotoCalib:
    """A CCD's photometric calibration, or the flag that there was none."""

    njy_per_electron: float
    """Multiply an instrumental flux (electrons in the calibrated image) by this to get nJy."""
    zero_point: float
    """AB magnitude of one electron: 31.4 - 2.5 log10(njy_per_electron)."""
    stars: int
    """Reference stars used."""
    scatter: float
    """Robust rms of the per-star ratio, fractional (mad_std of the ratio / ratio)."""
    fitted: bool
    """False: fewer than min_stars usable; njy_per_electron is then NaN."""


def zero_point(instrumental: np.ndarray, instrumental_err: np.ndarray, reference_njy: np.ndarray,
               min_stars: int = 3) -> PhotoCalib:
    """The nJy per electron from matched stars' instrumental fluxes [electrons] and errors and their reference
    fluxes [nJy]: stars with positive fluxes and S/N >= 10, ratios clipped at 3 sigma (their deviations from the
    median over their errors; median, mad_std), then the weighted least-squares slope; not fitted (NaN) with fewer
    than `min_stars` left."""
    flux = np.asarray(instrumental, dtype=float).ravel()
    error = np.asarray(instrumental_err, dtype=float).ravel()
    reference = np.asarray(reference_njy, dtype=float).ravel()
    if not len(flux) == len(error) == len(reference):
        raise ValueError(f"{len(flux)} instrumental fluxes, {len(error)} errors, {len(reference)} reference fluxes")
    with np.errstate(divide="ignore", invalid="ignore"):
        usable = (np.isfinite(flux) & np.isfinite(error) & np.isfinite(reference) & (flux > 0) & (error > 0)
                  & (reference > 0) & (flux / error >= MIN_SIGNAL_TO_NOISE))
    flux, error, reference = flux[usable], error[usable], reference[usable]
    if len(flux) < max(min_stars, 1):
        return _not_fitted(len(flux))
    ratio = reference / flux
    # Clip on each ratio's deviation in units of its own error: faint stars scatter more than bright ones.
    relative_error = np.sqrt((error / flux) ** 2 + SYSTEMATIC_FLOOR ** 2)
    pull = (ratio / float(np.median(ratio)) - 1.0) / relative_error
    clipped = sigma_clip(pull, sigma=CLIP_SIGMA, maxiters=10, cenfunc="median", stdfunc="mad_std")
    kept = ~np.ma.getmaskarray(clipped)
    if kept.sum() < max(min_stars, 1):
        return _not_fitted(int(kept.sum()))
    flux, error, reference, ratio = flux[kept], error[kept], reference[kept], ratio[kept]
    # Model: flux = reference / k + noise. Weights from the model flux (not the measured one) keep it unbiased.
    model = reference / float(np.median(ratio))
    weight = 1.0 / (error ** 2 + (SYSTEMATIC_FLOOR * model) ** 2)
    njy_per_electron = float(np.sum(weight * reference ** 2) / np.sum(weight * reference * flux))
    if not (np.isfinite(njy_per_electron) and njy_per_electron > 0):
        return _not_fitted(int(kept.sum()))
    scatter = float(mad_std(ratio)) / njy_per_electron
    return PhotoCalib(njy_per_electron, AB_NJY_ZERO - 2.5 * float(np.log10(njy_per_electron)), int(kept.sum()),
                      scatter, True)


def _not_fitted(stars: int) -> PhotoCalib:
    return PhotoCalib(float("nan"), float("nan"), stars, float("nan"), False)
