"""Postage stamps for alerts: a small FITS image around each DIA source, with its sky coordinates.

Each alert carries three stamps (difference, science, template), so a detector with thousands of
sources needs thousands of them per image in well under a second. The pixels come from astropy's
Cutout2D; the FITS header is rendered once per (WCS, size) and only its CRPIX cards change per stamp
(exactly the shift Cutout2D applies to its WCS), because astropy's header and HDU writing take
over a millisecond per stamp, far more than the cut itself.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from astropy.nddata import Cutout2D
from astropy.wcs import WCS

SIZE = 30
"""Stamp side in pixels (6 arcsec for LSSTCam's 0.2 arcsec pixels)."""

_BLOCK = 2880
"""FITS files are written in blocks of this many bytes."""
_CARD = 80


@dataclass(frozen=True)
class Cutout:
    """A stamp as the bytes of a FITS file, and whether part of it lies off the image (NaN there)."""

    fits: bytes
    padded: bool


@dataclass(frozen=True)
class _Header:
    """A rendered primary header for one WCS and stamp size, with where its CRPIX cards sit."""

    text: str
    crpix: tuple[float, float]
    slots: tuple[int, int]
    """Character offsets of the CRPIX1 and CRPIX2 cards in `text`."""


_headers: weakref.WeakKeyDictionary[WCS, dict[int, _Header]] = weakref.WeakKeyDictionary()
"""Rendered headers by image WCS: one render per image, forgotten with the WCS."""


def cutout(image: np.ndarray, wcs: WCS, x: float, y: float, size: int = SIZE) -> Cutout:
    """A size x size stamp of `image` centred on the 0-based pixel (x, y), as a FITS file.

    Near an edge the stamp keeps its size and is padded with NaN (`padded` is then true). The
    header holds the stamp's celestial WCS, so a reader finds the source's RA/Dec at its pixel. The
    image must be floating point (NaN padding). The WCS is treated as fixed once used: its header is
    rendered on the first stamp and reused.
    """
    cut = Cutout2D(image, (x, y), size, mode="partial", fill_value=np.nan, copy=False)
    rows, columns = cut.slices_cutout
    padded = rows.stop - rows.start < size or columns.stop - columns.start < size
    # The original pixel at the stamp's (0, 0), which lies off the image when the stamp is padded.
    x0 = cut.origin_original[0] - columns.start
    y0 = cut.origin_original[1] - rows.start
    header = _header(wcs, size)
    text = header.text
    for slot, key, value in zip(header.slots, ("CRPIX1", "CRPIX2"), (header.crpix[0] - x0, header.crpix[1] - y0),
                                strict=True):
        text = text[:slot] + _real_card(key, value) + text[slot + _CARD:]
    data = np.ascontiguousarray(cut.data, dtype=">f4").tobytes()
    return Cutout(text.encode("ascii") + data + bytes(-len(data) % _BLOCK), padded)


def _header(wcs: WCS, size: int) -> _Header:
    """The primary header of a float32 size x size stamp under `wcs`, rendered once."""
    by_size = _headers.setdefault(wcs, {})
    if size not in by_size:
        celestial = wcs.celestial
        hdu = fits.PrimaryHDU(np.zeros((size, size), dtype=np.float32), header=celestial.to_header(relax=True))
        text = hdu.header.tostring()
        keys = [text[start:start + 8].rstrip() for start in range(0, len(text), _CARD)]
        slots = (keys.index("CRPIX1") * _CARD, keys.index("CRPIX2") * _CARD)
        by_size[size] = _Header(text, (float(celestial.wcs.crpix[0]), float(celestial.wcs.crpix[1])), slots)
    return by_size[size]


def _real_card(key: str, value: float) -> str:
    """A FITS card with a real value, formatted by hand: astropy's Card takes 20 us."""
    text = repr(value)
    if "e" in text or "n" in text or len(text) > 20:  # exponents, inf and nan: let astropy spell them
        return str(fits.Card(key, value, "Pixel coordinate of reference point").image)
    return f"{key:<8}= {text:>20} / Pixel coordinate of reference point".ljust(_CARD)
