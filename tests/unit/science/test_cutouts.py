"""Alert stamps: FITS images that open with astropy and put the source at its sky position."""

from __future__ import annotations

import io

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

from streams.science.cutouts import cutout

HEIGHT, WIDTH = 400, 520
SCALE = 0.2 / 3600.0  # degrees per pixel


def rotated_tan_wcs(angle_deg: float = 33.0) -> WCS:
    """A TAN WCS at 0.2 arcsec per pixel, rotated, with its tangent point off the image centre."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, -30.2]
    wcs.wcs.crpix = [180.5, 260.25]
    cos, sin = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    wcs.wcs.cd = np.array([[-SCALE * cos, SCALE * sin], [SCALE * sin, SCALE * cos]])
    return wcs


def coded_image() -> np.ndarray:
    """Each pixel's value is its own index (y * WIDTH + x): a stamp pixel tells where it came from."""
    return np.arange(HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)


def open_stamp(data: bytes) -> tuple[np.ndarray, WCS]:
    """The stamp's pixels and WCS, as a broker would read them."""
    with fits.open(io.BytesIO(data)) as hdus:
        hdu = hdus[0]
        assert isinstance(hdu, fits.PrimaryHDU) and hdu.is_image
        return np.array(hdu.data), WCS(hdu.header)


def check_source_position(image: np.ndarray, wcs: WCS, x: float, y: float, stamp: np.ndarray,
                          stamp_wcs: WCS) -> None:
    """The stamp's WCS maps the source's RA/Dec to the stamp pixel that holds the source's pixel."""
    sky = wcs.pixel_to_world(x, y)
    sx, sy = (float(v) for v in stamp_wcs.world_to_pixel(sky))
    centre = (stamp.shape[0] - 1) / 2
    assert abs(sx - centre) <= 0.5 + 1e-9 and abs(sy - centre) <= 0.5 + 1e-9, "source within half a pixel of centre"
    assert stamp[round(sy), round(sx)] == image[round(y), round(x)], "pixels and WCS agree"
    at_centre: SkyCoord = stamp_wcs.pixel_to_world(centre, centre)
    assert at_centre.separation(sky).arcsec <= 0.5 * np.sqrt(2) * 0.2 + 1e-6, "stamp centre on the source"
    reference = Cutout2D(image, (x, y), stamp.shape[0], wcs=wcs, mode="partial", fill_value=np.nan)
    assert np.allclose(stamp_wcs.wcs.crpix, reference.wcs.wcs.crpix, rtol=0, atol=1e-9), "Cutout2D's shifted WCS"
    back = stamp_wcs.world_to_pixel(sky)
    assert np.allclose(back, reference.input_position_cutout, rtol=0, atol=1e-6), "to a millionth of a pixel"


def test_centre_stamp_is_a_float32_image_with_the_source_at_its_sky_position() -> None:
    """A stamp inside the image: 30 x 30 float32 pixels, unpadded, the source at its RA/Dec."""
    image, wcs = coded_image(), rotated_tan_wcs()
    x, y = 260.3, 199.8
    result = cutout(image, wcs, x, y)
    stamp, stamp_wcs = open_stamp(result.fits)
    assert not result.padded
    assert stamp.shape == (30, 30) and stamp.dtype == np.dtype(">f4") and np.isfinite(stamp).all()
    assert stamp_wcs.has_celestial and stamp_wcs.wcs.ctype[0] == "RA---TAN"
    check_source_position(image, wcs, x, y, stamp, stamp_wcs)


@pytest.mark.parametrize(("x", "y"), [(3.2, 4.9), (WIDTH - 2.6, HEIGHT - 1.1)])
def test_corner_stamp_keeps_its_size_and_is_padded_with_nan(x: float, y: float) -> None:
    """A source near a corner: still 30 x 30, flagged padded, NaN off the image, WCS still right."""
    image, wcs = coded_image(), rotated_tan_wcs()
    result = cutout(image, wcs, x, y)
    stamp, stamp_wcs = open_stamp(result.fits)
    assert result.padded
    assert stamp.shape == (30, 30)
    off = np.isnan(stamp)
    assert off.any() and not off.all(), "part of the stamp lies off the image"
    rows, columns = np.nonzero(~off)
    code = int(stamp[rows[0], columns[0]])
    y0, x0 = code // WIDTH - rows[0], code % WIDTH - columns[0]
    yy, xx = np.mgrid[y0:y0 + 30, x0:x0 + 30]
    inside = (yy >= 0) & (yy < HEIGHT) & (xx >= 0) & (xx < WIDTH)
    assert np.array_equal(off, ~inside), "NaN exactly where the stamp leaves the image"
    assert np.array_equal(stamp[inside], image[yy[inside], xx[inside]]), "the image's pixels elsewhere"
    check_source_position(image, wcs, x, y, stamp, stamp_wcs)


def test_stamps_of_different_sizes_and_wcs_do_not_mix() -> None:
    """Stamps of another size or another image's WCS get their own header (rendered once per WCS)."""
    image = coded_image()
    first, second = rotated_tan_wcs(10.0), rotated_tan_wcs(-70.0)
    for wcs in (first, second, first):
        for size in (30, 21):
            stamp, stamp_wcs = open_stamp(cutout(image, wcs, 100.7, 300.2, size).fits)
            assert stamp.shape == (size, size)
            check_source_position(image, wcs, 100.7, 300.2, stamp, stamp_wcs)
