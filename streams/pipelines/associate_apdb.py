"""The end of Alert Production on one detector (Rubin's associateApdb): DIA sources associated with the
APDB's DIA objects, forced photometry at every object on the detector, the catalogues stored once, and
one official alert packet per DIA source written next to the other outputs (`alerts.avro`).

The packets are not sent from here, as Rubin's pipeline sends them: the alert publisher sends them
when the detector's one result is committed (`streams.alert_publisher`), in one Kafka transaction
with its input offset, so a detector processed twice is alerted once. What this step writes is the
same on every attempt (see `streams.apdb` and `streams.science.association`).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import astropy.time
import numpy as np
import pandas as pd
from astropy.wcs import WCS

from streams import alert_packets
from streams.apdb import ApdbAccess, Sky
from streams.config import Settings
from streams.records import DetectorProgress
from streams.science import association, cutouts, isr
from streams.science.alert_production import Calibrated, Difference, Timer
from streams.science.forced import Forced, psf_photometry
from streams.science.geometry import CcdShape, detector_wcs, footprint
from topology.keys import detector_key

log = logging.getLogger(__name__)
HISTORIES_KEPT = 64
"""Preloaded histories a process keeps for detectors whose run has not come yet."""
SECONDS_PER_DAY = 86400.0


def detector_sky(progress: DetectorProgress, shape: CcdShape) -> Sky:
    """The detector's padded region as predicted from the pointing: the same on every attempt."""
    wcs = detector_wcs(progress.instrument, progress.detector, progress.position[0], progress.position[1],
                       progress.camera_angle, shape)
    ra, dec = footprint(wcs, shape)
    vectors = association.unit_vectors(ra, dec)
    centre = vectors.mean(axis=0)
    centre /= np.linalg.norm(centre)
    (centre_ra,), (centre_dec,) = association.lonlat(centre[None])
    radius = np.degrees(np.arccos(np.clip((vectors @ centre).min(), -1.0, 1.0)))
    return Sky(float(centre_ra), float(centre_dec), float(radius))


def visit_midpoint(raws: list[isr.Raw]) -> astropy.time.Time:
    """The visit's mid-exposure time (TAI), from the snaps' start (DATE-OBS, UTC) and exposure times."""
    mids = [astropy.time.Time(str(raw.header["DATE-OBS"]), scale="utc").tai.mjd
            + raw.exposure_time / 2 / SECONDS_PER_DAY for raw in raws]
    return astropy.time.Time(float(np.mean(mids)), format="mjd", scale="tai")


@dataclass(frozen=True)
class Alerts:
    """What the step produced for one detector."""

    uri: str
    metrics: dict[str, float]


class AssociateApdb:
    """Preload and association against the APDB, and alert packaging, for one pipeline process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.apdb = ApdbAccess(settings.apdb_config, settings.apdb_retry_seconds)
        self._histories: OrderedDict[str, association.History] = OrderedDict()

    def preload(self, progress: DetectorProgress, shape: CcdShape) -> float:
        """Read the detector's DIA objects, sources and forced sources now, ahead of the raws (loadDiaCatalogs);
        return the time it took."""
        started = time.perf_counter()
        visit_time = astropy.time.Time(progress.next_visit_time, format="unix_tai")
        key = detector_key(progress.instrument, progress.group_id, progress.detector)
        self._histories[key] = self.apdb.history(detector_sky(progress, shape), visit_time)
        while len(self._histories) > HISTORIES_KEPT:
            self._histories.popitem(last=False)
        return time.perf_counter() - started

    def _history(self, progress: DetectorProgress, shape: CcdShape) -> association.History:
        key = detector_key(progress.instrument, progress.group_id, progress.detector)
        if key not in self._histories:
            self.preload(progress, shape)
        return self._histories.pop(key)

    def run(self, progress: DetectorProgress, raws: list[isr.Raw], calexp: Calibrated, diff: Difference,
            folder: Path, timer: Timer) -> Alerts:
        """Associate, measure, store once and package this detector's DIA sources."""
        shape = CcdShape(*calexp.image.shape)
        visit, detector = progress.snaps[0].exposure_id, progress.detector
        midpoint = visit_midpoint(raws)
        mjd = float(midpoint.mjd)
        band = association.band_of(str(raws[0].header.get("FILTER", progress.filters.split(",")[0])))
        with timer.step("associateApdb"):
            history = self._history(progress, shape).before(visit)
            detected = diff.sources.to_pandas()
            dropped = max(len(detected) - self.settings.max_dia_sources, 0)
            if dropped:
                keep = np.sort(np.argsort(-np.abs(detected["snr"].to_numpy()), kind="stable")
                               [:self.settings.max_dia_sources])
                detected = detected.iloc[keep].reset_index(drop=True)
                log.warning("detector %d of %s: %d DIA sources, more than the %d kept (a trail or a bad subtraction?)"
                            ": the %d with the lowest |S/N| are dropped", detector, progress.group_id,
                            len(detected) + dropped, self.settings.max_dia_sources, dropped)
            processed = float(astropy.time.Time.now().tai.mjd)
            sources = self._sources(detected, visit, detector, mjd, band, processed, raws, calexp, diff)
            sources, matched = association.associate(sources, history, self.settings.association_radius)
            forced = self._forced(sources, history, calexp, diff, visit, detector, mjd, band, processed)
            objects = association.summarise(sources["diaObjectId"].unique(),
                                            association.combine(history.sources, sources),
                                            association.combine(history.forced, forced), mjd)
            stored = self.apdb.store_once(visit, detector, detector_sky(progress, shape), midpoint, objects, sources,
                                          forced)
        with timer.step("packageAlerts"):
            uri, padded = self._package(stored.sources, objects, history, calexp, diff, folder)
        return Alerts(uri, {
            "diaSourcesDropped": float(dropped), "diaObjectsMatched": float(matched),
            "diaObjectsCreated": float(len(sources) - matched), "diaForcedSourceCount": float(len(stored.forced)),
            "alertCount": float(len(stored.sources)), "cutoutsPaddedCount": float(padded),
            "apdbAlreadyStored": float(stored.already)})

    def _sources(self, detected: pd.DataFrame, visit: int, detector: int, mjd: float, band: str, processed: float,
                 raws: list[isr.Raw], calexp: Calibrated, diff: Difference) -> pd.DataFrame:
        x, y = detected["x"].to_numpy(float), detected["y"].to_numpy(float)
        science = psf_photometry(calexp.image, calexp.variance, calexp.psf_sigma, x, y)
        template = psf_photometry(diff.template, diff.variance, calexp.psf_sigma, x, y)
        half = int(np.ceil(4 * calexp.psf_sigma))
        height, width = calexp.image.shape
        reach = cutouts.SIZE // 2  # a source this near the edge gets a padded cutout: flagged
        near_edge = (x < reach) | (y < reach) | (x > width - 1 - reach) | (y > height - 1 - reach)
        return pd.DataFrame({
            "diaSourceId": association.dia_source_id(visit, detector, np.arange(len(detected))),
            "visit": visit, "detector": detector, "midpointMjdTai": mjd,
            "exposureTime": float(sum(raw.exposure_time for raw in raws)),
            "ra": detected["ra"].to_numpy(float), "dec": detected["dec"].to_numpy(float), "x": x, "y": y,
            "psfFlux": detected["psf_flux"].to_numpy(float), "psfFluxErr": detected["psf_flux_err"].to_numpy(float),
            "snr": detected["snr"].to_numpy(float), "isNegative": detected["is_negative"].to_numpy(bool),
            "psfNdata": (2 * half + 1) ** 2, "trailNdata": 0, "dipoleNdata": 0, "bboxSize": 2 * half + 1,
            "scienceFlux": science.flux, "scienceFluxErr": science.flux_err,
            "templateFlux": template.flux, "templateFluxErr": template.flux_err,
            "pixelFlags_edge": science.edge | near_edge, "band": band, "timeProcessedMjdTai": processed})

    def _forced(self, sources: pd.DataFrame, history: association.History, calexp: Calibrated, diff: Difference,
                visit: int, detector: int, mjd: float, band: str, processed: float) -> pd.DataFrame:
        """Forced photometry on the difference and the science image at every DIA object on the detector: the
        earlier ones (at their positions from earlier sources) and those this visit founded."""
        known = association.object_positions(history)
        new = sources[sources["diaObjectId"] == sources["diaSourceId"]]
        ids = np.concatenate([known["diaObjectId"].to_numpy(np.int64), new["diaObjectId"].to_numpy(np.int64)])
        ra = np.concatenate([known["ra"].to_numpy(float), new["ra"].to_numpy(float)])
        dec = np.concatenate([known["dec"].to_numpy(float), new["dec"].to_numpy(float)])
        x, y = _pixels(calexp.wcs, ra, dec)
        height, width = calexp.image.shape
        on = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        ids, ra, dec, x, y = ids[on], ra[on], dec[on], x[on], y[on]
        difference: Forced = psf_photometry(diff.image, diff.variance, calexp.psf_sigma, x, y)
        science = psf_photometry(calexp.image, calexp.variance, calexp.psf_sigma, x, y)
        return pd.DataFrame({
            "diaForcedSourceId": np.array([association.forced_source_id(int(i), visit, detector) for i in ids],
                                          dtype=np.int64),
            "diaObjectId": ids, "ra": ra, "dec": dec, "visit": visit, "detector": detector, "midpointMjdTai": mjd,
            "psfFlux": difference.flux, "psfFluxErr": difference.flux_err, "scienceFlux": science.flux,
            "scienceFluxErr": science.flux_err, "band": band, "timeProcessedMjdTai": processed})

    def _package(self, sources: pd.DataFrame, objects: pd.DataFrame, history: association.History,
                 calexp: Calibrated, diff: Difference, folder: Path) -> tuple[str, int]:
        """One packet per DIA source, with its object, its history and three cutouts; written atomically."""
        objects_by_id = {int(row["diaObjectId"]): row for row in objects.to_dict("records")}
        earlier = dict(tuple(history.sources.groupby("diaObjectId"))) if len(history.sources) else {}
        earlier_forced = dict(tuple(history.forced.groupby("diaObjectId"))) if len(history.forced) else {}
        padded = 0
        packets = []
        for source in sources.to_dict("records"):
            object_id = int(source["diaObjectId"])
            stamps = [cutouts.cutout(image, calexp.wcs, float(source["x"]), float(source["y"]))
                      for image in (diff.image, calexp.image, diff.template)]
            padded += any(stamp.padded for stamp in stamps)
            prv = earlier.get(object_id)
            prv_forced = earlier_forced.get(object_id)
            packets.append(alert_packets.packet(
                source, objects_by_id.get(object_id),
                prv.sort_values("midpointMjdTai").to_dict("records") if prv is not None else [],
                prv_forced.sort_values("midpointMjdTai").to_dict("records") if prv_forced is not None else [],
                (stamps[0].fits, stamps[1].fits, stamps[2].fits)))
        path = folder / "alerts.avro"
        alert_packets.write_packets(path, packets)
        return path.as_uri(), padded


def _pixels(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(ra):
        return np.array([]), np.array([])
    x, y = wcs.all_world2pix(ra, dec, 0)
    return np.asarray(x, float), np.asarray(y, float)
