"""Forced PSF photometry: unbiased fluxes with honest errors, at any position, edge and off-image cases flagged."""

from __future__ import annotations

import numpy as np
import pytest

from streams.science.forced import psf_photometry

HEIGHT, WIDTH = 60, 72
SIGMA = 2.0
"""PSF sigma [pixels]: the footprint reaches 4 sigma = 8 pixels."""
NOISE = 10.0
"""Per-pixel noise standard deviation; the variance plane is NOISE**2 everywhere."""
FLUX = 5000.0


def star(x: float, y: float, flux: float, sigma: float = SIGMA) -> np.ndarray:
    """A Gaussian star of total `flux` centred at the sub-pixel position (x, y) (pixel centres are integers)."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    profile: np.ndarray = np.exp(-0.5 * ((columns - x) ** 2 + (rows - y) ** 2) / sigma**2)
    return flux / (2 * np.pi * sigma**2) * profile


def flat_variance() -> np.ndarray:
    return np.full((HEIGHT, WIDTH), NOISE**2)


def noise(rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, NOISE, (HEIGHT, WIDTH))


def test_a_star_of_known_flux_is_measured_within_its_error() -> None:
    """A Gaussian star (same PSF sigma, sub-pixel position) on flat noise: the flux is within 3 sigma of the true
    flux, the reported error is the ideal sqrt(variance * 4 pi sigma^2), and nothing is flagged."""
    rng = np.random.default_rng(20261125)
    for x, y in ((31.3, 28.7), (40.5, 20.25), (20.0, 30.0)):
        image = star(x, y, FLUX) + noise(rng)
        forced = psf_photometry(image, flat_variance(), SIGMA, np.array([x]), np.array([y]))
        assert abs(forced.flux[0] - FLUX) < 3 * forced.flux_err[0]
        assert forced.flux_err[0] == pytest.approx(NOISE * np.sqrt(4 * np.pi) * SIGMA, rel=0.01)
        assert not forced.edge[0] and not forced.off_image[0]


def test_without_noise_the_flux_is_exact() -> None:
    """On a noise-free image the estimator returns the star's flux (to the 4-sigma truncation, 1e-3)."""
    x, y = 30.37, 25.81
    forced = psf_photometry(star(x, y, FLUX), flat_variance(), SIGMA, np.array([x]), np.array([y]))
    assert forced.flux[0] == pytest.approx(FLUX, rel=1e-3)


def test_the_error_matches_the_scatter_over_noise_realisations() -> None:
    """Over 600 noise realisations the fluxes scatter as the reported error says (within 15%), about the true
    flux (no bias beyond 3 standard errors of the mean)."""
    rng = np.random.default_rng(7)
    x, y = np.array([33.6]), np.array([27.2])
    clean = star(33.6, 27.2, FLUX)
    results = [psf_photometry(clean + noise(rng), flat_variance(), SIGMA, x, y) for _ in range(600)]
    fluxes = np.array([r.flux[0] for r in results])
    errors = np.array([r.flux_err[0] for r in results])
    assert np.ptp(errors) == 0.0  # the error comes from the variance plane, not the pixels
    assert float(np.std(fluxes, ddof=1)) == pytest.approx(float(errors[0]), rel=0.15)
    assert abs(float(fluxes.mean()) - FLUX) < 3 * errors[0] / np.sqrt(len(fluxes))


def test_the_error_follows_the_variance_plane() -> None:
    """Four times the variance doubles the error, and leaves the flux as it is."""
    x, y = np.array([30.2]), np.array([30.9])
    image = star(30.2, 30.9, FLUX) + noise(np.random.default_rng(3))
    one = psf_photometry(image, flat_variance(), SIGMA, x, y)
    four = psf_photometry(image, 4 * flat_variance(), SIGMA, x, y)
    assert four.flux_err[0] == pytest.approx(2 * one.flux_err[0])
    assert four.flux[0] == one.flux[0]


def test_nothing_there_gives_zero_flux() -> None:
    """Where there is nothing, the flux is exactly zero on an empty image, and consistent with zero on noise
    (mean over many disjoint positions within 3 standard errors, each within 4 sigma)."""
    positions_x = np.array([10.3, 25.7, 41.1, 56.5, 10.9, 25.2, 41.6, 56.0])
    positions_y = np.array([12.4, 12.8, 12.1, 12.5, 40.6, 40.2, 40.9, 40.3])
    empty = psf_photometry(np.zeros((HEIGHT, WIDTH)), flat_variance(), SIGMA, positions_x, positions_y)
    assert (empty.flux == 0.0).all() and np.isfinite(empty.flux_err).all() and (empty.flux_err > 0).all()

    rng = np.random.default_rng(11)
    pulls = np.concatenate([(lambda f: f.flux / f.flux_err)(
        psf_photometry(noise(rng), flat_variance(), SIGMA, positions_x, positions_y)) for _ in range(50)])
    assert (np.abs(pulls) < 4.5).all()
    assert abs(float(pulls.mean())) < 3 / np.sqrt(len(pulls))
    assert float(np.std(pulls, ddof=1)) == pytest.approx(1.0, rel=0.15)


def test_a_position_near_the_edge_is_flagged_and_still_measured() -> None:
    """A star within 4 sigma of an edge or in a corner: `edge` is set, `off_image` is not, and its flux is still
    measured from the pixels inside (within 3 sigma of the truth, with a larger error than in the interior)."""
    rng = np.random.default_rng(5)
    interior = psf_photometry(noise(rng), flat_variance(), SIGMA, np.array([36.0]), np.array([30.0]))
    assert not interior.edge[0]
    for x, y in ((2.3, 30.6), (WIDTH - 1.6, 25.2), (35.4, 0.2), (40.7, HEIGHT - 4.1), (0.4, 0.3), (-0.4, 10.0)):
        image = star(x, y, FLUX) + noise(rng)
        forced = psf_photometry(image, flat_variance(), SIGMA, np.array([x]), np.array([y]))
        assert forced.edge[0] and not forced.off_image[0], (x, y)
        assert np.isfinite(forced.flux[0]) and np.isfinite(forced.flux_err[0])
        assert abs(forced.flux[0] - FLUX) < 3 * forced.flux_err[0], (x, y)
        assert forced.flux_err[0] > interior.flux_err[0]


def test_a_position_off_the_image_gives_nan_and_is_flagged() -> None:
    """A position off the image (beyond the outer pixel's half) has NaN flux and error and `off_image` set, even
    when its footprint still overlaps the image; the star's neighbours in the same call are unaffected."""
    x = np.array([-0.6, -3.0, WIDTH - 0.4, WIDTH + 50.0, 30.0, 20.0, 1e9, 30.0])
    y = np.array([10.0, 20.0, 30.0, 30.0, -0.6, HEIGHT + 2.0, 1e9, 30.0])
    image = star(30.0, 30.0, FLUX) + noise(np.random.default_rng(9))
    forced = psf_photometry(image, flat_variance(), SIGMA, x, y)
    assert forced.off_image.tolist() == [True] * 7 + [False]
    assert np.isnan(forced.flux[:7]).all() and np.isnan(forced.flux_err[:7]).all()
    assert abs(forced.flux[7] - FLUX) < 3 * forced.flux_err[7]


def test_many_positions_at_once_agree_with_one_at_a_time() -> None:
    """Measuring many positions in one call gives, position by position, the flux, error and flags of measuring
    each alone (interior, edge and off-image positions mixed)."""
    rng = np.random.default_rng(1)
    image = noise(rng)
    for sx, sy, flux in ((12.2, 14.9, 3000.0), (50.6, 40.3, 8000.0), (1.5, 55.2, 4000.0)):
        image += star(sx, sy, flux)
    variance = flat_variance() * rng.uniform(0.5, 2.0, (HEIGHT, WIDTH))
    x = np.concatenate([rng.uniform(-3, WIDTH + 2, 40), [12.2, 50.6, 1.5]])
    y = np.concatenate([rng.uniform(-3, HEIGHT + 2, 40), [14.9, 40.3, 55.2]])
    together = psf_photometry(image, variance, SIGMA, x, y)
    assert len(together.flux) == len(together.flux_err) == len(together.edge) == len(together.off_image) == len(x)
    for i in range(len(x)):
        alone = psf_photometry(image, variance, SIGMA, x[i:i + 1], y[i:i + 1])
        np.testing.assert_allclose(together.flux[i], alone.flux[0], rtol=1e-12, equal_nan=True)
        np.testing.assert_allclose(together.flux_err[i], alone.flux_err[0], rtol=1e-12, equal_nan=True)
        assert (together.edge[i], together.off_image[i]) == (alone.edge[0], alone.off_image[0])
    assert together.off_image.any() and together.edge.any() and (~together.edge).any()


def test_no_positions_give_empty_results() -> None:
    """No positions (no known objects on the detector): empty arrays, no error."""
    forced = psf_photometry(np.zeros((HEIGHT, WIDTH)), flat_variance(), SIGMA, np.array([]), np.array([]))
    assert all(len(a) == 0 for a in (forced.flux, forced.flux_err, forced.edge, forced.off_image))


def test_float32_images_are_measured_in_double_precision() -> None:
    """A float32 image (as calexps are) gives the same flux as its float64 copy, to float32 rounding."""
    x, y = np.array([28.4]), np.array([33.3])
    image = (star(28.4, 33.3, FLUX) + noise(np.random.default_rng(2))).astype(np.float32)
    single = psf_photometry(image, flat_variance().astype(np.float32), SIGMA, x, y)
    double = psf_photometry(image.astype(float), flat_variance(), SIGMA, x, y)
    assert single.flux[0] == pytest.approx(double.flux[0], rel=1e-6)
    assert single.flux_err[0] == pytest.approx(double.flux_err[0], rel=1e-6)
