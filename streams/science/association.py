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


def _weighted(frame: pd.DataFrame, keys: list[str], flux: str, error: str) -> pd.DataFrame:
    """Per group: the inverse-variance weighted mean of `flux` and its error, as the SDM defines
    <band>_psfFluxMean and _psfFluxMeanErr (values without a usable error are left out)."""
    usable = frame[np.isfinite(frame[flux]) & np.isfinite(frame[error]) & (frame[error] > 0)]
    weights = 1.0 / usable[error].to_numpy(float) ** 2
    sums = pd.DataFrame({"w": weights, "wf": weights * usable[flux].to_numpy(float)},
                        index=pd.MultiIndex.from_frame(usable[keys])).groupby(level=keys).sum()
    return pd.DataFrame({"mean": sums["wf"] / sums["w"], "err": np.sqrt(1.0 / sums["w"])})


def _wide(stats: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """(object, band) rows -> one row per object with `<band>_<name>` columns."""
    wide = stats[list(names)].unstack("band")
    wide.columns = [f"{band}_{names[stat]}" for stat, band in wide.columns]
    return wide


def _source_statistics(sources: pd.DataFrame) -> pd.DataFrame:
    """Per object and band: the DIA sources' PSF flux statistics, SDM columns."""
    keys = ["diaObjectId", "band"]
    measured = sources[[*keys, "psfFlux", "psfFluxErr", "midpointMjdTai"]].dropna(subset=["psfFlux"])
    groups = measured.groupby(keys)
    stats = pd.DataFrame({"sigma": groups["psfFlux"].std(ddof=1), "ndata": groups["psfFlux"].count(),
                          "min": groups["psfFlux"].min(), "max": groups["psfFlux"].max(),
                          "errmean": groups["psfFluxErr"].mean()})
    ordered = measured.sort_values([*keys, "midpointMjdTai"])
    same = (ordered[keys] == ordered[keys].shift()).all(axis=1)
    slopes = (ordered["psfFlux"].diff() / ordered["midpointMjdTai"].diff().clip(lower=1e-6)).abs().where(same)
    stats["slope"] = slopes.groupby([ordered[k] for k in keys]).max()
    stats = stats.join(_weighted(measured, keys, "psfFlux", "psfFluxErr"))
    return _wide(stats, {"mean": "psfFluxMean", "err": "psfFluxMeanErr", "sigma": "psfFluxSigma",
                         "ndata": "psfFluxNdata", "min": "psfFluxMin", "max": "psfFluxMax",
                         "slope": "psfFluxMaxSlope", "errmean": "psfFluxErrMean"})


def _forced_statistics(forced: pd.DataFrame) -> pd.DataFrame:
    """Per object and band: weighted means of the forced fluxes on the difference and the science image."""
    keys = ["diaObjectId", "band"]
    difference = _weighted(forced, keys, "psfFlux", "psfFluxErr")
    science = _weighted(forced, keys, "scienceFlux", "scienceFluxErr")
    stats = difference.join(science.add_suffix("_science"), how="outer")
    return _wide(stats, {"mean": "fpFluxMean", "err": "fpFluxMeanErr", "mean_science": "scienceFluxMean",
                         "err_science": "scienceFluxMeanErr"})


def combine(earlier: pd.DataFrame, now: pd.DataFrame) -> pd.DataFrame:
    """Earlier rows and this visit's, in one frame (an empty one is left out: its columns' types would widen the
    other's, and a 63-bit id must never become a float)."""
    parts = [frame for frame in (earlier, now) if len(frame)]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0] if parts else now


def summarise(object_ids: np.ndarray, sources: pd.DataFrame, forced: pd.DataFrame, visit_mjd: float) -> pd.DataFrame:
    """The new DiaObject version of each object: position, per-band flux statistics, source count and
    times, from all its sources (earlier ones and this visit's) and forced sources, valid from this visit."""
    ids = np.asarray(object_ids, dtype=np.int64)
    own = sources[sources["diaObjectId"].isin(ids)]
    groups = own.groupby("diaObjectId")
    vectors = pd.DataFrame(unit_vectors(own["ra"].to_numpy(float), own["dec"].to_numpy(float)),
                           columns=["vx", "vy", "vz"], index=own["diaObjectId"].to_numpy())
    ra, dec = lonlat(vectors.groupby(level=0).mean().reindex(ids).to_numpy())
    frame = pd.DataFrame({"diaObjectId": ids, "validityStartMjdTai": visit_mjd, "ra": ra, "dec": dec,
                          "nDiaSources": groups.size().reindex(ids).to_numpy(np.int64),
                          "firstDiaSourceMjdTai": groups["midpointMjdTai"].min().reindex(ids).to_numpy(float),
                          "lastDiaSourceMjdTai": groups["midpointMjdTai"].max().reindex(ids).to_numpy(float)})
    statistics = [_source_statistics(own)]
    own_forced = forced[forced["diaObjectId"].isin(ids)] if len(forced) else forced
    if len(own_forced):
        statistics.append(_forced_statistics(own_forced))
    frame = frame.join(pd.concat(statistics, axis=1).reindex(ids), on="diaObjectId") if len(own) else frame
    for band in BANDS:
        column = f"{band}_psfFluxNdata"
        values = frame[column] if column in frame else pd.Series(0, index=frame.index)
        frame[column] = values.fillna(0).astype(np.int64)
    return frame.reset_index(drop=True)
