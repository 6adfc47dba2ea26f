"""Each ISR step on its own, with numbers small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from streams.science import isr


def raw_of(pixels: np.ndarray, overscan: np.ndarray, gain: float = 2.0, exposure_time: float = 10.0) -> isr.Raw:
    """A one-amplifier raw."""
    rows, columns = pixels.shape
    amp = isr.Amplifier(pixels=pixels.astype(np.float32), overscan=overscan.astype(np.float32),
                        rows=slice(0, rows), columns=slice(0, columns), gain=gain, read_noise=3.0)
    return isr.Raw(fits.Header({"EXPTIME": exposure_time}), [amp], (rows, columns))


def test_overscan_is_removed_row_by_row_and_gain_applied() -> None:
    """A level drifting along the readout is taken out per row, then ADU become electrons."""
    drift = np.arange(4, dtype=np.float32)[:, None] * 10 + 1000
    raw = raw_of(drift + np.full((4, 6), 50.0), np.repeat(drift, 8, axis=1))
    assert np.allclose(isr.assemble(raw), 100.0), "(1050 + 10 row - (1000 + 10 row)) ADU x 2 e-/ADU"


def test_bias_dark_and_flat() -> None:
    """Bias subtracted, dark scaled by EXPTIME subtracted, then divided by the flat."""
    pixels = np.full((2, 2), 1000.0 + 60.0)  # 100 e- sky x flat + 3 e- bias + 0.5 e-/s x 10 s dark, in ADU
    raw = raw_of(pixels, np.full((2, 4), 1000.0), gain=1.0)
    flat = np.array([[0.5, 1.0], [1.5, 2.0]], dtype=np.float32)
    calibs = isr.Calibrations(bias=np.full((2, 2), 3.0, np.float32), dark=np.full((2, 2), 0.5, np.float32),
                              flat=flat)
    image, variance = isr.remove_signature(raw, calibs)
    assert np.allclose(image, (60 - 3 - 5) / flat)
    assert np.allclose(variance, (52 + 9) / flat ** 2), "Poisson plus read noise, through the flat"


@pytest.mark.parametrize("snaps", [1, 3])
def test_snap_counts_other_than_two(snaps: int) -> None:
    """One snap is used as it is; three or more are median-combined, rejecting a hit in one."""
    rng = np.random.default_rng(1)
    frames = [(rng.normal(500, 20, (32, 32)).astype(np.float32), np.full((32, 32), 400.0, np.float32))
              for _ in range(snaps)]
    frames[0][0][5, 5] += 8000
    image, _, hits = isr.combine_snaps(frames)
    if snaps == 1:
        assert image[5, 5] > 8000 and not hits.any()
    else:
        assert image[5, 5] < 600 and hits[5, 5]
