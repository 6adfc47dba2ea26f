"""The end of Alert Production on one detector (Rubin's associateApdb): DIA sources associated with the
APDB's DIA objects, forced photometry at every object on the detector, the catalogues stored once, and
one official alert packet per DIA source written next to the other outputs (`alerts.avro`).

The packets are not sent from here, as Rubin's pipeline sends them: the alert publisher sends those
of the detector's first successful outcome (`streams.processors.alerts`), in one Kafka transaction
with its input offset, so a detector processed twice is alerted once. What this step writes is the
same on every attempt (see `streams.data.apdb` and `streams.science.association`).
"""

from __future__ import annotations

import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import astropy.time
import numpy as np
import pandas as pd
from astropy.wcs import WCS

from streams.config import Settings
from streams.data.apdb import ApdbAccess, Sky
from streams.observability import logs
from streams.science import association, cutouts, isr
from streams.science.alert_production import Calibrated, Difference, Timer
from streams.science.forced import Forced, psf_photometry
from streams.science.geometry import CcdShape, detector_wcs, footprint
from streams.serde import alert_packets
from streams.serde.records import DetectorProgress
from topology.keys import detector_key

log = logs.events(__name__)
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
class Exposure:
    """What association and packaging need of one detector's processed visit: the images (in one pixel grid,
    with its WCS) and the detections in the difference image."""

    visit: int
    """The visit's id: its first exposure id."""
    detector: int
    midpoint: astropy.time.Time
    band: str
    exposure_time: float
    """[s], summed over the snaps."""
    wcs: WCS
    psf_sigma: float
    """[pixel]"""
    science: np.ndarray
    science_variance: np.ndarray
    difference: np.ndarray
    difference_variance: np.ndarray
    template: np.ndarray
    """The template as subtracted: resampled and PSF-matched."""
    detections: pd.DataFrame
    """x, y [pixel], ra, dec [deg], psf_flux, psf_flux_err [electrons], snr, is_negative: one per detection."""
    njy_per_electron: float
    """The photometric calibration: the APDB and the alerts carry fluxes in nJy."""

    @classmethod
    def from_ap(cls, progress: DetectorProgress, raws: list[isr.Raw], calexp: Calibrated,
                diff: Difference) -> Exposure:
        """The outputs of Alert Production's difference imaging."""
        return cls(progress.snaps[0].exposure_id, progress.detector, visit_midpoint(raws), raws[0].band,
                   float(sum(raw.exposure_time for raw in raws)), calexp.wcs, calexp.psf_sigma, calexp.image,
                   calexp.variance, diff.image, diff.variance, diff.template, diff.sources.to_pandas(),
                   calexp.photo_calib.njy_per_electron)


@dataclass(frozen=True)
class Alerts:
    """What the step produced for one detector."""

    uri: str
    metrics: dict[str, float]


@dataclass(frozen=True)
class Preloaded:
    """A detector's history, and when it was read."""

    history: association.History
    read_at: float
    """[monotonic s]"""


class AssociateApdb:
    """Preload and association against the APDB, and alert packaging, for one pipeline process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.apdb = ApdbAccess(settings.apdb_config, settings.apdb_retry_seconds)
        self._histories: OrderedDict[str, Preloaded] = OrderedDict()
        self._stored_at: dict[int, float] = {}
        """Detector -> when this process last stored one of its visits [monotonic s]."""

    def preload(self, progress: DetectorProgress, shape: CcdShape) -> float:
        """Read the detector's DIA objects, sources and forced sources now, ahead of the raws (loadDiaCatalogs);
        return the time it took."""
        started = time.perf_counter()
        visit_time = astropy.time.Time(progress.next_visit_time, format="unix_tai")
        key = detector_key(progress.instrument, progress.group_id, progress.detector)
        self._histories[key] = Preloaded(self.apdb.history(detector_sky(progress, shape), visit_time),
                                         time.monotonic())
        while len(self._histories) > HISTORIES_KEPT:
            self._histories.popitem(last=False)
        return time.perf_counter() - started

    def _history(self, progress: DetectorProgress, shape: CcdShape) -> association.History:
        """The preloaded history, read again if this process stored a visit of the detector since: a field
        observed again within a minute would otherwise miss its previous visit's sources."""
        key = detector_key(progress.instrument, progress.group_id, progress.detector)
        preloaded = self._histories.pop(key, None)
        if preloaded is None or preloaded.read_at < self._stored_at.get(progress.detector, 0.0):
            self.preload(progress, shape)
            preloaded = self._histories.pop(key)
        return preloaded.history

    def run(self, progress: DetectorProgress, exposure: Exposure, folder: Path, timer: Timer) -> Alerts:
        """Associate, measure, store once and package this detector's DIA sources."""
        shape = CcdShape(*exposure.science.shape)
        visit, detector = exposure.visit, exposure.detector
        with timer.step("associateApdb"):
            history = self._history(progress, shape).before(visit)
            detected = exposure.detections
            dropped = max(len(detected) - self.settings.max_dia_sources, 0)
            if dropped:
                keep = np.sort(np.argsort(-np.abs(detected["snr"].to_numpy()), kind="stable")
                               [:self.settings.max_dia_sources])
                detected = detected.iloc[keep].reset_index(drop=True)
                log.warning("too many DIA sources (a trail or a bad subtraction?): those of lowest |S/N| dropped",
                            detector=detector, group=progress.group_id, found=len(detected) + dropped,
                            kept=self.settings.max_dia_sources, dropped=dropped)
            processed = float(astropy.time.Time.now().tai.mjd)
            sources = self._sources(exposure, detected, processed)
            sources, matched = association.associate(sources, history, self.settings.association_radius)
            forced = self._forced(exposure, sources, history, processed)
            mjd = float(exposure.midpoint.mjd)
            objects = association.summarise(sources["diaObjectId"].unique(),
                                            association.combine(history.sources, sources),
                                            association.combine(history.forced, forced), mjd)
            stored = self.apdb.store_once(visit, detector, detector_sky(progress, shape), exposure.midpoint, objects,
                                          sources, forced)
            self._stored_at[detector] = time.monotonic()
        with timer.step("packageAlerts"):
            uri, padded = self._package(exposure, stored.sources, objects, history, folder)
        return Alerts(uri, {
            "diaSourcesDropped": float(dropped), "diaObjectsMatched": float(matched),
            "diaObjectsCreated": float(len(sources) - matched), "diaForcedSourceCount": float(len(stored.forced)),
            "alertCount": float(len(stored.sources)), "cutoutsPaddedCount": float(padded),
            "apdbAlreadyStored": float(stored.already)})

    @staticmethod
    def _sources(exposure: Exposure, detected: pd.DataFrame, processed: float) -> pd.DataFrame:
        """The DiaSource rows: detections with ids, times, forced fluxes on the science and template images [nJy]."""
        x, y = detected["x"].to_numpy(float), detected["y"].to_numpy(float)
        njy = exposure.njy_per_electron
        science = psf_photometry(exposure.science, exposure.science_variance, exposure.psf_sigma, x, y)
        template = psf_photometry(exposure.template, exposure.difference_variance, exposure.psf_sigma, x, y)
        half = int(np.ceil(4 * exposure.psf_sigma))
        height, width = exposure.science.shape
        reach = cutouts.SIZE // 2  # a source this near the edge gets a padded cutout: flagged
        near_edge = (x < reach) | (y < reach) | (x > width - 1 - reach) | (y > height - 1 - reach)
        return pd.DataFrame({
            "diaSourceId": association.dia_source_id(exposure.visit, exposure.detector, np.arange(len(detected))),
            "visit": exposure.visit, "detector": exposure.detector, "midpointMjdTai": float(exposure.midpoint.mjd),
            "exposureTime": exposure.exposure_time,
            "ra": detected["ra"].to_numpy(float), "dec": detected["dec"].to_numpy(float), "x": x, "y": y,
            "psfFlux": njy * detected["psf_flux"].to_numpy(float),
            "psfFluxErr": njy * detected["psf_flux_err"].to_numpy(float),
            "snr": detected["snr"].to_numpy(float), "isNegative": detected["is_negative"].to_numpy(bool),
            "psfNdata": (2 * half + 1) ** 2, "trailNdata": 0, "dipoleNdata": 0, "bboxSize": 2 * half + 1,
            "scienceFlux": njy * science.flux, "scienceFluxErr": njy * science.flux_err,
            "templateFlux": njy * template.flux, "templateFluxErr": njy * template.flux_err,
            "pixelFlags_edge": science.edge | near_edge, "band": exposure.band, "timeProcessedMjdTai": processed})

    @staticmethod
    def _forced(exposure: Exposure, sources: pd.DataFrame, history: association.History,
                processed: float) -> pd.DataFrame:
        """Forced photometry [nJy] on the difference and the science image at every DIA object on the detector:
        the earlier ones (at their positions from earlier sources) and those this visit founded."""
        known = association.object_positions(history)
        new = sources[sources["diaObjectId"] == sources["diaSourceId"]]
        ids = np.concatenate([known["diaObjectId"].to_numpy(np.int64), new["diaObjectId"].to_numpy(np.int64)])
        ra = np.concatenate([known["ra"].to_numpy(float), new["ra"].to_numpy(float)])
        dec = np.concatenate([known["dec"].to_numpy(float), new["dec"].to_numpy(float)])
        x, y = _pixels(exposure.wcs, ra, dec)
        height, width = exposure.science.shape
        on = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
        ids, ra, dec, x, y = ids[on], ra[on], dec[on], x[on], y[on]
        difference: Forced = psf_photometry(exposure.difference, exposure.difference_variance, exposure.psf_sigma,
                                            x, y)
        science = psf_photometry(exposure.science, exposure.science_variance, exposure.psf_sigma, x, y)
        visit, detector, njy = exposure.visit, exposure.detector, exposure.njy_per_electron
        return pd.DataFrame({
            "diaForcedSourceId": np.array([association.forced_source_id(int(i), visit, detector) for i in ids],
                                          dtype=np.int64),
            "diaObjectId": ids, "ra": ra, "dec": dec, "visit": visit, "detector": detector,
            "midpointMjdTai": float(exposure.midpoint.mjd), "psfFlux": njy * difference.flux,
            "psfFluxErr": njy * difference.flux_err, "scienceFlux": njy * science.flux,
            "scienceFluxErr": njy * science.flux_err,
            "band": exposure.band, "timeProcessedMjdTai": processed})

    @staticmethod
    def _package(exposure: Exposure, sources: pd.DataFrame, objects: pd.DataFrame, history: association.History,
                 folder: Path) -> tuple[str, int]:
        """One packet per DIA source, with its object, its history and three cutouts; written atomically."""
        objects_by_id = {int(row["diaObjectId"]): row for row in records(objects)}
        ids = sources["diaObjectId"]
        earlier = _by_object(history.sources, ids)
        earlier_forced = _by_object(history.forced, ids)
        padded = 0
        packets = []
        for source in records(sources):
            object_id = int(source["diaObjectId"])
            stamps = [cutouts.cutout(image, exposure.wcs, float(source["x"]), float(source["y"]))
                      for image in (exposure.difference, exposure.science, exposure.template)]
            padded += any(stamp.padded for stamp in stamps)
            packets.append(alert_packets.packet(
                source, objects_by_id.get(object_id), earlier.get(object_id, []), earlier_forced.get(object_id, []),
                (stamps[0].fits, stamps[1].fits, stamps[2].fits)))
        path = folder / alert_packets.FILE_NAME
        alert_packets.write_packets(path, packets)
        return path.as_uri(), padded


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of a frame as dicts (column by column: pandas' own to_dict("records") is several times slower)."""
    columns = frame.to_dict("list")
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _by_object(frame: pd.DataFrame, ids: pd.Series) -> dict[int, list[dict[str, Any]]]:
    """The rows of these objects, in time order, by object."""
    if not len(frame):
        return {}
    grouped: dict[int, list[dict[str, Any]]] = {}
    for row in records(frame[frame["diaObjectId"].isin(ids)].sort_values("midpointMjdTai")):
        grouped.setdefault(int(row["diaObjectId"]), []).append(row)
    return grouped


def _pixels(wcs: WCS, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(ra):
        return np.array([]), np.array([])
    x, y = wcs.all_world2pix(ra, dec, 0)
    return np.asarray(x, float), np.asarray(y, float)


STANDIN_NJY_PER_ELECTRON = 1.0
"""The synthetic sources' fluxes are made up: they are taken as nJy as they are."""


class SyntheticAlerts:
    """The stand-in pipeline's DIA sources: `standin_dia_sources` point sources on a small flat image of the
    detector's pointing, at the same places every visit of the pointing and at new fluxes each visit."""

    SIZE = 256
    """Pixels on a side of the synthetic image."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.step = AssociateApdb(settings)
        self.shape = CcdShape(self.SIZE, self.SIZE)

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """The APDB's history of the detector's region."""
        return {"prep_apdbTime": self.step.preload(progress, self.shape)}

    def run(self, progress: DetectorProgress) -> Alerts:
        """Association, the APDB and the alert packets of the synthetic sources; their metrics and step times."""
        timer = Timer()
        folder = Path(self.settings.output_root) / progress.instrument / progress.group_id / str(progress.detector)
        folder.mkdir(parents=True, exist_ok=True)
        alerts = self.step.run(progress, self.exposure(progress), folder, timer)
        return Alerts(alerts.uri, alerts.metrics | {"diaSourceCount": alerts.metrics["alertCount"]}
                      | {f"{step}Time": seconds for step, seconds in timer.steps.items()})

    def exposure(self, progress: DetectorProgress) -> Exposure:
        """The synthetic image and its detections: places seeded by the pointing, fluxes by the visit too."""
        wcs = detector_wcs(progress.instrument, progress.detector, progress.position[0], progress.position[1],
                           progress.camera_angle, self.shape)
        pointing = f"{progress.instrument}/{progress.detector}/{progress.position[0]:.4f}/{progress.position[1]:.4f}"
        places = np.random.default_rng(zlib.crc32(pointing.encode()))
        count = self.settings.standin_dia_sources
        x, y = places.uniform(2, self.SIZE - 3, count), places.uniform(2, self.SIZE - 3, count)
        snr = np.random.default_rng(zlib.crc32(f"{pointing}/{progress.group_id}".encode())).uniform(6, 40, count)
        ra, dec = wcs.all_pix2world(x, y, 0)
        flat = np.ones((self.SIZE, self.SIZE), dtype=np.float32)
        detections = pd.DataFrame({"x": x, "y": y, "ra": ra, "dec": dec, "psf_flux": 10.0 * snr,
                                   "psf_flux_err": 10.0, "snr": snr, "is_negative": False})
        return Exposure(progress.snaps[0].exposure_id, progress.detector,
                        astropy.time.Time(progress.next_visit_time, format="unix_tai"),
                        association.band_of(progress.filters.split(",")[0]) or "r", 30.0, wcs, 1.0, flat, flat,
                        flat, flat, flat, detections, STANDIN_NJY_PER_ELECTRON)
