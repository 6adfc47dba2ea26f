"""Where a detector looks: its WCS from the boresight, the camera angle and the focal plane.

LSSTCam detector centres (focal-plane reference): x = 127 (rx - 2) + 42.25 (sx - 1) mm, likewise
y; 10 um pixels at 0.2 arcsec per pixel (about 20 arcsec per mm). A tangent-plane WCS around the
boresight is exact enough for preloading and for simulating (no optical distortion is modelled).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.wcs import WCS

from streams.core.focal_plane import detector_name

PIXEL_MM = 0.010
PIXEL_ARCSEC = 0.2
AMP_COLUMNS, AMP_ROWS = 8, 2
"""LSSTCam CCDs read out through 16 amplifiers: 2 rows of 8 segments."""


@dataclass(frozen=True)
class CcdShape:
    """The imaging area of a CCD and how its amplifiers tile it."""

    height: int = 4000
    width: int = 4072

    @property
    def amp_shape(self) -> tuple[int, int]:
        """(rows, columns) of one amplifier's imaging section."""
        return self.height // AMP_ROWS, self.width // AMP_COLUMNS

    def amp_slices(self) -> list[tuple[slice, slice]]:
        """The (rows, columns) of the CCD each amplifier covers, in readout order."""
        rows, columns = self.amp_shape
        return [(slice(r * rows, (r + 1) * rows), slice(c * columns, (c + 1) * columns))
                for r in range(AMP_ROWS) for c in range(AMP_COLUMNS)]


def detector_offset_mm(instrument: str, detector: int) -> tuple[float, float]:
    """The detector centre in the focal plane, in mm from the boresight."""
    name = detector_name(instrument, detector)
    rx, ry = int(name[2]), int(name[1])
    sx, sy = int(name[6]), int(name[5])
    return 127.0 * (rx - 2) + 42.25 * (sx - 1), 127.0 * (ry - 2) + 42.25 * (sy - 1)


def tan_wcs(ra: float, dec: float, angle_deg: float, crpix: tuple[float, float]) -> WCS:
    """A TAN WCS with the tangent point (ra, dec) at pixel `crpix` (1-based FITS convention)."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [ra, dec]
    wcs.wcs.crpix = list(crpix)
    scale = PIXEL_ARCSEC / 3600.0
    cos, sin = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    wcs.wcs.cd = np.array([[-scale * cos, scale * sin], [scale * sin, scale * cos]])
    return wcs


def detector_wcs(instrument: str, detector: int, ra: float, dec: float, camera_angle: float,
                 shape: CcdShape) -> WCS:
    """The WCS of a detector for a pointing: the boresight sits off the CCD by its focal-plane offset."""
    x_mm, y_mm = detector_offset_mm(instrument, detector)
    crpix = (shape.width / 2 + 0.5 - x_mm / PIXEL_MM, shape.height / 2 + 0.5 - y_mm / PIXEL_MM)
    return tan_wcs(ra, dec, camera_angle, crpix)


def footprint(wcs: WCS, shape: CcdShape, pad_arcsec: float = 50.1) -> tuple[np.ndarray, np.ndarray]:
    """The sky corners (ra, dec in degrees) of the CCD, padded like the real preload (50.1 arcsec)."""
    pad = pad_arcsec / PIXEL_ARCSEC
    x = np.array([-pad, shape.width + pad, shape.width + pad, -pad])
    y = np.array([-pad, -pad, shape.height + pad, shape.height + pad])
    ra, dec = wcs.all_pix2world(x, y, 0)
    return np.asarray(ra), np.asarray(dec)
