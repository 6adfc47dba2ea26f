"""A simulated night: a data repository, raws with known transients, replayed as events.

`write_night` writes what the night needs under the data root (per-detector master calibrations,
template tiles around each detector's footprint, and the raws and sidecars of every visit, snap
and detector, with the injected transients as truth); `replay` then sends each visit's nextVisit,
waits the lead time, and sends the raw arrivals snap by snap at the chosen cadence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from streams import repository
from streams.clock import tai_now
from streams.core.focal_plane import detector_name
from streams.driver import Visits
from streams.progress import progress_bar
from streams.records import RawImageAvailable
from streams.science.geometry import CcdShape, detector_wcs
from streams.simulate.camera import Detector, expose, make_detector, raw_hdus
from streams.simulate.observation import Conditions, inject_transients, observe, template_tile
from streams.simulate.scene import Sources, random_stars

FILTER = "r_57"


@dataclass(frozen=True)
class PlannedVisit:
    """One visit of the night."""

    index: int
    group_id: str
    ra: float
    dec: float
    camera_angle: float
    exposure_ids: tuple[int, ...]
    has_template: bool = True
    field: int = -1
    """The field it points at: visits of one field see the same sky, and its variable sources again."""


@dataclass(frozen=True)
class Night:
    """What the night observes."""

    instrument: str
    detectors: tuple[int, ...]
    shape: CcdShape
    visits: tuple[PlannedVisit, ...]
    conditions: Conditions = field(default_factory=Conditions)
    seed: int = 2026
    snaps: int = 2
    repeats_fields: bool = False
    """Visits return to earlier fields, whose transients are variable sources seen again at other fluxes."""


def plan_night(visits: int, detectors: tuple[int, ...], shape: CcdShape, *, instrument: str = "LSSTCam",
               seed: int = 2026, without_template: tuple[int, ...] = (), start: datetime | None = None,
               fields: int = 0) -> Night:
    """A night of `visits` pointings along a strip of sky, each with two snaps, from `start` (now). With
    `fields`, visit i points at field i mod `fields`, so later visits see earlier ones' variable sources.

    Group ids are the visits' start times and exposure ids count the night's seconds, so two nights
    never share a group or an exposure (Prompt Streams would rightly take them for duplicates).
    """
    rng = np.random.default_rng(seed)
    start = start or datetime.now(UTC)
    day_obs = int(start.strftime("%Y%m%d"))
    second = start.hour * 3600 + start.minute * 60 + start.second
    planned = []
    pointings: dict[int, tuple[float, float, float]] = {}
    for i in range(visits):
        when = start + timedelta(seconds=32 * i)
        sequence = (second + 32 * i) % 50_000 * 2
        where = i % fields if fields else i
        if where not in pointings:
            pointings[where] = (150.0 + 4.0 * where, float(rng.uniform(-30, 10)), float(rng.uniform(0, 90)))
        ra, dec, angle = pointings[where]
        planned.append(PlannedVisit(
            index=i, group_id=when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}",
            ra=ra, dec=dec, camera_angle=angle,
            exposure_ids=(day_obs * 100_000 + sequence, day_obs * 100_000 + sequence + 1),
            has_template=i not in without_template, field=where))
    return Night(instrument, detectors, shape, tuple(planned), seed=seed, repeats_fields=fields > 0)


def _detector(night: Night, detector: int) -> Detector:
    """The same CCD electronics every visit (seeded by detector), so the calibrations stay valid."""
    return make_detector(np.random.default_rng([night.seed, detector]), night.shape)


def _stars(night: Night, visit: PlannedVisit, detector: int) -> tuple[Sources, float, float]:
    """The stars around one detector's footprint in one visit (the same for science and template)."""
    wcs = detector_wcs(night.instrument, detector, visit.ra, visit.dec, visit.camera_angle, night.shape)
    ra, dec = (float(v) for v in wcs.all_pix2world(night.shape.width / 2, night.shape.height / 2, 0))
    radius = 0.75 * max(night.shape.width, night.shape.height) * 0.2 / 3600
    density = 1.5e5  # stars per square degree, down to the faintest flux: ~400 on a 1k x 1k CCD
    count = max(40, int(density * np.pi * radius ** 2))
    return random_stars(np.random.default_rng([night.seed, visit.field, detector, 1]), ra, dec, radius, count), ra, dec


def raw_key(night: Night, visit: PlannedVisit, snap: int, detector: int) -> str:
    """The object key of a raw, as the camera names it."""
    day_obs, sequence = divmod(visit.exposure_ids[snap], 100_000)
    obs_id = f"MC_O_{day_obs}_{sequence:06d}"
    return f"{night.instrument}/{day_obs}/{obs_id}/{obs_id}_{detector_name(night.instrument, detector)}.fits"


def write_calibrations(root: Path, night: Night, start: float) -> None:
    """Master bias, dark and flat of every detector, valid from a day before the night for a month."""
    for detector in night.detectors:
        truth = _detector(night, detector)
        for kind, data, filt in (("bias", truth.bias, repository.ANY_FILTER),
                                 ("dark", truth.dark, repository.ANY_FILTER), ("flat", truth.flat, FILTER)):
            path = repository.calibration_path(root, night.instrument, kind, detector, filt, start - 86400,
                                               start + 30 * 86400)
            repository.write_calibration(path, data, kind, detector, filt, start - 86400, start + 30 * 86400)


def write_visit(root: Path, night: Night, visit: PlannedVisit) -> list[list[RawImageAvailable]]:
    """A visit's raws, sidecars, templates and truth; the raw arrivals, snap by snap."""
    arrivals: list[list[RawImageAvailable]] = [[] for _ in range(night.snaps)]
    truth_rows = []
    for detector in night.detectors:
        rng = np.random.default_rng([night.seed, visit.index, detector, 2])
        stars, ra, dec = _stars(night, visit, detector)
        wcs = detector_wcs(night.instrument, detector, visit.ra, visit.dec, visit.camera_angle, night.shape)
        places = np.random.default_rng([night.seed, visit.field, detector, 4]) if night.repeats_fields else None
        truth = inject_transients(rng, wcs, night.shape, night.conditions, night.snaps, positions=places)
        headers = [fits.Header({
            "INSTRUME": night.instrument, "GROUPID": visit.group_id, "EXPID": visit.exposure_ids[snap],
            "DETECTOR": detector, "DETNAME": detector_name(night.instrument, detector), "FILTER": FILTER,
            "DATE-OBS": visit.group_id,
            "CURINDEX": snap + 1}) for snap in range(night.snaps)]
        for snap, hdus in enumerate(observe(rng, _detector(night, detector), wcs, stars, truth, night.conditions,
                                            headers)):
            key = raw_key(night, visit, snap, detector)
            path = root / "raw" / key
            path.parent.mkdir(parents=True, exist_ok=True)
            hdus.writeto(path, overwrite=True)
            path.with_suffix(".json").write_text(
                f'{{"GROUPID": "{visit.group_id}", "CURINDEX": {snap + 1}, "DETECTOR": {detector}}}')
            arrivals[snap].append(RawImageAvailable(
                instrument=night.instrument, group_id=visit.group_id, detector=detector, snap=snap,
                exposure_id=visit.exposure_ids[snap], uri=path.as_uri(), size_bytes=path.stat().st_size))
        if visit.has_template:
            size = int(1.6 * max(night.shape.width, night.shape.height))
            image, variance, tile_wcs = template_tile(rng, stars, ra, dec, (size, size), night.conditions)
            repository.write_template(root, night.instrument, FILTER, f"v{visit.field}_d{detector}", image,
                                      variance, tile_wcs, night.conditions.template_sigma)
        truth_rows += [(detector, x, y, r, d, f, s) for x, y, r, d, f, s in
                       zip(truth.x, truth.y, truth.ra, truth.dec, truth.flux, truth.snr, strict=True)]
    table = Table(rows=truth_rows, names=("detector", "x", "y", "ra", "dec", "flux", "snr"))
    truth_path = root / "truth" / f"{visit.group_id}.fits"
    truth_path.parent.mkdir(parents=True, exist_ok=True)
    table.write(truth_path, overwrite=True)
    return arrivals


def write_bias_sequence(root: Path, night: Night, group_id: str, exposures: int,
                        first_exposure_id: int) -> list[list[RawImageAvailable]]:
    """A bias sequence: `exposures` zero-second exposures of every detector, one group."""
    arrivals: list[list[RawImageAvailable]] = [[] for _ in range(exposures)]
    sky = np.zeros((night.shape.height, night.shape.width), dtype=np.float32)
    for detector in night.detectors:
        rng = np.random.default_rng([night.seed, detector, 3])
        electronics = _detector(night, detector)
        for index in range(exposures):
            exposure_id = first_exposure_id + index
            day_obs, sequence = divmod(exposure_id, 100_000)
            obs_id = f"MC_C_{day_obs}_{sequence:06d}"
            path = root / "raw" / night.instrument / str(day_obs) / obs_id / \
                f"{obs_id}_{detector_name(night.instrument, detector)}.fits"
            header = fits.Header({"INSTRUME": night.instrument, "GROUPID": group_id, "EXPID": exposure_id,
                                  "DETECTOR": detector, "IMGTYPE": "BIAS", "FILTER": FILTER, "EXPTIME": 0.0,
                                  "CURINDEX": index + 1})
            amps = expose(rng, electronics, sky, 0.0)
            path.parent.mkdir(parents=True, exist_ok=True)
            raw_hdus(amps, night.shape, header, electronics.gains, electronics.read_noise).writeto(path, overwrite=True)
            arrivals[index].append(RawImageAvailable(
                instrument=night.instrument, group_id=group_id, detector=detector, snap=index,
                exposure_id=exposure_id, uri=path.as_uri(), size_bytes=path.stat().st_size))
    return arrivals


def read_noise(night: Night, detector: int) -> np.ndarray:
    """The true read noise [e-] of each amplifier of a detector (to judge a master bias)."""
    return _detector(night, detector).read_noise


def true_bias(night: Night, detector: int) -> np.ndarray:
    """The true residual bias structure [e-] of a detector."""
    return _detector(night, detector).bias


def write_night(root: Path, night: Night) -> list[list[list[RawImageAvailable]]]:
    """Everything the night needs, under `root`; the arrivals of every visit."""
    write_calibrations(root, night, tai_now())
    arrivals = []
    started = time.monotonic()
    for visit in night.visits:
        arrivals.append(write_visit(root, night, visit))
        progress_bar("writing the night", visit.index + 1, len(night.visits), started=started)
    return arrivals


def replay(visits: Visits, night: Night, arrivals: list[list[list[RawImageAvailable]]], *, lead_time: float,
           snap_interval: float, visit_interval: float, sleep: Callable[[float], None] = time.sleep) -> None:
    """Send each visit: nextVisit, the lead time, then its raws snap by snap."""
    started = time.monotonic()
    for visit, snaps in zip(night.visits, arrivals, strict=True):
        visits.next_visit(visit.group_id, instrument=night.instrument, nimages=night.snaps,
                          duration=night.snaps * (night.conditions.exposure_time + 2.0), filters=FILTER,
                          position=[visit.ra, visit.dec], cameraAngle=visit.camera_angle)
        sleep(lead_time)
        for snap, raws in enumerate(snaps):
            now = tai_now()
            visits.raws([RawImageAvailable.from_dict(raw.to_dict() | {"arrival_time": now}) for raw in raws])
            if snap + 1 < len(snaps):
                sleep(snap_interval)
        progress_bar("sending visits", visit.index + 1, len(night.visits), started=started)
        if visit.index + 1 < len(night.visits):
            sleep(visit_interval)
