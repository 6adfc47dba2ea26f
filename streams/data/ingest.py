"""Bringing your own data: templates, master calibrations and reference catalogues into the repository, checked
on the way in.

A template is a FITS image with a celestial WCS (its variance in a `VARIANCE` extension, or estimated
from the image's robust scatter), sky-subtracted, with the PSF's Gaussian sigma in pixels (`PSFSIGMA`
in the header, or given). A master calibration is a FITS image of one detector, valid over a time
range. A reference catalogue is a FITS or Parquet table of stars with positions and fluxes or AB magnitudes in
some of the bands ugrizy. All land where the pipelines' preload looks (`streams.data.repository`,
`streams.data.refcat`); names that become path parts are checked, so nothing can be written outside the repository.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.io.registry import IORegistryError
from astropy.stats import mad_std
from astropy.table import Table
from astropy.wcs import WCS

from streams.core.calibrations import plain_name
from streams.data import refcat, repository
from streams.errors import InvalidEventError
from streams.science import amplifiers, isr
from streams.science.photometry import AB_NJY_ZERO


class IngestError(InvalidEventError):
    """A file that cannot go into the repository as it is: the message says what is missing or wrong."""


@dataclass(frozen=True)
class Ingested:
    """Where a file went."""

    path: Path
    what: str


def _name(kind: str, value: str) -> str:
    if not plain_name(value):
        raise IngestError(f"{kind} {value!r}: letters, digits, '_', '.' and '-' only (it names a folder)")
    return value


MAX_IMAGE_PIXELS = 1 << 26
"""The largest image ingested (8192 x 8192: a template tile, or four CCDs' worth); one declaring more is refused
before it is decoded."""


def _image(path: Path) -> tuple[np.ndarray, fits.Header, fits.HDUList]:
    """The first 2-d image of a file, its header and the open file; its size and compression are checked from
    its header before any pixel is decoded (a decompression bomb is refused, as in a raw)."""
    try:
        hdus = fits.open(path, memmap=False)
    except (OSError, ValueError) as error:
        raise IngestError(f"{path}: not a FITS file ({error})") from error
    try:
        primary = next((hdu for hdu in hdus if _pixels(path, hdu) > 0), None)
    except IngestError:
        hdus.close()
        raise
    if primary is None:
        hdus.close()
        raise IngestError(f"{path}: no two-dimensional image in any HDU")
    return np.asarray(primary.data, dtype=np.float32), primary.header, hdus


def _pixels(path: Path, hdu: object) -> int:
    """The pixels of a 2-d image HDU (0 for any other), at most `MAX_IMAGE_PIXELS`, from its header alone."""
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU) or hdu.header.get("NAXIS") != 2:
        return 0
    naxis1, naxis2 = hdu.header.get("NAXIS1"), hdu.header.get("NAXIS2")
    if not (isinstance(naxis1, int) and isinstance(naxis2, int) and naxis1 > 0 and naxis2 > 0):
        return 0
    if naxis1 * naxis2 > MAX_IMAGE_PIXELS:
        raise IngestError(f"{path}: an image of {naxis1} x {naxis2} pixels, more than {MAX_IMAGE_PIXELS}")
    if isinstance(hdu, fits.CompImageHDU):
        try:
            isr.check_tiles(str(path), hdu, naxis1, naxis2)
        except isr.RawFormatError as error:
            raise IngestError(str(error)) from error
    return naxis1 * naxis2


def _variance(path: Path, hdus: fits.HDUList, image: np.ndarray) -> np.ndarray:
    """The image's VARIANCE extension, checked from its header like the image before it is decoded; without one,
    the image's robust noise squared."""
    if "VARIANCE" not in hdus:
        return np.full(image.shape, float(mad_std(image, ignore_nan=True)) ** 2, dtype=np.float32)
    extension = hdus["VARIANCE"]
    if _pixels(path, extension) == 0:
        raise IngestError(f"{path}: its VARIANCE extension is no two-dimensional image")
    return np.asarray(extension.data, dtype=np.float32)


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
        variance = _variance(path, hdus, image)
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
    """Add a master calibration (bias, dark or flat: an image; ptc: a table of each amplifier's gain and read
    noise) of one detector, valid over [valid_start, valid_end) (TAI Unix seconds).

    Raises:
        IngestError: an unknown type, an empty validity range, no image, a flat without a filter, a ptc table
        without every amplifier, or a name that cannot be a path part.
    """
    instrument = _name("instrument", instrument)
    if calib_type not in repository.CALIB_TYPES:
        raise IngestError(f"calibration type {calib_type!r}: one of {', '.join(repository.CALIB_TYPES)}")
    if not valid_end > valid_start:
        raise IngestError(f"validity range [{valid_start}, {valid_end}) is empty")
    if not 0 <= detector < 1000:
        raise IngestError(f"detector {detector} is out of range")
    if calib_type == "ptc":
        target = repository.calibration_path(root, instrument, calib_type, detector, repository.ANY_FILTER,
                                             valid_start, valid_end)
        repository.write_ptc(target, _amplifiers(path), detector, valid_start, valid_end)
        return Ingested(target, f"ptc of {instrument} detector {detector}")
    filter_name = repository.ANY_FILTER if calib_type in ("bias", "dark") else _name("filter", filter_name)
    if filter_name == repository.ANY_FILTER and calib_type == "flat":
        raise IngestError("a flat needs its filter")
    image, _header, hdus = _image(path)
    hdus.close()
    target = repository.calibration_path(root, instrument, calib_type, detector, filter_name, valid_start, valid_end)
    repository.write_calibration(target, image, calib_type, detector, filter_name, valid_start, valid_end)
    return Ingested(target, f"{calib_type} of {instrument} detector {detector} ({filter_name})")


def _amplifiers(path: Path) -> isr.AmpCalibration:
    """The gains and read noise of a ptc table: columns amplifier (Segment10 ... Segment00), gain [e-/ADU] and
    read_noise [e-], one row per amplifier, all 16 of them."""
    table = _read_table(path)
    missing = [name for name in ("amplifier", "gain", "read_noise") if name not in table.colnames]
    if missing:
        raise IngestError(f"{path}: a ptc table needs the columns amplifier, gain and read_noise; "
                          f"{', '.join(missing)} missing")
    names = [str(name).strip() for name in table["amplifier"]]
    absent = [name for name in amplifiers.SEGMENTS if name not in names]
    if absent:
        raise IngestError(f"{path}: no row for {', '.join(absent)}")
    try:
        return isr.AmpCalibration(dict(zip(names, np.asarray(table["gain"], float).tolist(), strict=True)),
                                  dict(zip(names, np.asarray(table["read_noise"], float).tolist(), strict=True)))
    except (TypeError, ValueError) as bad:
        raise IngestError(f"{path}: {bad}") from bad


MAX_PROPER_MOTION = 20000.0
"""mas/yr: twice Barnard's star's; more means the column is in other units."""
PARQUET_SUFFIXES = (".parquet", ".pq")


def ingest_refcat(root: Path, path: Path) -> Ingested:
    """Add the stars of a reference catalogue (FITS table or Parquet) to the sharded catalogue under `root`.

    Columns (any case): ra, dec [deg] (or coord_ra, coord_dec; a column with a unit, such as Rubin's radians, is
    converted); optional pm_ra (times cos dec), pm_dec [mas/yr, default 0] and epoch [Julian year, or MJD, default
    2016.0]; per band of ugrizy either <band>_flux [nJy] with optional <band>_flux_err, or <band>_mag [AB] with
    optional <band>_mag_err.

    Raises:
        IngestError: not a table, no rows, no positions or positions out of range, no band, non-numeric columns.
    """
    table = _read_table(path)
    if not len(table):
        raise IngestError(f"{path}: the table has no rows")
    columns = {name.lower(): name for name in table.colnames}
    pair = next((names for names in (("ra", "dec"), ("coord_ra", "coord_dec")) if all(n in columns for n in names)),
                None)
    if pair is None:
        shown = ", ".join(table.colnames[:12]) + (", ..." if len(table.colnames) > 12 else "")
        raise IngestError(f"{path}: no position columns: needs ra and dec [deg] (or coord_ra and coord_dec); "
                          f"it has {shown}")
    ra = _column(path, table, columns[pair[0]], u.deg)
    dec = _column(path, table, columns[pair[1]], u.deg)
    _check(path, pair[0], ra, ~(np.isfinite(ra) & (ra >= 0) & (ra < 360)), "in [0, 360) deg")
    _check(path, pair[1], dec, ~(np.isfinite(dec) & (np.abs(dec) <= 90)), "in [-90, 90] deg")
    out = Table({"ra": ra, "dec": dec})
    for name in ("pm_ra", "pm_dec"):
        motion = (np.nan_to_num(_column(path, table, columns[name], u.mas / u.yr)) if name in columns
                  else np.zeros(len(table)))
        _check(path, name, motion, np.abs(motion) > MAX_PROPER_MOTION, f"within {MAX_PROPER_MOTION:.0f} mas/yr")
        out[name] = motion
    out["epoch"] = _epochs(path, table, columns.get("epoch"))
    bands = []
    for band in refcat.BANDS:
        flux, error = _band(path, table, columns, band)
        if flux is not None:
            out[f"{band}_flux"], out[f"{band}_flux_err"] = flux, error
            bands.append(band)
    if not bands:
        raise IngestError(f"{path}: no band: needs <band>_flux [nJy] or <band>_mag [AB] columns for at least one "
                          f"band of {', '.join(refcat.BANDS)}")
    shards = refcat.write(root, out)
    return Ingested(refcat.folder(root), f"{len(out)} reference stars in band{'s' * (len(bands) > 1)} "
                                         f"{', '.join(bands)} into {len(shards)} shard{'s' * (len(shards) > 1)}")


def _read_table(path: Path) -> Table:
    """A FITS or Parquet table (or any table astropy recognises)."""
    suffix = path.suffix.lower()
    fmt = "parquet" if suffix in PARQUET_SUFFIXES else "fits" if suffix in (".fits", ".fit", ".fts") else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # astropy warns of unknown units and of other tables in the file
            table = Table.read(path, format=fmt)
    except ImportError as error:
        raise IngestError(f"{path}: reading Parquet needs pyarrow ({error})") from error
    except (OSError, ValueError, TypeError, KeyError, IndexError, IORegistryError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise IngestError(f"{path}: not a table (a FITS binary table or Parquet file): {reason}") from error
    if not isinstance(table, Table):
        raise IngestError(f"{path}: not a table (a FITS binary table or Parquet file)")
    return table


def _values(path: Path, table: Table, name: str) -> np.ndarray:
    """A column as floats, as they are (masked values NaN)."""
    try:
        values: np.ndarray = np.ma.filled(np.ma.asarray(table[name]).astype(np.float64), np.nan)
    except (TypeError, ValueError) as error:
        raise IngestError(f"{path}: column {name} is not numeric") from error
    if values.ndim != 1:
        raise IngestError(f"{path}: column {name} holds arrays, not one number per star")
    return values


def _column(path: Path, table: Table, name: str, unit: u.UnitBase) -> np.ndarray:
    """A column as floats in `unit`: converted when it carries a unit, taken as `unit` when it has none."""
    values = _values(path, table, name)
    column_unit = getattr(table[name], "unit", None)
    if column_unit is None or column_unit == u.dimensionless_unscaled:
        return values
    try:
        converted: np.ndarray = (values * column_unit).to_value(unit)
    except u.UnitsError as error:
        raise IngestError(f"{path}: column {name} is in {column_unit}, which is not {unit}") from error
    return converted


def _check(path: Path, name: str, values: np.ndarray, bad: np.ndarray, wanted: str) -> None:
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise IngestError(f"{path}: column {name} must be {wanted}: {int(bad.sum())} row(s) are not "
                          f"(first: row {first}, {values[first]})")


def _epochs(path: Path, table: Table, name: str | None) -> np.ndarray:
    """Julian years of the positions: the default where absent, MJD converted (values above 3000, or in days)."""
    if name is None:
        return np.full(len(table), refcat.DEFAULT_EPOCH)
    unit = getattr(table[name], "unit", None)
    in_days = unit is not None and unit.is_equivalent(u.day)
    values = _column(path, table, name, u.day) if in_days else _values(path, table, name)
    with np.errstate(invalid="ignore"):
        mjd = in_days | (values > 3000)
    values = np.where(mjd, refcat.julian_year(values), values)
    values = np.where(np.isfinite(values), values, refcat.DEFAULT_EPOCH)
    _check(path, name, values, (values < 1900) | (values > 2100), "a Julian year (or an MJD) from 1900 to 2100")
    return values


def _band(path: Path, table: Table, columns: dict[str, str], band: str) -> tuple[np.ndarray | None, np.ndarray]:
    """(flux, error) [nJy] of one band from its flux or its AB magnitude columns; (None, ..) when it has neither."""
    missing = np.full(len(table), np.nan)
    if f"{band}_flux" in columns:
        flux = _column(path, table, columns[f"{band}_flux"], u.nJy)
        error_name = columns.get(f"{band}_flux_err") or columns.get(f"{band}_fluxerr")
        error = _column(path, table, error_name, u.nJy) if error_name else missing
        return flux, error
    if f"{band}_mag" in columns:
        flux = 10.0 ** (-0.4 * (_values(path, table, columns[f"{band}_mag"]) - AB_NJY_ZERO))
        error_name = columns.get(f"{band}_mag_err") or columns.get(f"{band}_magerr")
        error = flux * 0.4 * np.log(10.0) * _values(path, table, error_name) if error_name else missing
        return flux, error
    return None, missing
