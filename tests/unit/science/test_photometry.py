"""Photometric calibration against simulated truth: the nJy per electron recovered from stars measured with forced
PSF photometry, variable stars rejected; too few usable stars flagged, not guessed."""

from __future__ import annotations

import numpy as np
import pytest

from streams.science.forced import psf_photometry
from streams.science.photometry import AB_NJY_ZERO, zero_point

SIGMA = 1.7
NOISE = 30.0
"""Per-pixel noise [electrons]: a sky of 900 electrons (60 e-/s over 15 s)."""
NJY_PER_ELECTRON = 57.5


def measured_stars(seed: int, count: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(instrumental flux, its error, true flux [electrons]) of Gaussian stars on a grid at sub-pixel positions, from
    100 to 100 000 electrons, measured with forced PSF photometry on a noisy image."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(count)))
    size = 25 * side
    x = (np.arange(count) % side) * 25 + 12 + rng.uniform(-0.5, 0.5, count)
    y = (np.arange(count) // side) * 25 + 12 + rng.uniform(-0.5, 0.5, count)
    flux = 10.0 ** rng.uniform(2, 5, count)
    rows, columns = np.mgrid[0:size, 0:size]
    image = rng.normal(0.0, NOISE, (size, size))
    for xi, yi, fi in zip(x, y, flux, strict=True):
        near = (np.abs(columns - xi) < 10) & (np.abs(rows - yi) < 10)
        image[near] += fi / (2 * np.pi * SIGMA ** 2) * np.exp(
            -0.5 * ((columns[near] - xi) ** 2 + (rows[near] - yi) ** 2) / SIGMA ** 2)
    forced = psf_photometry(image, np.full((size, size), NOISE ** 2), SIGMA, x, y)
    return forced.flux, forced.flux_err, flux


def test_the_scale_is_recovered_and_variable_stars_are_rejected() -> None:
    """64 stars, six of them variable (five 50% brighter than the catalogue says, one 50% fainter), the faint ones
    below S/N 10:
    the nJy per electron within 2%, the zero point consistent with it, the variables and faint stars not used."""
    instrumental, error, true = measured_stars(seed=1)
    reference = true * NJY_PER_ELECTRON
    bright = instrumental / error >= 10
    variable = np.flatnonzero(bright)[::4][:6]
    reference[variable[:5]] *= 1.5
    reference[variable[5:]] *= 0.5
    naive = float(np.mean(reference[bright] / instrumental[bright]))
    assert abs(naive / NJY_PER_ELECTRON - 1) > 0.02, "the variables must matter for the test to mean anything"

    calib = zero_point(instrumental, error, reference)
    assert calib.fitted
    assert calib.njy_per_electron == pytest.approx(NJY_PER_ELECTRON, rel=0.02)
    assert calib.zero_point == pytest.approx(AB_NJY_ZERO - 2.5 * np.log10(calib.njy_per_electron))
    assert calib.stars == int(bright.sum()) - len(variable)
    assert 0 < calib.scatter < 0.1


@pytest.mark.parametrize("seed", range(5))
def test_the_scale_is_unbiased_over_many_fields(seed: int) -> None:
    """Without outliers, across seeds, well inside 2% every time."""
    instrumental, error, true = measured_stars(seed=100 + seed)
    calib = zero_point(instrumental, error, true * NJY_PER_ELECTRON)
    assert calib.njy_per_electron == pytest.approx(NJY_PER_ELECTRON, rel=0.01)


def test_too_few_usable_stars_are_not_fitted() -> None:
    """Two stars, or stars that are all faint, negative or NaN: not fitted, NaN, the usable count reported."""
    two = zero_point(np.array([1000.0, 2000.0]), np.array([10.0, 10.0]), np.array([5e4, 1e5]))
    assert not two.fitted and np.isnan(two.njy_per_electron) and np.isnan(two.zero_point)
    assert two.stars == 2
    unusable = zero_point(np.array([50.0, -100.0, np.nan, 1000.0, 1000.0]), np.array([10.0, 10.0, 10.0, np.nan, 0.0]),
                          np.array([1e4, 1e4, 1e4, 1e4, 1e4]))
    assert not unusable.fitted and unusable.stars == 0
    no_reference = zero_point(np.full(5, 1000.0), np.full(5, 10.0), np.full(5, np.nan))
    assert not no_reference.fitted
    assert not zero_point(np.array([]), np.array([]), np.array([])).fitted
    three = zero_point(np.array([1000.0, 2000.0, 4000.0]), np.full(3, 10.0), np.array([5e4, 1e5, 2e5]))
    assert three.fitted and three.njy_per_electron == pytest.approx(50.0)
