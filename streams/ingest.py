"""Bringing your own data: templates and master calibrations into the repository, checked on the way in.

A template is a FITS image with a celestial WCS (its variance in a `VARIANCE` extension, or estimated
from the image's robust scatter), sky-subtracted, with the PSF's Gaussian sigma in pixels (`PSFSIGMA`
in the header, or given). A master calibration is a FITS image of one detector, valid over a time
range. Both land where the pipelines' preload looks (`streams.repository`); names that become path
parts are checked, so nothing can be written outside the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.stats import mad_std
from astropy.wcs import WCS

from streams import repository
from streams.errors import InvalidEventError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class IngestError(InvalidEventError):
    """A file that cannot go into the repository as it is: the message says what is missing or wrong."""


@dataclass(frozen=True)
class Ingested:
    """Where a file went."""

    path: Path
    what: str


def _name(kind: str, value: str) -> str:
    if not NAME.match(value) or ".." in value:
        raise IngestError(f"{kind} {value!r}: letters, digits, '_', '.' and '-' only (it names a folder)")
    return value


def _image(path: Path) -> tuple[np.ndarray, fits.Header, fits.HDUList]:
    try:
        hdus = fits.open(path, memmap=False)
    except (OSError, ValueError) as error:
        raise IngestError(f"{path}: not a FITS file ({error})") from error
    primary = next((hdu for hdu in hdus if hdu.data is not None and hdu.data.ndim == 2), None)
    if primary is None:
        hdus.close()
        raise IngestError(f"{path}: no two-dimensional image in any HDU")
    return np.asarray(primary.data, dtype=np.float32), primary.header, hdus


def ingest_template(root: Path, instrument: str, filter_name: str, path: Path, psf_sigma: float | None = None,
                    name: str | None = None) -> Ingested:
    """Add a template tile for `instrument` and `filter_name`.

    Raises:
        IngestError: no image, no celestial WCS, no PSF size, or a name that cannot be a path part.
    """
    instrument, filter_name = _name("instrument", instrument), _name("filter", filter_name)
    tile = _name("template name", name or path.stem)
    image, header, hdus = _image(path)
    with hdus:
        wcs = WCS(header).celestial
        if not wcs.has_celestial or wcs.naxis != 2:
            raise IngestError(f"{path}: its header has no celestial WCS (CTYPE1/2 RA---TAN/DEC--TAN or similar)")
        variance = np.asarray(hdus["VARIANCE"].data, dtype=np.float32) if "VARIANCE" in hdus \
            else np.full(image.shape, float(mad_std(image, ignore_nan=True)) ** 2, dtype=np.float32)
        sigma = psf_sigma if psf_sigma is not None else header.get("PSFSIGMA")
        if sigma is None or not float(sigma) > 0:
            raise IngestError(f"{path}: no PSFSIGMA in its header: give the PSF's Gaussian sigma in pixels")
        if variance.shape != image.shape:
            raise IngestError(f"{path}: VARIANCE {variance.shape} does not match the image {image.shape}")
    repository.write_template(root, instrument, filter_name, tile, image, variance, wcs, float(sigma))
    return Ingested(repository.template_folder(root, instrument, filter_name) / f"{tile}.fits",
                    f"template {tile} for {instrument} {filter_name}")


def ingest_calibration(root: Path, instrument: str, calib_type: str, detector: int, path: Path, valid_start: float,
                       valid_end: float, filter_name: str = repository.ANY_FILTER) -> Ingested:
    """Add a master calibration (bias, dark or flat) of one detector, valid over [valid_start, valid_end) (TAI
    Unix seconds).

    Raises:
        IngestError: an unknown type, an empty validity range, no image, a flat without a filter, or a name that
        cannot be a path part.
    """
    instrument = _name("instrument", instrument)
    if calib_type not in repository.CALIB_TYPES:
        raise IngestError(f"calibration type {calib_type!r}: one of {', '.join(repository.CALIB_TYPES)}")
    if not valid_end > valid_start:
        raise IngestError(f"validity range [{valid_start}, {valid_end}) is empty")
    if not 0 <= detector < 1000:
        raise IngestError(f"detector {detector} is out of range")
    filter_name = repository.ANY_FILTER if calib_type in ("bias", "dark") else _name("filter", filter_name)
    if filter_name == repository.ANY_FILTER and calib_type == "flat":
        raise IngestError("a flat needs its filter")
    image, _header, hdus = _image(path)
    hdus.close()
    target = repository.calibration_path(root, instrument, calib_type, detector, filter_name, valid_start, valid_end)
    repository.write_calibration(target, image, calib_type, detector, filter_name, valid_start, valid_end)
    return Ingested(target, f"{calib_type} of {instrument} detector {detector} ({filter_name})")
