"""Association of a detector's DIA sources with the DIA objects the APDB already holds, and the objects'
new summaries: Rubin's associateApdb and diaCalculation, as pure functions over catalogues.

Everything here is deterministic in its inputs, so a detector processed again after a crash or a
re-dispatch gives the same ids, the same matches and the same summaries:
- ids are packed from the visit, the detector and the source's rank (no counter, no clock);
- a new DIA object takes the id of the DIA source that founds it, as Rubin's AP does;
- the history is the APDB's rows of *earlier* visits only (`History.before`): what this visit may
  already have stored on a first attempt is left out, so a second attempt sees what the first saw.
Column names are those of the APDB schema that dax_apdb ships (Rubin's SDM), so any APDB tool and
the alert packets read them as they are.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

SOURCE_BITS = 13
DETECTOR_BITS = 8
MAX_SOURCES_PER_DETECTOR = 1 << SOURCE_BITS
"""The ids leave room for this many DIA sources per detector and visit (8192)."""
BANDS = "ugrizy"
ARCSEC = np.pi / (180 * 3600)


def dia_source_id(visit: int, detector: int, index: np.ndarray) -> np.ndarray:
    """DIA source ids: the visit, the detector (8 bits) and the source's rank (13 bits) in one 63-bit integer."""
    if not 0 <= detector < 1 << DETECTOR_BITS or not 0 <= visit < 1 << (63 - SOURCE_BITS - DETECTOR_BITS):
        raise ValueError(f"visit {visit} detector {detector} do not fit a DIA source id")
    if len(index) and int(index.max()) >= MAX_SOURCES_PER_DETECTOR:
        raise ValueError(f"more than {MAX_SOURCES_PER_DETECTOR} DIA sources on one detector")
    return (np.int64(visit) << (SOURCE_BITS + DETECTOR_BITS)) | np.int64(detector << SOURCE_BITS) | index.astype(
        np.int64)


def visit_of(dia_source_ids: np.ndarray) -> np.ndarray:
    """The visit a DIA source id (or the id of the object it founded) was made in."""
    return np.asarray(dia_source_ids, dtype=np.int64) >> (SOURCE_BITS + DETECTOR_BITS)


def forced_source_id(dia_object_id: int, visit: int, detector: int) -> int:
    """A DIA forced source id from its key in the APDB (object, visit, detector): stable across attempts."""
    digest = hashlib.blake2b(f"{dia_object_id}/{visit}/{detector}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def band_of(physical_filter: str) -> str:
    """The band of a physical filter (LSSTCam's `r_57` is band `r`)."""
    return physical_filter.split("_")[0][:1]


@dataclass(frozen=True)
class History:
    """What the preload read from the APDB for one detector's padded region."""

    objects: pd.DataFrame
    """DiaObject, last versions."""
    sources: pd.DataFrame
    """DiaSource of those objects, within the APDB's history window."""
    forced: pd.DataFrame
    """DiaForcedSource of those objects, within its window."""

    def before(self, visit: int) -> History:
        """Only what earlier visits stored: a second attempt at `visit` then sees what the first saw."""
        objects = self.objects[visit_of(self.objects["diaObjectId"].to_numpy()) != visit] \
            if len(self.objects) else self.objects
        sources = self.sources[self.sources["visit"] != visit] if len(self.sources) else self.sources
        forced = self.forced[self.forced["visit"] != visit] if len(self.forced) else self.forced
        return History(objects, sources, forced)


def unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Unit vectors of sky positions [deg]: distances and means without the RA wrap."""
    ra, dec = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def lonlat(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) [deg] of vectors (need not be unit length)."""
    ra = np.degrees(np.arctan2(vectors[:, 1], vectors[:, 0])) % 360.0
    dec = np.degrees(np.arctan2(vectors[:, 2], np.hypot(vectors[:, 0], vectors[:, 1])))
    return ra, dec


def object_positions(history: History) -> pd.DataFrame:
    """Each known object's position for matching: the mean of its earlier sources (its stored position if
    none is in the window), so it does not depend on what this visit may already have stored."""
    objects = history.objects
    if not len(objects):
        return pd.DataFrame({"diaObjectId": np.array([], np.int64), "ra": [], "dec": []})
    positions = pd.DataFrame({"diaObjectId": objects["diaObjectId"].to_numpy(np.int64),
                              "ra": objects["ra"].to_numpy(float), "dec": objects["dec"].to_numpy(float)})
    sources = history.sources
    if len(sources):
        vectors = pd.DataFrame(unit_vectors(sources["ra"].to_numpy(float), sources["dec"].to_numpy(float)),
                               columns=["vx", "vy", "vz"]).assign(diaObjectId=sources["diaObjectId"].to_numpy())
        means = vectors.groupby("diaObjectId")[["vx", "vy", "vz"]].mean()
        known = positions["diaObjectId"].isin(means.index).to_numpy()
        ra, dec = lonlat(means.loc[positions["diaObjectId"][known]].to_numpy())
        positions.loc[known, "ra"], positions.loc[known, "dec"] = ra, dec
    return positions


def match(ra: np.ndarray, dec: np.ndarray, objects: pd.DataFrame, radius_arcsec: float) -> np.ndarray:
    """For each source, the id of the nearest object within the radius, one source per object
    (closest pairs first, ties by rank), or -1."""
    matched = np.full(len(ra), -1, dtype=np.int64)
    if not len(ra) or not len(objects):
        return matched
    chord = 2 * np.sin(radius_arcsec * ARCSEC / 2)
    tree = cKDTree(unit_vectors(objects["ra"].to_numpy(float), objects["dec"].to_numpy(float)))
    points = unit_vectors(ra, dec)
    candidates = [(float(np.linalg.norm(tree.data[j] - points[i])), i, j)
                  for i, near in enumerate(tree.query_ball_point(points, chord)) for j in near]
    ids = objects["diaObjectId"].to_numpy(np.int64)
    taken: set[int] = set()
    for _distance, source, neighbour in sorted(candidates):
        if matched[source] < 0 and neighbour not in taken:
            matched[source] = ids[neighbour]
            taken.add(neighbour)
    return matched


def associate(sources: pd.DataFrame, history: History, radius_arcsec: float) -> tuple[pd.DataFrame, int]:
    """The sources with their `diaObjectId`: the nearest earlier object within the radius, or a new object
    with the source's own id. Also returns how many matched an earlier object."""
    matched = match(sources["ra"].to_numpy(float), sources["dec"].to_numpy(float), object_positions(history),
                    radius_arcsec)
    found = matched >= 0
    sources = sources.assign(diaObjectId=np.where(found, matched, sources["diaSourceId"].to_numpy(np.int64)))
    return sources, int(found.sum())


def _band_columns(band: str, fluxes: pd.Series, errors: pd.Series, times: pd.Series) -> dict[str, float]:
    n = int(fluxes.notna().sum())
    if n == 0:
        return {f"{band}_psfFluxNdata": 0}
    values, errs = fluxes.dropna().to_numpy(float), errors.dropna().to_numpy(float)
    sigma = float(np.std(values, ddof=1)) if n > 1 else float("nan")
    order = np.argsort(times[fluxes.notna()].to_numpy(float))
    slopes = np.diff(values[order]) / np.maximum(np.diff(times[fluxes.notna()].to_numpy(float)[order]), 1e-6)
    return {f"{band}_psfFluxMean": float(values.mean()),
            f"{band}_psfFluxMeanErr": sigma / np.sqrt(n) if n > 1 else float(errs.mean()) if len(errs) else np.nan,
            f"{band}_psfFluxSigma": sigma, f"{band}_psfFluxNdata": n,
            f"{band}_psfFluxMin": float(values.min()), f"{band}_psfFluxMax": float(values.max()),
            f"{band}_psfFluxMaxSlope": float(np.abs(slopes).max()) if len(slopes) else float("nan"),
            f"{band}_psfFluxErrMean": float(errs.mean()) if len(errs) else float("nan")}


def _forced_columns(band: str, forced: pd.DataFrame) -> dict[str, float]:
    columns: dict[str, float] = {}
    for kind, column in (("fp", "psfFlux"), ("science", "scienceFlux")):
        values = forced[column].dropna().to_numpy(float) if len(forced) else np.array([])
        if len(values):
            columns[f"{band}_{kind}FluxMean"] = float(values.mean())
            columns[f"{band}_{kind}FluxMeanErr"] = float(values.std(ddof=1) / np.sqrt(len(values))) \
                if len(values) > 1 else float(forced[f"{column}Err"].dropna().mean())
    return columns


def combine(earlier: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """Earlier rows and this visit's, in one frame (an empty one is left out: its columns' types would widen the
    other's, and a 63-bit id must never become a float)."""
    parts = [frame for frame in (earlier, now) if len(frame)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] if parts else now


def summarise(object_ids: np.ndarray, sources: pd.DataFrame, forced: pd.DataFrame, visit_mjd: float) -> pd.DataFrame:
    """The new DiaObject version of each object: position, per-band flux statistics, source count and
    times, from all its sources (earlier ones and this visit's) and forced sources, valid from this visit."""
    rows = []
    by_object = dict(tuple(sources.groupby("diaObjectId"))) if len(sources) else {}
    forced_by_object = dict(tuple(forced.groupby("diaObjectId"))) if len(forced) else {}
    for object_id in object_ids:
        own = by_object[object_id]
        own_forced = forced_by_object.get(object_id, forced.iloc[0:0])
        (ra,), (dec,) = lonlat(unit_vectors(own["ra"].to_numpy(float), own["dec"].to_numpy(float)).mean(axis=0)[None])
        row: dict[str, float | int] = {
            "diaObjectId": int(object_id), "validityStartMjdTai": visit_mjd, "ra": float(ra), "dec": float(dec),
            "nDiaSources": len(own), "firstDiaSourceMjdTai": float(own["midpointMjdTai"].min()),
            "lastDiaSourceMjdTai": float(own["midpointMjdTai"].max())}
        for band in BANDS:
            in_band = own[own["band"] == band]
            row |= _band_columns(band, in_band["psfFlux"], in_band["psfFluxErr"], in_band["midpointMjdTai"])
            row |= _forced_columns(band, own_forced[own_forced["band"] == band] if len(own_forced) else own_forced)
        rows.append(row)
    frame = pd.DataFrame(rows)
    for band in BANDS:
        column = f"{band}_psfFluxNdata"
        frame[column] = frame[column].fillna(0).astype(np.int64) if len(frame) else pd.Series(dtype=np.int64)
    return frame
