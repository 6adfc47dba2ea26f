"""Calibration reductions: exposures of a sequence, ISR-only, combined into a master calibration."""

from __future__ import annotations

import numpy as np
from astropy.stats import sigma_clip

from streams.science import isr

CLIP_SIGMA = 3.0


def combine(frames: list[np.ndarray]) -> np.ndarray:
    """The sigma-clipped median of the frames, pixel by pixel (cosmic rays and outliers rejected)."""
    clipped = sigma_clip(np.stack(frames), sigma=CLIP_SIGMA, axis=0, maxiters=3, masked=True)
    median = np.ma.median(clipped, axis=0)  # type: ignore[no-untyped-call]
    return np.asarray(median.filled(np.nan), dtype=np.float32)


def reduce(kind: str, raws: list[isr.Raw], amps: isr.AmpCalibration, bias: np.ndarray | None = None,
           dark: np.ndarray | None = None) -> np.ndarray:
    """A master from a sequence, in DM's frame: bias [e-]; dark [e-/s], bias removed; flat [mean 1], bias and dark
    removed. `amps` (the detector's ptc) turns each amplifier's ADU into electrons.

    Raises:
        ValueError: an unknown kind, a dark or flat without the calibrations it needs, or `amps` lacking a segment.
    """
    if kind not in ("bias", "dark", "flat"):
        raise ValueError(f"unknown calibration type {kind!r}")
    frames = [isr.assemble(raw, amps) for raw in raws]
    if kind == "bias":
        return combine(frames)
    if bias is None or (kind == "flat" and dark is None):
        raise ValueError(f"a {kind} needs the bias{' and dark' if kind == 'flat' else ''} first")
    if kind == "dark":
        return combine([(frame - bias) / np.float32(raw.exposure_time)
                        for frame, raw in zip(frames, raws, strict=True)])
    assert dark is not None  # a flat, checked above
    signals = [frame - bias - dark * np.float32(raw.exposure_time) for frame, raw in zip(frames, raws, strict=True)]
    master = combine([signal / np.median(signal) for signal in signals])
    return master / np.float32(np.nanmean(master))
