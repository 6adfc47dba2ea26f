"""One detector's observation with known truth: raws for each snap, the transients, a template tile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from streams.science.geometry import CcdShape, tan_wcs
from streams.simulate.camera import Detector, expose, raw_hdus
from streams.simulate.scene import Sources, render


@dataclass(frozen=True)
class Conditions:
    """Observing conditions and what the sky holds per million pixels."""

    sky_rate: float = 60.0
    """Sky background [e-/s/pixel]."""
    exposure_time: float = 15.0
    """Per snap [s]."""
    seeing_sigma: float = 1.7
    """Science PSF sigma [pixels] (0.8 arcsec FWHM)."""
    template_sigma: float = 1.0
    """Template PSF sigma [pixels]."""
    template_depth: float = 10.0
    """Template variance is the science's divided by this."""
    transients_per_mpix: float = 50.0
    cosmic_rays_per_mpix: float = 30.0
    snr_range: tuple[float, float] = (6.0, 40.0)
    """Injected transients' PSF signal-to-noise in the combined snaps."""

    def pixel_variance(self, snaps: int, read_noise: float = 6.0) -> float:
        """Variance of a background pixel of the snaps' mean [e-^2]."""
        return (self.sky_rate * self.exposure_time + read_noise ** 2) / snaps


@dataclass(frozen=True)
class Truth:
    """The injected transients: pixel positions (DM's frame, where they land through the true WCS), sky positions,
    flux [e- per snap and nJy], PSF S/N."""

    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray
    snr: np.ndarray
    flux_njy: np.ndarray


def inject_transients(rng: np.random.Generator, wcs: WCS, shape: CcdShape, conditions: Conditions, snaps: int, *,
                      njy_per_electron: float, margin: int = 40, positions: np.random.Generator | None = None,
                      true_wcs: WCS | None = None) -> Truth:
    """Transients at random positions, fluxes drawn for S/N uniform in the configured range. With a
    `positions` generator seeded by the field, they are variable sources: the same places every visit
    of the field, at a new flux each time.

    The places are drawn on the pixels of `wcs` (the nominal pointing) and fixed on the sky through it, so a
    field's variable sources stay put whatever the visit's pointing error; `true_wcs` (default `wcs`) says on
    which pixels they land.
    """
    count = max(1, int(conditions.transients_per_mpix * shape.height * shape.width / 1e6))
    places = positions or rng
    x = places.uniform(margin, shape.width - margin, count)
    y = places.uniform(margin, shape.height - margin, count)
    snr = rng.uniform(*conditions.snr_range, count)
    noise = np.sqrt(conditions.pixel_variance(snaps) * 4 * np.pi * conditions.seeing_sigma ** 2)
    ra, dec = wcs.all_pix2world(x, y, 0)
    if true_wcs is not None:
        x, y = (np.asarray(v) for v in true_wcs.all_world2pix(ra, dec, 0))
    # the pointing error may bring a place near an edge, where no difference image can find it: not injected
    kept = (x >= margin) & (x <= shape.width - margin) & (y >= margin) & (y <= shape.height - margin)
    flux = snr[kept] * noise
    return Truth(x[kept], y[kept], np.asarray(ra)[kept], np.asarray(dec)[kept], flux, snr[kept],
                 flux * njy_per_electron)


def observe(rng: np.random.Generator, detector: Detector, wcs: WCS, stars: Sources, truth: Truth,
            conditions: Conditions, headers: list[fits.Header], compress: bool = True) -> list[fits.HDUList]:
    """The raw of each snap (one per primary header, see `camera.primary_header`): stars, transients and sky
    rendered through the true `wcs` and the detector's throughput, read out by the camera."""
    everything = Sources(np.concatenate([stars.ra, truth.ra]), np.concatenate([stars.dec, truth.dec]),
                         np.concatenate([stars.flux, truth.flux_njy]))
    shape = detector.shape
    scene = render((shape.height, shape.width), wcs, everything, conditions.seeing_sigma, detector.njy_per_electron)
    scene += np.float32(conditions.sky_rate * conditions.exposure_time)
    cosmic_rays = int(conditions.cosmic_rays_per_mpix * shape.height * shape.width / 1e6)
    raws = []
    for header in headers:
        amps = expose(rng, detector, scene, conditions.exposure_time, cosmic_rays)
        full = header.copy()
        full["EXPTIME"] = (conditions.exposure_time, "[s]")
        full["DARKTIME"] = (conditions.exposure_time, "[s]")
        raws.append(raw_hdus(amps, detector, full, compress))
    return raws


def template_tile(rng: np.random.Generator, stars: Sources, ra: float, dec: float, shape: tuple[int, int],
                  conditions: Conditions, njy_per_electron: float,
                  snaps: int = 2) -> tuple[np.ndarray, np.ndarray, WCS]:
    """A deep, sky-subtracted template tile centred on (ra, dec): image, variance and WCS, in electrons per science
    exposure of the detector whose throughput is `njy_per_electron` (as the pipeline expects templates)."""
    wcs = tan_wcs(ra, dec, 0.0, (shape[1] / 2 + 0.5, shape[0] / 2 + 0.5))
    variance = np.full(shape, conditions.pixel_variance(snaps) / conditions.template_depth, dtype=np.float32)
    image = render(shape, wcs, stars, conditions.template_sigma, njy_per_electron)
    image += rng.normal(0, np.sqrt(variance)).astype(np.float32)
    return image, variance, wcs
