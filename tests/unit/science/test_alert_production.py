"""The built-in Alert Production against simulated truth: the quality bar, and each step."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS

from streams.data.refcat import RefStars
from streams.science import isr
from streams.science.alert_production import (
    NoTemplate,
    Template,
    Timer,
    calibrate,
    difference,
    nominal_calibration,
    pointing_wcs,
)
from streams.science.geometry import CcdShape, detector_wcs
from streams.simulate.camera import make_detector, primary_header
from streams.simulate.observation import Conditions, Truth, inject_transients, observe, template_tile
from streams.simulate.scene import random_stars

SHAPE = CcdShape(1024, 1024)
CONDITIONS = Conditions()


POINTING_ERROR = (3.0, -2.0, 0.01)
"""How far the header's boresight is from the truth: RA and Dec [arcsec], rotation [deg]."""


class Observed(NamedTuple):
    """A simulated detector's raws as read, what the pipeline is given, and the truth."""

    raws: list[isr.Raw]
    calibs: isr.Calibrations
    template: Template
    truth: Truth
    references: RefStars
    true_wcs: WCS
    njy_per_electron: float


def simulate(tmp_path: Path, seed: int, snaps: int = 2) -> Observed:
    """One detector (E2V, R22_S11) observed with injected transients, its raws written as the camera writes them
    (the nominal boresight in the header, POINTING_ERROR from the truth) and read back; the reference catalogue
    holds its stars (1% flux noise)."""
    rng = np.random.default_rng(seed)
    detector = make_detector(rng, "E2V", SHAPE)
    boresight = (150.0 + seed, 2.0, 12.0 * seed)
    true_ra = boresight[0] + POINTING_ERROR[0] / 3600 / np.cos(np.radians(boresight[1]))
    wcs = detector_wcs("LSSTCam", 94, true_ra, boresight[1] + POINTING_ERROR[1] / 3600,
                       boresight[2] + POINTING_ERROR[2], SHAPE)
    ra, dec = (float(v) for v in wcs.all_pix2world(SHAPE.width / 2, SHAPE.height / 2, 0))
    stars = random_stars(rng, ra, dec, 0.05, 400, detector.njy_per_electron)
    truth = inject_transients(rng, wcs, SHAPE, CONDITIONS, snaps, njy_per_electron=detector.njy_per_electron)
    headers = [primary_header("LSSTCam", 94, exposure_id=2026112500100 + s, group_id="2026-11-25T03:00:00.000",
                              snap=s, snaps=snaps, image_type="SCIENCE", start=datetime(2026, 11, 25, 3, 0, 17 * s),
                              exposure_time=CONDITIONS.exposure_time, boresight=boresight, filter_name="r_57")
               for s in range(snaps)]
    raws = []
    for snap, hdus in enumerate(observe(rng, detector, wcs, stars, truth, CONDITIONS, headers)):
        hdus.writeto(tmp_path / f"raw{seed}_{snap}.fits")
        raws.append(isr.read_raw(tmp_path / f"raw{seed}_{snap}.fits"))
    image, variance, tile_wcs = template_tile(rng, stars, ra + 0.002, dec - 0.001, (1400, 1400), CONDITIONS,
                                              detector.njy_per_electron)
    references = RefStars(stars.ra, stars.dec, stars.flux * rng.normal(1.0, 0.01, len(stars.flux)))
    return Observed(raws, isr.Calibrations(detector.bias, detector.dark, detector.flat, detector.amp_calibration()),
                    Template(image, variance, tile_wcs, CONDITIONS.template_sigma), truth, references, wcs,
                    detector.njy_per_electron)


def test_transients_are_found_and_few_detections_are_spurious(tmp_path: Path) -> None:
    """>= 95% of injected S/N >= 10 transients found within 1 pixel; <= 5% of detections spurious."""
    found = bright = spurious = detections = 0
    for seed in (1, 2, 3):
        raws, calibs, template, truth, references, _, _ = simulate(tmp_path, seed)
        diff = difference(calibrate(raws, calibs, references, Timer()), [template], Timer())
        sources = diff.sources
        distance = np.hypot(sources["x"][:, None] - truth.x[None, :], sources["y"][:, None] - truth.y[None, :])
        bright += int((truth.snr >= 10).sum())
        found += int(((distance.min(axis=0) <= 1.0) & (truth.snr >= 10)).sum())
        detections += len(sources)
        spurious += int((distance.min(axis=1) > 2.0).sum())
    assert bright >= 100, "enough transients to judge a 95% bar"
    assert found >= 0.95 * bright, f"found {found} of {bright}"
    assert spurious <= 0.05 * detections, f"{spurious} of {detections} detections are spurious"


def test_measured_flux_and_sky_positions_match_the_truth(tmp_path: Path) -> None:
    """PSF fluxes within a few sigma of the injected ones; RA/Dec from the fitted WCS within 0.2 arcsec."""
    raws, calibs, template, truth, references, _, _ = simulate(tmp_path, 4)
    sources = difference(calibrate(raws, calibs, references, Timer()), [template], Timer()).sources
    distance = np.hypot(sources["x"][:, None] - truth.x[None, :], sources["y"][:, None] - truth.y[None, :])
    match = distance.argmin(axis=1)
    good = distance.min(axis=1) <= 1.0
    pull = (sources["psf_flux"][good] - truth.flux[match[good]]) / sources["psf_flux_err"][good]
    assert abs(np.median(pull)) < 1.0 and np.percentile(np.abs(pull), 90) < 4.0
    offset = np.hypot((sources["ra"][good] - truth.ra[match[good]]) * np.cos(np.radians(truth.dec[match[good]])),
                      sources["dec"][good] - truth.dec[match[good]]) * 3600
    assert np.median(offset) < 0.2


def test_the_wcs_is_fitted_and_the_zero_point_measured_on_the_reference_stars(tmp_path: Path) -> None:
    """From a header boresight off by POINTING_ERROR, the WCS fitted to the reference stars puts every pixel of
    the CCD within 0.05 arcsec of the truth, and the zero point is the simulation's within 2%."""
    observed = simulate(tmp_path, 9)
    timer = Timer()
    calexp = calibrate(observed.raws, observed.calibs, observed.references, timer)
    assert calexp.astrometry.fitted and calexp.astrometry.matches >= 20
    assert calexp.astrometry.rms_arcsec < 0.05
    yy, xx = np.mgrid[0:SHAPE.height:64, 0:SHAPE.width:64]
    fitted = SkyCoord(*calexp.wcs.all_pix2world(xx.ravel(), yy.ravel(), 0), unit="deg")
    true = SkyCoord(*observed.true_wcs.all_pix2world(xx.ravel(), yy.ravel(), 0), unit="deg")
    assert fitted.separation(true).arcsec.max() < 0.05
    pointing = SkyCoord(*pointing_wcs(observed.raws[0], calexp.image.shape).all_pix2world(xx.ravel(), yy.ravel(), 0),
                        unit="deg")
    assert pointing.separation(true).arcsec.min() > 1.0, "a control: the header's pointing alone is off"
    assert calexp.photo_calib.fitted
    assert calexp.photo_calib.njy_per_electron == pytest.approx(observed.njy_per_electron, rel=0.02)
    assert {"assembly", "isr", "astrometry", "photoCal"} <= set(timer.steps)


def test_without_reference_stars_the_pointing_wcs_and_nominal_zero_point_are_used_and_flagged(
        tmp_path: Path) -> None:
    """No reference catalogue over the detector: not a crash, but the pointing's WCS and the nominal zero point,
    each flagged as not fitted."""
    observed = simulate(tmp_path, 10, snaps=1)
    nothing = RefStars(np.array([]), np.array([]), np.array([]))
    calexp = calibrate(observed.raws, observed.calibs, nothing, Timer())
    assert not calexp.astrometry.fitted and "reference" in calexp.astrometry.reason
    assert calexp.wcs.wcs.compare(pointing_wcs(observed.raws[0], calexp.image.shape).wcs)
    nominal = nominal_calibration(CONDITIONS.exposure_time)
    assert not calexp.photo_calib.fitted and calexp.photo_calib.njy_per_electron == nominal.njy_per_electron


def test_isr_removes_bias_dark_and_flat(tmp_path: Path) -> None:
    """After ISR an empty-sky snap is flat at the sky level, with no amplifier steps or gradients."""
    raws, calibs, *_ = simulate(tmp_path, 5, snaps=1)
    image, variance = isr.remove_signature(raws[0], calibs)
    sky = CONDITIONS.sky_rate * CONDITIONS.exposure_time
    medians = [np.median(image[rows, columns]) for rows, columns in SHAPE.amp_slices()]
    assert np.allclose(medians, sky, rtol=0.01), "every amplifier at the sky level: overscan and gain right"
    quarter = SHAPE.height // 4
    assert abs(np.median(image[:quarter]) - np.median(image[-quarter:])) < 0.005 * sky, "flat removed"
    assert np.median(variance) == pytest.approx(sky + 36, rel=0.15)


def test_without_calibrations_the_signature_remains(tmp_path: Path) -> None:
    """A control: the amplifiers differ before the overscan and gain are applied."""
    raws = simulate(tmp_path, 6, snaps=1).raws
    levels = [np.median(amp.pixels) for amp in raws[0].amplifiers]
    assert np.ptp(levels) > 1000


def test_two_snaps_reject_cosmic_rays(tmp_path: Path) -> None:
    """A cosmic ray in one snap is replaced by the other snap's value."""
    rng = np.random.default_rng(0)
    clean = rng.normal(900, 30, (64, 64)).astype(np.float32)
    hit = clean.copy()
    hit[10, 10] += 5000
    image, _, mask = isr.combine_snaps([(hit, np.full_like(clean, 900)), (clean, np.full_like(clean, 900))])
    assert mask[10, 10] and mask.sum() == 1 and image[10, 10] == clean[10, 10]


def test_no_template_is_reported(tmp_path: Path) -> None:
    """A template elsewhere on the sky cannot be used: NoTemplate (the fallback's cue)."""
    raws, calibs, template, _, references, _, _ = simulate(tmp_path, 7)
    far = Template(template.image, template.variance, template.wcs.deepcopy(), 1.0)
    far.wcs.wcs.crval = [far.wcs.wcs.crval[0] + 20, far.wcs.wcs.crval[1]]
    with pytest.raises(NoTemplate):
        difference(calibrate(raws, calibs, references, Timer()), [far], Timer())


def test_sparse_field_uses_the_analytic_matching_kernel() -> None:
    """Too few stars to fit: the kernel is the Gaussian of the PSF width difference, unit sum."""
    from streams.science.diffim import fit_kernel

    science = np.zeros((100, 100), dtype=np.float32)
    kernel, background = fit_kernel(science, science, np.empty((0, 2), dtype=int), 1.7, 1.0)
    assert kernel.sum() == pytest.approx(1.0, rel=1e-5) and background == 0.0
    yy, xx = np.mgrid[-10:11, -10:11]
    assert np.sqrt((kernel * (xx ** 2 + yy ** 2)).sum() / 2) == pytest.approx(np.sqrt(1.7 ** 2 - 1.0), rel=0.02)


def test_several_threads_per_ccd_give_the_same_result(tmp_path: Path) -> None:
    """ISR per amplifier and detection per band in parallel find exactly what one thread finds."""
    raws, calibs, template, _, references, _, _ = simulate(tmp_path, 8)
    one = difference(calibrate(raws, calibs, references, Timer()), [template], Timer()).sources
    two = difference(calibrate(raws, calibs, references, Timer(), threads=2), [template], Timer(),
                     threads=2).sources
    assert len(one) == len(two) > 0
    assert np.allclose(one["x"], two["x"]) and np.allclose(one["psf_flux"], two["psf_flux"], rtol=1e-4)
