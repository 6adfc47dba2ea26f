"""Instrument signature removal: overscan, gain, bias, dark, flat, then the snaps combined.

A raw is a FITS file with a primary header (GROUPID, EXPID, DETECTOR, FILTER, DATE-OBS, EXPTIME,
and the WCS) and one image extension per amplifier holding its imaging section followed by its
serial overscan (DATASEC, BIASSEC, DETSEC, GAIN, RDNOISE). Each amplifier is corrected on its
own, so ISR splits cleanly across cores.
"""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

SECTION = re.compile(r"\[(\d+):(\d+),(\d+):(\d+)\]")
CR_SIGMA = 5.0
"""A pixel brighter by this many sigma in one snap than in the other holds a cosmic ray."""


class RawFormatError(ValueError):
    """The file is not a raw this pipeline can read."""


@dataclass(frozen=True)
class Amplifier:
    """One amplifier's pixels (ADU) and what its header says."""

    pixels: np.ndarray
    overscan: np.ndarray
    rows: slice
    columns: slice
    gain: float
    read_noise: float


@dataclass(frozen=True)
class Raw:
    """One snap of one detector, as read."""

    header: fits.Header
    amplifiers: list[Amplifier]
    shape: tuple[int, int]

    @property
    def exposure_time(self) -> float:
        """EXPTIME [s]."""
        return float(self.header["EXPTIME"])

    @property
    def wcs(self) -> WCS:
        """The WCS the camera wrote from the pointing."""
        return WCS(self.header)


def _section(text: str) -> tuple[slice, slice]:
    """A FITS section `[x1:x2,y1:y2]` (1-based, inclusive) as numpy (rows, columns) slices."""
    match = SECTION.match(text.strip())
    if match is None:
        raise RawFormatError(f"bad section {text!r}")
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def read_raw(source: Path | bytes) -> Raw:
    """Read a raw, from a file or from its bytes.

    Raises:
        RawFormatError: missing keywords or extensions.
    """
    path = source if isinstance(source, Path) else "raw bytes"
    try:
        with fits.open(source if isinstance(source, Path) else io.BytesIO(source), memmap=False) as hdus:
            header = hdus[0].header.copy()
            amplifiers = []
            for hdu in hdus[1:]:
                data = np.asarray(hdu.data, dtype=np.float32)
                data_rows, data_columns = _section(hdu.header["DATASEC"])
                bias_rows, bias_columns = _section(hdu.header["BIASSEC"])
                det_rows, det_columns = _section(hdu.header["DETSEC"])
                amplifiers.append(Amplifier(
                    pixels=data[data_rows, data_columns], overscan=data[bias_rows, bias_columns],
                    rows=det_rows, columns=det_columns, gain=float(hdu.header["GAIN"]),
                    read_noise=float(hdu.header["RDNOISE"])))
    except (OSError, KeyError, TypeError, ValueError) as error:
        raise RawFormatError(f"{path}: not a readable raw: {error}") from error
    if not amplifiers:
        raise RawFormatError(f"{path}: no amplifier extensions")
    shape = (max(a.rows.stop for a in amplifiers), max(a.columns.stop for a in amplifiers))
    return Raw(header, amplifiers, shape)


def correct_amplifier(amp: Amplifier) -> np.ndarray:
    """Overscan-subtracted pixels in electrons: the overscan level is taken row by row (median)."""
    level = np.median(amp.overscan, axis=1, keepdims=True)
    corrected: np.ndarray = (amp.pixels - level) * np.float32(amp.gain)
    return corrected


def assemble(raw: Raw, threads: int = 1) -> np.ndarray:
    """The CCD image in electrons, each amplifier corrected (in parallel with `threads` > 1) and put in place."""
    image = np.empty(raw.shape, dtype=np.float32)
    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            corrected = list(pool.map(correct_amplifier, raw.amplifiers))
    else:
        corrected = [correct_amplifier(amp) for amp in raw.amplifiers]
    for amp, pixels in zip(raw.amplifiers, corrected, strict=True):
        image[amp.rows, amp.columns] = pixels
    return image


def read_noise_map(raw: Raw) -> np.ndarray:
    """Read noise [electrons] of each pixel, from its amplifier."""
    noise = np.empty(raw.shape, dtype=np.float32)
    for amp in raw.amplifiers:
        noise[amp.rows, amp.columns] = amp.read_noise * amp.gain
    return noise


@dataclass(frozen=True)
class Calibrations:
    """Master calibrations of one detector: bias [e-], dark [e-/s], flat (mean 1)."""

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray


def remove_signature(raw: Raw, calibs: Calibrations, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(image, variance) in electrons: overscan, gain, bias, dark x EXPTIME, flat."""
    image = assemble(raw, threads)
    image -= calibs.bias
    image -= calibs.dark * np.float32(raw.exposure_time)
    variance = np.clip(image, 0, None) + read_noise_map(raw) ** 2
    image /= calibs.flat
    variance /= calibs.flat ** 2
    return image, variance


def combine_snaps(snaps: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, variance, cosmic-ray mask) of the snaps' mean, per-snap units.

    With two snaps, a pixel that is brighter by CR_SIGMA sigma in one snap than in the other is a
    cosmic ray there: the other snap's value is used. With more, the median rejects them; with
    one, nothing can be compared.
    """
    if len(snaps) == 1:
        image, variance = snaps[0]
        return image, variance, np.zeros(image.shape, dtype=bool)
    images = np.stack([s[0] for s in snaps])
    variances = np.stack([s[1] for s in snaps])
    if len(snaps) == 2:
        difference = images[0] - images[1]
        sigma = np.sqrt(variances[0] + variances[1])
        hit_first, hit_second = difference > CR_SIGMA * sigma, -difference > CR_SIGMA * sigma
        image = images.mean(axis=0)
        image[hit_first] = images[1][hit_first]
        image[hit_second] = images[0][hit_second]
        variance = variances.mean(axis=0) / 2
        variance[hit_first | hit_second] = variances[0][hit_first | hit_second]
        return image, variance, hit_first | hit_second
    median = np.median(images, axis=0)
    sigma = np.sqrt(np.median(variances, axis=0))
    hits = np.any(images - median > CR_SIGMA * sigma, axis=0)
    return median, variances.mean(axis=0) * (np.pi / 2) / len(snaps), hits
