"""Each ISR step on its own, with numbers small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from streams.science import isr
from streams.science.amplifiers import Placement


def raw_of(pixels: np.ndarray, overscan: np.ndarray, exposure_time: float = 10.0, flip_x: bool = False,
           flip_y: bool = False) -> isr.Raw:
    """A one-amplifier raw (Segment10) covering the whole CCD."""
    rows, columns = pixels.shape
    amp = isr.Amplifier(name="Segment10", pixels=pixels.astype(np.float32), overscan=overscan.astype(np.float32),
                        placement=Placement(slice(0, rows), slice(0, columns), flip_x, flip_y))
    return isr.Raw(fits.Header({"EXPTIME": exposure_time}), [amp], (rows, columns), "LSSTCam", 94, "E2V")


def amps(gain: float = 2.0, read_noise: float = 3.0) -> isr.AmpCalibration:
    """The ptc of the one amplifier."""
    return isr.AmpCalibration({"Segment10": gain}, {"Segment10": read_noise})


def test_overscan_is_removed_row_by_row_and_gain_applied() -> None:
    """A level drifting along the readout is taken out per row, then ADU become electrons."""
    drift = np.arange(4, dtype=np.float32)[:, None] * 10 + 1000
    raw = raw_of(drift + np.full((4, 6), 50.0), np.repeat(drift, 8, axis=1))
    assert np.allclose(isr.assemble(raw, amps()), 100.0), "(1050 + 10 row - (1000 + 10 row)) ADU x 2 e-/ADU"


def test_the_first_two_overscan_columns_are_left_out_when_there_are_more_than_four() -> None:
    """CTI trails into the first overscan columns: with 6 columns the level is the median of the last 4; with 4,
    all of them count."""
    pixels = np.full((1, 3), 1100.0)
    six = raw_of(pixels, np.array([[5000.0, 3000.0, 1000.0, 1001.0, 1003.0, 1004.0]]))
    assert np.allclose(isr.assemble(six, amps(gain=1.0)), 1100 - 1002), "median of 1000, 1001, 1003, 1004"
    four = raw_of(pixels, np.array([[5000.0, 3000.0, 1000.0, 1002.0]]))
    assert np.allclose(isr.assemble(four, amps(gain=1.0)), 1100 - 2001), "median of all four"


@pytest.mark.parametrize(("flip_x", "flip_y", "expected"), [
    (False, False, [[1, 2, 3], [4, 5, 6]]), (True, False, [[3, 2, 1], [6, 5, 4]]),
    (False, True, [[4, 5, 6], [1, 2, 3]]), (True, True, [[6, 5, 4], [3, 2, 1]])])
def test_flips_put_the_first_pixel_read_at_the_far_end(flip_x: bool, flip_y: bool, expected: list[list[int]]) -> None:
    """Raw column 0 lands on the placement's last column when flipped in x; row 0 on its last row in y."""
    raw = raw_of(np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.zeros((2, 2)), flip_x=flip_x, flip_y=flip_y)
    assert np.array_equal(isr.assemble(raw, amps(gain=1.0)), np.array(expected, dtype=np.float32))
    assert np.array_equal(isr.correct_amplifier(raw.amplifiers[0], 1.0), np.array(expected, dtype=np.float32))


def test_threads_give_the_same_image() -> None:
    """Correcting amplifiers in parallel changes nothing."""
    rng = np.random.default_rng(4)
    raw = raw_of(rng.normal(1000, 5, (20, 30)), rng.normal(990, 5, (20, 10)), flip_x=True)
    assert np.array_equal(isr.assemble(raw, amps(), threads=3), isr.assemble(raw, amps()))


def test_a_ptc_without_the_amplifier_is_a_clear_error() -> None:
    """The gains come from the ptc only; a missing one is named."""
    raw = raw_of(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="no gain for Segment10"):
        isr.assemble(raw, isr.AmpCalibration({"Segment11": 1.0}, {"Segment10": 1.0}))


def test_bias_dark_and_flat() -> None:
    """Bias subtracted, dark scaled by EXPTIME subtracted, then divided by the flat."""
    pixels = np.full((2, 2), 1000.0 + 60.0)  # 100 e- sky x flat + 3 e- bias + 0.5 e-/s x 10 s dark, in ADU
    raw = raw_of(pixels, np.full((2, 4), 1000.0))
    flat = np.array([[0.5, 1.0], [1.5, 2.0]], dtype=np.float32)
    calibs = isr.Calibrations(bias=np.full((2, 2), 3.0, np.float32), dark=np.full((2, 2), 0.5, np.float32),
                              flat=flat, amps=amps(gain=1.0, read_noise=3.0))
    image, variance = isr.remove_signature(raw, calibs)
    assert np.allclose(image, (60 - 3 - 5) / flat)
    assert np.allclose(variance, (52 + 9) / flat ** 2), "Poisson plus the ptc's 3 e- read noise, through the flat"


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
