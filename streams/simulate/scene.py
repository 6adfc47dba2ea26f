"""The sky: stars, transients and background, rendered through a Gaussian PSF onto a WCS."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS
from scipy.special import erf


@dataclass(frozen=True)
class Sources:
    """Point sources: sky positions [deg] and fluxes [nJy] (a detector's throughput turns them into electrons)."""

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray


def random_stars(rng: np.random.Generator, ra: float, dec: float, radius_deg: float, count: int,
                 njy_per_electron: float, faintest: float = 300.0, brightest: float = 3e5) -> Sources:
    """Stars uniform on a sky cap, fluxes [nJy] from a power law (many faint, few bright).

    `faintest` and `brightest` are in electrons per exposure through a throughput of `njy_per_electron`, so the
    signal-to-noise the simulation is tuned for does not depend on the photometric scale.
    """
    r = radius_deg * np.sqrt(rng.uniform(0, 1, count))
    angle = rng.uniform(0, 2 * np.pi, count)
    u = rng.uniform(0, 1, count)
    flux = njy_per_electron * faintest * (brightest / faintest) ** (u ** 2.5)
    return Sources(ra + r * np.cos(angle) / np.cos(np.radians(dec)), dec + r * np.sin(angle), flux)


def render(shape: tuple[int, int], wcs: WCS, sources: Sources, sigma: float, njy_per_electron: float) -> np.ndarray:
    """Sources through a Gaussian PSF of `sigma` pixels, each pixel integrating the profile exactly [electrons per
    exposure, through a throughput of `njy_per_electron`]."""
    image = np.zeros(shape, dtype=np.float64)
    if not len(sources.flux):
        return image.astype(np.float32)
    xs, ys = wcs.all_world2pix(sources.ra, sources.dec, 0)
    half = int(np.ceil(5 * sigma))
    root = np.sqrt(2.0) * sigma
    for x, y, flux in zip(xs, ys, sources.flux / njy_per_electron, strict=True):
        x0, y0 = int(np.floor(x)) - half, int(np.floor(y)) - half
        x1, y1 = x0 + 2 * half + 2, y0 + 2 * half + 2
        if x1 <= 0 or y1 <= 0 or x0 >= shape[1] or y0 >= shape[0]:
            continue
        edges_x = np.arange(x0, x1 + 1) - 0.5 - x
        edges_y = np.arange(y0, y1 + 1) - 0.5 - y
        px = np.diff(erf(edges_x / root)) / 2
        py = np.diff(erf(edges_y / root)) / 2
        stamp = flux * np.outer(py, px)
        cy0, cx0 = max(y0, 0), max(x0, 0)
        cy1, cx1 = min(y1, shape[0]), min(x1, shape[1])
        image[cy0:cy1, cx0:cx1] += stamp[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
    return image.astype(np.float32)

