"""The data repository under the data root: calibrations valid over time ranges, template tiles.

    <root>/calib/<instrument>/<type>/<detector>/<type>_<filter>_<valid start>_<valid end>.fits
        (bias, dark, flat: an image in DM's frame; ptc: a table of per-amplifier gains and read noise)
    <root>/templates/<instrument>/<filter>/index.json      (tile paths and sky bounding boxes)
    <root>/templates/<instrument>/<filter>/<tile>.fits      (image, VARIANCE extension, WCS, PSFSIGMA)
    <root>/raw/<instrument>/<day_obs>/<obs_id>/<obs_id>_<detector name>.fits   (as the camera names raws)

Validity times are TAI Unix seconds (as private_sndStamp); the filter is `any` for bias, dark and ptc.
Calibration lookups list one small folder; template lookups read one index; both are cheap.

Filter and tile names come from events and raw headers: they must be plain names, and every path
written or looked up is resolved and must stay under its root (`contained`), so no name, `..` or
symbolic link can put a file elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from streams.core.calibrations import calibration_name, parse_calibration_name, plain_name
from streams.errors import NonRetriableError
from streams.science import amplifiers, isr
from streams.science.alert_production import Template

CALIB_TYPES = ("bias", "dark", "flat", "ptc")
FILTERLESS_TYPES = ("bias", "dark", "ptc")
"""Calibration types that do not depend on the filter (stored with filter `any`)."""
ANY_FILTER = "any"
PTC_TABLE = "PTC"


class UnsafePath(NonRetriableError):  # noqa: N818 (a refusal: running again would refuse again)
    """A name that is not a plain path part, or a path that resolves outside its root: nothing is written or read
    there."""


class MissingCalibration(NonRetriableError, LookupError):  # noqa: N818 (a condition the pipeline reports)
    """No calibration of this type is valid for the detector, filter and time."""


@dataclass(frozen=True)
class CalibrationFile:
    """One certified master calibration."""

    path: Path
    calib_type: str
    detector: int
    filter: str
    valid_start: float
    valid_end: float


def contained(root: Path, path: Path) -> Path:
    """`path`, unchanged, once it is known to resolve (symbolic links and `..` followed) under `root` (resolved
    too): every path a pipeline writes goes through here before anything is created.

    Raises:
        UnsafePath: it resolves outside `root`.
    """
    base, resolved = root.resolve(), path.resolve()
    if not resolved.is_relative_to(base):
        raise UnsafePath(f"{path} resolves to {resolved}, outside {base}: refusing to use it")
    return path


def check_name(kind: str, value: str) -> str:
    """`value`, if it is a plain name (letters, digits, '_', '.', '-', no '..'): it becomes a folder or file name.

    Raises:
        UnsafePath: anything else.
    """
    if not plain_name(value):
        raise UnsafePath(f"{kind} {value!r} is not a plain name (letters, digits, '_', '.', '-', no '..', at most "
                         "64 characters): it would name a repository path")
    return value


def calibration_path(root: Path, instrument: str, calib_type: str, detector: int, filter_name: str,
                     valid_start: float, valid_end: float) -> Path:
    """Where a master calibration is stored.

    Raises:
        UnsafePath: an instrument, type or filter that is not a plain name, or a path outside `<root>/calib`.
    """
    name = calibration_name(check_name("calibration type", calib_type), check_name("filter", filter_name),
                            valid_start, valid_end)
    calib = root / "calib"
    return contained(calib, calib / check_name("instrument", instrument) / calib_type / str(int(detector)) / name)


def _writable(path: Path, root: Path | None) -> Path:
    """`path` with its folder made, once it is known to resolve under `<root>/calib` (when a root is given)."""
    if root is not None:
        contained(root / "calib", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_calibration(path: Path, data: np.ndarray, calib_type: str, detector: int, filter_name: str,
                      valid_start: float, valid_end: float, inputs: int = 0, *, root: Path | None = None) -> None:
    """Write a master calibration with its validity range in the header. Pipelines give the repository's `root`:
    the path is checked again, right before anything is created, to resolve under its calib folder.

    Raises:
        UnsafePath: a filter that is not a plain name, or (with `root`) a path outside `<root>/calib`.
    """
    check_name("filter", filter_name)
    _writable(path, root)
    header = fits.Header({"CALIBTYP": calib_type, "DETECTOR": detector, "FILTER": filter_name,
                          "VALIDSTA": valid_start, "VALIDEND": valid_end, "NINPUTS": inputs})
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path, overwrite=True)


def describe_calibration(path: Path) -> CalibrationFile:
    """What a master calibration's path says: type, detector, filter (may hold underscores), validity."""
    calib_type = path.parent.parent.name
    filter_name, start, end = parse_calibration_name(path.name, calib_type)
    return CalibrationFile(path, calib_type, int(path.parent.name), filter_name, start, end)


def find_calibration(root: Path, instrument: str, calib_type: str, detector: int, filter_name: str,
                     when: float) -> CalibrationFile:
    """The calibration valid at `when`; of several, the one whose validity began last.

    Raises:
        MissingCalibration: none is valid then.
    """
    wanted = ANY_FILTER if calib_type in FILTERLESS_TYPES else filter_name
    folder = root / "calib" / instrument / calib_type / str(detector)
    files = [describe_calibration(path) for path in folder.glob(f"{calib_type}_*.fits")] if folder.is_dir() else []
    candidates = [f for f in files if f.filter == wanted and f.valid_start <= when < f.valid_end]
    if not candidates:
        raise MissingCalibration(f"no {calib_type} for {instrument} detector {detector} filter {wanted} "
                                 f"valid at {when:.0f}")
    return max(candidates, key=lambda c: c.valid_start)


def read_calibration(path: Path) -> np.ndarray:
    """A master calibration's pixels."""
    with fits.open(path, memmap=False) as hdus:
        return np.asarray(hdus[0].data, dtype=np.float32)


def write_ptc(path: Path, amps: isr.AmpCalibration, detector: int, valid_start: float, valid_end: float, *,
              root: Path | None = None) -> None:
    """Write a detector's ptc calibration: the primary header as for the masters, then a table with one row per
    amplifier (amplifier, gain [e-/ADU], read_noise [e-]).

    Raises:
        ValueError: an amplifier with a gain but no read noise, or the reverse.
        UnsafePath: (with `root`) a path outside `<root>/calib`.
    """
    if set(amps.gains) != set(amps.read_noise):
        raise ValueError(f"gains for {sorted(amps.gains)} but read noise for {sorted(amps.read_noise)}")
    order = {name: index for index, name in enumerate(amplifiers.SEGMENTS)}
    names = sorted(amps.gains, key=lambda name: (order.get(name, len(order)), name))
    _writable(path, root)
    header = fits.Header({"CALIBTYP": "ptc", "DETECTOR": detector, "FILTER": ANY_FILTER,
                          "VALIDSTA": valid_start, "VALIDEND": valid_end})
    table = fits.BinTableHDU.from_columns([
        fits.Column("amplifier", f"{max([len(n) for n in names] + [1])}A", array=names),
        fits.Column("gain", "D", unit="electron/adu", array=[amps.gains[n] for n in names]),
        fits.Column("read_noise", "D", unit="electron", array=[amps.read_noise[n] for n in names])], name=PTC_TABLE)
    fits.HDUList([fits.PrimaryHDU(header=header), table]).writeto(path, overwrite=True)


def read_ptc(path: Path) -> isr.AmpCalibration:
    """A detector's ptc calibration: gains and read noise by segment.

    Raises:
        ValueError: not a ptc file, or one lacking a segment (named) or holding an impossible value.
    """
    try:
        with fits.open(path, memmap=False) as hdus:
            calib_type = hdus[0].header.get("CALIBTYP")
            rows = hdus[PTC_TABLE].data
            names = [str(name).strip() for name in rows["amplifier"]]
            gains = [float(gain) for gain in rows["gain"]]
            noise = [float(value) for value in rows["read_noise"]]
    except (OSError, KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(f"{path}: not a readable ptc calibration ({type(error).__name__}: {error})") from error
    if calib_type != "ptc":
        raise ValueError(f"{path}: CALIBTYP is {calib_type!r}, not ptc")
    missing = [name for name in amplifiers.SEGMENTS if name not in names]
    if missing:
        raise ValueError(f"{path}: the ptc has no row for {', '.join(missing)}")
    try:
        return isr.AmpCalibration(dict(zip(names, gains, strict=True)), dict(zip(names, noise, strict=True)))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def template_folder(root: Path, instrument: str, filter_name: str) -> Path:
    """Where one filter's template tiles live.

    Raises:
        UnsafePath: an instrument or filter that is not a plain name, or a folder outside `<root>/templates`.
    """
    templates = root / "templates"
    return contained(templates, templates / check_name("instrument", instrument) / check_name("filter", filter_name))


def write_template(root: Path, instrument: str, filter_name: str, name: str, image: np.ndarray,
                   variance: np.ndarray, wcs: WCS, psf_sigma: float) -> None:
    """Write a template tile and add it to its filter's index.

    Raises:
        UnsafePath: a filter or tile name that is not a plain name, or a path outside `<root>/templates`.
    """
    folder = template_folder(root, instrument, filter_name)
    tile = contained(root / "templates", folder / f"{check_name('template name', name)}.fits")
    folder.mkdir(parents=True, exist_ok=True)
    header = wcs.to_header()
    header["PSFSIGMA"] = (psf_sigma, "pixels")
    hdus = fits.HDUList([fits.PrimaryHDU(image.astype(np.float32), header=header),
                         fits.ImageHDU(variance.astype(np.float32), name="VARIANCE")])
    hdus.writeto(tile, overwrite=True)
    height, width = image.shape
    ra, dec = wcs.all_pix2world([0, width, width, 0], [0, 0, height, height], 0)
    index_path = contained(root / "templates", folder / "index.json")
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    index[name] = {"ra": [float(min(ra)), float(max(ra))], "dec": [float(min(dec)), float(max(dec))]}
    index_path.write_text(json.dumps(index, indent=1))


def find_templates(root: Path, instrument: str, filter_name: str, ra: np.ndarray, dec: np.ndarray) -> list[Path]:
    """Template tiles whose sky box overlaps the box of the given corners (a detector's footprint).

    Raises:
        UnsafePath: an instrument or filter that is not a plain name (see `template_folder`).
    """
    index_path = template_folder(root, instrument, filter_name) / "index.json"
    if not index_path.exists():
        return []
    low_ra, high_ra, low_dec, high_dec = ra.min(), ra.max(), dec.min(), dec.max()
    return [index_path.parent / f"{name}.fits" for name, box in json.loads(index_path.read_text()).items()
            if plain_name(name) and box["ra"][0] <= high_ra and low_ra <= box["ra"][1] and box["dec"][0] <= high_dec
            and low_dec <= box["dec"][1]]


def read_template(path: Path) -> Template:
    """A template tile."""
    with fits.open(path, memmap=False) as hdus:
        return Template(np.asarray(hdus[0].data, dtype=np.float32), np.asarray(hdus["VARIANCE"].data, dtype=np.float32),
                        WCS(hdus[0].header), float(hdus[0].header["PSFSIGMA"]))
