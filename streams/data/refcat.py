"""The reference catalogue under the data root, sharded by sky region like Rubin's refcat shards.

    <root>/refcat/index.json        shard name -> {"ra": [min, max], "dec": [min, max]} (the shard's cell, degrees)
    <root>/refcat/<shard>.fits      FITS BINTABLE: ra, dec [deg], pm_ra, pm_dec [mas/yr, pm_ra includes cos(dec)],
                                    epoch [Julian year], <band>_flux, <band>_flux_err [nJy] per band

Shards are cells of a fixed grid of about 1 x 1 degree: declination bands 1 degree high, each cut into a whole
number of RA cells about 1/cos(dec) degrees wide. A detector's preload reads one index and the one to four shards
its footprint touches.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack

FOLDER = "refcat"
INDEX = "index.json"
COLUMNS = ("ra", "dec", "pm_ra", "pm_dec", "epoch")
"""The astrometric columns every shard has; photometric ones are <band>_flux and <band>_flux_err."""
BANDS = "ugrizy"
MAS_PER_DEG = 3.6e6
DEFAULT_EPOCH = 2016.0
"""Julian year of the positions when a catalogue does not say (Gaia DR3's)."""


@dataclass(frozen=True)
class RefStars:
    """Reference stars at an epoch: positions [deg] and fluxes [nJy] in one band (NaN where the catalogue has
    none)."""

    ra: np.ndarray
    dec: np.ndarray
    flux: np.ndarray


def julian_year(mjd: np.ndarray | float) -> np.ndarray | float:
    """The Julian epoch (the unit of `epoch` and of proper motions) of a Modified Julian Date."""
    return 2000.0 + (mjd - 51544.5) / 365.25


def folder(root: Path) -> Path:
    """Where the reference catalogue lives."""
    return root / FOLDER


def _band_index(dec: np.ndarray) -> np.ndarray:
    band: np.ndarray = np.clip(np.floor(dec), -90, 89).astype(int)
    return band


def _ra_cells(band: np.ndarray) -> np.ndarray:
    """How many RA cells the declination band starting at `band` degrees holds (at least one, at the poles)."""
    cells: np.ndarray = np.maximum(1, np.floor(360.0 * np.cos(np.radians(band + 0.5)))).astype(int)
    return cells


def _cells(ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    band = _band_index(np.asarray(dec, dtype=float))
    cells = _ra_cells(band)
    column = np.floor(np.mod(np.asarray(ra, dtype=float), 360.0) / (360.0 / cells)).astype(int)
    return band, np.minimum(column, cells - 1)


def _name(band: int, column: int) -> str:
    return f"d{band:04d}_r{column:04d}"


def _bounds(band: int, column: int) -> dict[str, list[float]]:
    width = 360.0 / int(_ra_cells(np.array(band)))
    return {"ra": [column * width, (column + 1) * width], "dec": [float(band), float(band + 1)]}


def shard_name(ra: float, dec: float) -> str:
    """The shard a position falls in, e.g. "d-031_r0123" (declination band from -31 to -30 deg, RA cell 123)."""
    band, column = _cells(np.array([ra]), np.array([dec]))
    return _name(int(band[0]), int(column[0]))


def write(root: Path, table: Table) -> list[Path]:
    """Split rows among their shards, merged with what each shard holds (columns united, a band a shard lacked is
    NaN there; a row with the same ra, dec and epoch as one already there replaces it, so ingesting a catalogue
    twice does not double it), index updated. Missing pm_ra, pm_dec, epoch get 0, 0, 2016.0. Returns the shard
    paths written.

    Raises:
        ValueError: the table has no ra or dec column (`streams.data.ingest.ingest_refcat` checks catalogues first).
    """
    table = _standard(table)
    if not len(table):
        return []
    target = folder(root)
    target.mkdir(parents=True, exist_ok=True)
    index_path = target / INDEX
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    band, column = _cells(np.asarray(table["ra"]), np.asarray(table["dec"]))
    key = (band + 90) * 1000 + column
    order = np.argsort(key, kind="stable")
    cells, starts = np.unique(key[order], return_index=True)
    written = []
    for cell, rows_of_cell in zip(cells.tolist(), np.split(order, starts[1:]), strict=True):
        b, c = cell // 1000 - 90, cell % 1000
        name = _name(b, c)
        rows = table[rows_of_cell]
        path = target / f"{name}.fits"
        rows = _merge(Table.read(path, format="fits"), rows) if path.exists() else _latest(rows)
        _write_atomically(path, rows)
        index[name] = _bounds(b, c)
        written.append(path)
    _write_text_atomically(index_path, json.dumps(index, indent=1, sort_keys=True))
    return written


def _merge(old: Table, new: Table) -> Table:
    """Old rows then new ones, columns united (missing fluxes NaN); of equal (ra, dec, epoch) the new row stays."""
    names = list(old.colnames) + [name for name in new.colnames if name not in old.colnames]
    for part in (old, new):
        for name in names:
            if name not in part.colnames:
                part[name] = np.full(len(part), np.nan)
    return _latest(vstack([old[names], new[names]], metadata_conflicts="silent"))


def _latest(table: Table) -> Table:
    """The table without repeated stars (equal ra, dec and epoch): the last of each stays, in order."""
    keys = np.rec.fromarrays([np.asarray(table[name], dtype=float) for name in ("ra", "dec", "epoch")])
    _, last = np.unique(keys[::-1], return_index=True)
    kept: Table = table[np.sort(len(table) - 1 - last)]
    return kept


def _standard(table: Table) -> Table:
    """The table with the astrometric columns a shard always has (no proper motion and epoch 2016.0 when absent)
    and every column as float64."""
    missing = [name for name in ("ra", "dec") if name not in table.colnames]
    if missing:
        raise ValueError(f"a reference catalogue needs columns {', '.join(missing)}")
    defaults = {"pm_ra": 0.0, "pm_dec": 0.0, "epoch": DEFAULT_EPOCH}
    result = Table()
    for name in COLUMNS:
        result[name] = _floats(table[name]) if name in table.colnames else np.full(len(table), defaults[name])
    for name in table.colnames:
        if name not in COLUMNS:
            result[name] = _floats(table[name])
    return result


def _floats(column: np.ndarray) -> np.ndarray:
    """A column as float64, masked values NaN."""
    values: np.ndarray = np.ma.filled(np.ma.asarray(column).astype(np.float64), np.nan)
    return values


def _write_atomically(path: Path, table: Table) -> None:
    """Write a shard so a reader never sees half of it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".fits.tmp")
    os.close(handle)
    try:
        fits.BinTableHDU(table).writeto(temporary, overwrite=True)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _write_text_atomically(path: Path, text: str) -> None:
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


@dataclass(frozen=True)
class _Box:
    """A sky box: declination range and an RA interval that may run past 0 or 360 (low <= high)."""

    ra_low: float
    ra_high: float
    dec_low: float
    dec_high: float

    def holds_ra(self, ra: np.ndarray) -> np.ndarray:
        inside: np.ndarray = np.mod(ra - self.ra_low, 360.0) <= self.ra_high - self.ra_low
        return inside

    def overlaps(self, ra: list[float], dec: list[float]) -> bool:
        """Whether the box overlaps a shard's cell (its RA within [0, 360])."""
        if dec[0] > self.dec_high or dec[1] < self.dec_low:
            return False
        return any(ra[0] + turn <= self.ra_high and self.ra_low <= ra[1] + turn for turn in (-360.0, 0.0, 360.0))


def _box(ra: np.ndarray, dec: np.ndarray) -> _Box:
    """The box of a footprint's corners (in order around it). RA is unwrapped from the first corner, so corners on
    both sides of RA 0 make one interval; corners that wind around a pole make a cap down to the lowest corner."""
    ra, dec = np.asarray(ra, dtype=float).ravel(), np.asarray(dec, dtype=float).ravel()
    steps = np.mod(np.diff(np.append(ra, ra[0])) + 180.0, 360.0) - 180.0
    if abs(steps.sum()) > 180.0:  # the corners go once around a pole
        return (_Box(0.0, 360.0, float(dec.min()), 90.0) if dec.mean() > 0
                else _Box(0.0, 360.0, -90.0, float(dec.max())))
    unwrapped = ra[0] + np.mod(ra - ra[0] + 180.0, 360.0) - 180.0
    low, high = float(unwrapped.min()), float(unwrapped.max())
    if low < 0 or low >= 360:
        low, high = low % 360.0, low % 360.0 + (high - low)
    return _Box(low, high, float(dec.min()), float(dec.max()))


def find_shards(root: Path, ra: np.ndarray, dec: np.ndarray) -> list[Path]:
    """Shards whose cell overlaps the box of the given corners (a detector's footprint, in order around it)."""
    index_path = folder(root) / INDEX
    if not index_path.exists():
        return []
    box = _box(ra, dec)
    return [index_path.parent / f"{name}.fits" for name, cell in sorted(json.loads(index_path.read_text()).items())
            if box.overlaps(cell["ra"], cell["dec"])]


def load(root: Path, ra: np.ndarray, dec: np.ndarray, band: str, epoch: float) -> RefStars:
    """The stars inside the corners' box from all overlapping shards, moved by their proper motion from their
    epoch to `epoch` (Julian year), with their flux in `band` (NaN where a shard has none)."""
    box = _box(ra, dec)
    parts_ra, parts_dec, parts_flux = [], [], []
    for path in find_shards(root, ra, dec):
        if not path.exists():
            continue
        with fits.open(path, memmap=False) as hdus:
            data = hdus[1].data
            names = {name.lower() for name in data.columns.names}
            star_ra, star_dec = np.asarray(data["ra"], dtype=float), np.asarray(data["dec"], dtype=float)
            years = epoch - np.asarray(data["epoch"], dtype=float)
            pm_ra = np.nan_to_num(np.asarray(data["pm_ra"], dtype=float))
            pm_dec = np.nan_to_num(np.asarray(data["pm_dec"], dtype=float))
            cos_dec = np.maximum(np.cos(np.radians(star_dec)), 1e-9)
            star_ra = np.mod(star_ra + pm_ra * years / MAS_PER_DEG / cos_dec, 360.0)
            star_dec = np.clip(star_dec + pm_dec * years / MAS_PER_DEG, -90.0, 90.0)
            column = f"{band.lower()}_flux"
            flux = np.asarray(data[column], dtype=float) if column in names else np.full(len(star_ra), np.nan)
        inside = box.holds_ra(star_ra) & (star_dec >= box.dec_low) & (star_dec <= box.dec_high)
        parts_ra.append(star_ra[inside])
        parts_dec.append(star_dec[inside])
        parts_flux.append(flux[inside])
    if not parts_ra:
        return RefStars(np.array([]), np.array([]), np.array([]))
    return RefStars(np.concatenate(parts_ra), np.concatenate(parts_dec), np.concatenate(parts_flux))
