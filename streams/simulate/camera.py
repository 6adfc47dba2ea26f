"""The camera: a detector's electrons become a raw with 16 amplifiers, bias, overscan and noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.io import fits

from streams.science.geometry import CcdShape

OVERSCAN_COLUMNS = 32


@dataclass(frozen=True)
class Detector:
    """What is true of one CCD: its electronics and its calibrations (in electrons)."""

    shape: CcdShape
    gains: np.ndarray
    """e-/ADU per amplifier."""
    read_noise: np.ndarray
    """e- per amplifier."""
    bias_levels: np.ndarray
    """ADU per amplifier."""
    bias: np.ndarray
    """Residual bias structure after overscan [e-]."""
    dark: np.ndarray
    """Dark current [e-/s]."""
    flat: np.ndarray
    """Pixel response, mean 1."""


def make_detector(rng: np.random.Generator, shape: CcdShape) -> Detector:
    """A plausible CCD: per-amplifier gains and levels, a bias ramp, hot-ish dark, a vignetted flat."""
    height, width = shape.height, shape.width
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    bias = (3.0 * xx - 2.0 * yy).astype(np.float32) + rng.normal(0, 0.5, (height, width)).astype(np.float32)
    dark = np.abs(rng.normal(0.002, 0.001, (height, width))).astype(np.float32)
    flat = (1.0 - 0.06 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) + 0.03 * xx).astype(np.float32)
    flat *= rng.normal(1.0, 0.01, (height, width)).astype(np.float32)
    flat /= flat.mean()
    return Detector(shape, gains=rng.uniform(1.1, 1.6, 16), read_noise=rng.uniform(5.0, 7.0, 16),
                    bias_levels=rng.uniform(15000, 25000, 16), bias=bias, dark=dark, flat=flat)


def expose(rng: np.random.Generator, detector: Detector, sky_electrons: np.ndarray, exposure_time: float,
           cosmic_rays: int = 0) -> list[np.ndarray]:
    """One exposure read out: a (rows, columns + overscan) ADU array per amplifier.

    `sky_electrons` is the photon signal reaching the CCD; the flat, dark current, Poisson and read
    noise, cosmic rays, the bias structure and each amplifier's gain and level are applied here.
    """
    signal = sky_electrons * detector.flat + detector.dark * exposure_time
    electrons = rng.poisson(np.clip(signal, 0, None)).astype(np.float32)
    height, width = electrons.shape
    for _ in range(cosmic_rays):
        y, x = rng.integers(1, height - 2), rng.integers(1, width - 2)
        length = rng.integers(1, 4)
        electrons[y:y + length, x] += rng.uniform(2000, 20000)
    electrons += detector.bias
    amps = []
    for index, (rows, columns) in enumerate(detector.shape.amp_slices()):
        part = electrons[rows, columns]
        noise = rng.normal(0, detector.read_noise[index], (part.shape[0], part.shape[1] + OVERSCAN_COLUMNS))
        adu = np.empty_like(noise, dtype=np.float32)
        adu[:, :part.shape[1]] = part / detector.gains[index]
        adu[:, part.shape[1]:] = 0.0
        drift = np.linspace(0, 3, part.shape[0], dtype=np.float32)[:, None]  # the level drifts along readout
        adu += detector.bias_levels[index] + drift + noise / detector.gains[index]
        amps.append(np.round(adu).astype(np.int32))
    return amps


def raw_hdus(amps: list[np.ndarray], shape: CcdShape, header: fits.Header, gains: np.ndarray,
             read_noise: np.ndarray) -> fits.HDUList:
    """The raw FITS file: the primary header, then one extension per amplifier with its sections."""
    hdus = fits.HDUList([fits.PrimaryHDU(header=header)])
    rows, columns = shape.amp_shape
    for index, ((det_rows, det_columns), data) in enumerate(zip(shape.amp_slices(), amps, strict=True)):
        hdu = fits.ImageHDU(data, name=f"AMP{index:02d}")
        hdu.header["DATASEC"] = f"[1:{columns},1:{rows}]"
        hdu.header["BIASSEC"] = f"[{columns + 1}:{columns + OVERSCAN_COLUMNS},1:{rows}]"
        hdu.header["DETSEC"] = f"[{det_columns.start + 1}:{det_columns.stop},{det_rows.start + 1}:{det_rows.stop}]"
        hdu.header["GAIN"] = (float(gains[index]), "e-/ADU")
        hdu.header["RDNOISE"] = (float(read_noise[index] / gains[index]), "ADU")
        hdus.append(hdu)
    return hdus

