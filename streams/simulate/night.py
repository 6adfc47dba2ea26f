"""A simulated night: a data repository, raws with known transients, replayed as events.

`write_night` writes what the night needs under the data root (per-detector master calibrations and ptc,
the reference catalogue of the simulated sky, template tiles around each detector's footprint, and the raws
and sidecars of every visit, snap and detector, with the injected transients and the true WCS and throughput
of each detector as truth); `replay` then sends each visit's nextVisit, waits the lead time, and sends the raw
arrivals snap by snap at the chosen cadence.

The raws are what LSSTCam writes (`streams.simulate.camera`): each detector at its vendor's size (or a small
size for tests and demos), the nominal boresight in the header, and the sky rendered through the true
pointing, off from the nominal one by a per-visit pointing error the pipeline's astrometry has to find.
Fluxes are defined on the sky in nJy; each detector turns them into electrons through its own throughput.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

from streams.clock import tai_now
from streams.data import refcat, repository
from streams.ops.progress import progress_bar
from streams.science import amplifiers, isr
from streams.science.geometry import CcdShape, detector_wcs
from streams.serde.records import RawImageAvailable
from streams.simulate.camera import (
    NOMINAL_NJY_PER_ELECTRON,
    Detector,
    expose,
    make_detector,
    primary_header,
    raw_hdus,
)
from streams.simulate.camera import raw_key as camera_raw_key
from streams.simulate.observation import Conditions, Truth, inject_transients, observe, template_tile
from streams.simulate.scene import Sources, random_stars
from streams.simulate.visits import Visits

FILTER = "r_57"
MIN_STARS = 80
"""At least this many stars around a CCD: a small CCD still has enough to fit its WCS (a full one has thousands)."""
BAND = FILTER.split("_")[0]
POINTING_SIGMA_ARCSEC = 2.0
"""Pointing error per axis (RA on the sky, Dec), normal sigma."""
ROTATION_SIGMA_DEG = 0.005
"""Rotation error, normal sigma: small, since the outer CCDs lie ~300 mm (30000 pixels) from the boresight the
camera turns about (0.005 deg moves them by ~2.6 pixels)."""
REFCAT_EPOCH = 2026.0
REFCAT_FLUX_NOISE = 0.01
"""Relative flux error of the reference catalogue."""
REFCAT_POSITION_NOISE_MAS = 10.0
TRUTH_TABLE, DETECTORS_TABLE = "TRUTH", "DETECTORS"


@dataclass(frozen=True)
class PlannedVisit:
    """One visit of the night."""

    index: int
    group_id: str
    ra: float
    dec: float
    camera_angle: float
    """The nominal boresight (what nextVisit says and the raws' RA, DEC, ROTPA)."""
    exposure_ids: tuple[int, ...]
    has_template: bool = True
    field: int = -1
    """The field it points at: visits of one field see the same sky, and its variable sources again."""
    pointing_error: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """How far the telescope really points from the nominal boresight: RA on the sky [arcsec], Dec [arcsec],
    rotation [deg]."""

    @property
    def true_pointing(self) -> tuple[float, float, float]:
        """(RA, Dec, camera angle) [deg] the sky is really seen through."""
        d_ra, d_dec, d_angle = self.pointing_error
        return (self.ra + d_ra / 3600 / np.cos(np.radians(self.dec)), self.dec + d_dec / 3600,
                self.camera_angle + d_angle)

    @property
    def start(self) -> datetime:
        """When the first snap's shutter opened (the group id is that time)."""
        return datetime.fromisoformat(self.group_id)


@dataclass(frozen=True)
class Night:
    """What the night observes."""

    instrument: str
    detectors: tuple[int, ...]
    shape: CcdShape | None
    """Every CCD's size, small for tests and demos; None: each CCD its vendor's full size."""
    visits: tuple[PlannedVisit, ...]
    conditions: Conditions = field(default_factory=Conditions)
    seed: int = 2026
    snaps: int = 2
    repeats_fields: bool = False
    """Visits return to earlier fields, whose transients are variable sources seen again at other fluxes."""

    def shape_of(self, detector: int) -> CcdShape:
        """The detector's imaging area: its vendor's (E2V 4096 x 4004, ITL 4072 x 4000) at full size."""
        return amplifiers.layout(amplifiers.vendor(self.instrument, detector), self.shape).ccd


def plan_night(visits: int, detectors: tuple[int, ...], shape: CcdShape | None, *, instrument: str = "LSSTCam",
               seed: int = 2026, without_template: tuple[int, ...] = (), start: datetime | None = None,
               fields: int = 0) -> Night:
    """A night of `visits` pointings along a strip of sky, each with two snaps, from `start` (now). With
    `fields`, visit i points at field i mod `fields`, so later visits see earlier ones' variable sources.
    `shape` None writes full-size CCDs, each of its vendor's size.

    Group ids are the visits' start times and exposure ids count the night's seconds, so two nights
    never share a group or an exposure (Prompt Streams would rightly take them for duplicates). Each visit
    gets its own pointing error (seeded), fields or not: the telescope never points twice the same way.
    """
    rng = np.random.default_rng(seed)
    errors = np.random.default_rng([seed, 5])
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
        d_ra, d_dec = errors.normal(0, POINTING_SIGMA_ARCSEC, 2)
        planned.append(PlannedVisit(
            index=i, group_id=when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}",
            ra=ra, dec=dec, camera_angle=angle,
            exposure_ids=(day_obs * 100_000 + sequence, day_obs * 100_000 + sequence + 1),
            has_template=i not in without_template, field=where,
            pointing_error=(float(d_ra), float(d_dec), float(errors.normal(0, ROTATION_SIGMA_DEG)))))
    return Night(instrument, detectors, shape, tuple(planned), seed=seed, repeats_fields=fields > 0)


def throughput(night: Night, detector: int) -> float:
    """The detector's nJy per electron per exposure: the nominal one times a quantum efficiency in [0.9, 1.1]
    (seeded by detector, the same every visit, so templates and zero points stay consistent)."""
    return NOMINAL_NJY_PER_ELECTRON * float(np.random.default_rng([night.seed, detector, 6]).uniform(0.9, 1.1))


def _detector(night: Night, detector: int) -> Detector:
    """The same CCD electronics every visit (seeded by detector), so the calibrations stay valid."""
    return make_detector(np.random.default_rng([night.seed, detector]),
                         amplifiers.vendor(night.instrument, detector), night.shape, throughput(night, detector))


def nominal_wcs(night: Night, visit: PlannedVisit, detector: int) -> WCS:
    """The detector's WCS from the nominal boresight (what the pipeline starts from)."""
    return detector_wcs(night.instrument, detector, visit.ra, visit.dec, visit.camera_angle, night.shape_of(detector))


def true_wcs(night: Night, visit: PlannedVisit, detector: int) -> WCS:
    """The detector's WCS from the true boresight (what the sky is rendered through)."""
    return detector_wcs(night.instrument, detector, *visit.true_pointing, night.shape_of(detector))


def _stars(night: Night, visit: PlannedVisit, detector: int) -> tuple[Sources, float, float]:
    """The stars around one detector's footprint in one field (the same for science, template and every visit of
    the field: they are placed around the nominal pointing), fluxes in nJy."""
    shape = night.shape_of(detector)
    wcs = nominal_wcs(night, visit, detector)
    ra, dec = (float(v) for v in wcs.all_pix2world(shape.width / 2, shape.height / 2, 0))
    radius = 0.75 * max(shape.width, shape.height) * 0.2 / 3600
    density = 1.5e5  # stars per square degree, down to the faintest flux: ~400 on a 1k x 1k CCD
    count = max(MIN_STARS, int(density * np.pi * radius ** 2))
    stars = random_stars(np.random.default_rng([night.seed, visit.field, detector, 1]), ra, dec, radius, count,
                         throughput(night, detector))
    return stars, ra, dec


def raw_key(night: Night, visit: PlannedVisit, snap: int, detector: int) -> str:
    """The object key of a raw, as the camera names it."""
    return camera_raw_key(night.instrument, visit.exposure_ids[snap], detector)


def _write_raw(root: Path, key: str, hdus: fits.HDUList, group_id: str, snap: int, detector: int) -> Path:
    """Write a raw and its sidecar (what the camera's sidecar says of it)."""
    path = root / "raw" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    hdus.writeto(path, overwrite=True)
    path.with_suffix(".json").write_text(f'{{"GROUPID": "{group_id}", "CURINDEX": {snap + 1}, "DETECTOR": {detector}}}')
    return path


def write_calibrations(root: Path, night: Night, start: float) -> None:
    """Master bias, dark, flat and ptc of every detector, valid from a day before the night for a month."""
    valid_start, valid_end = start - 86400, start + 30 * 86400
    for detector in night.detectors:
        truth = _detector(night, detector)
        for kind, data, filt in (("bias", truth.bias, repository.ANY_FILTER),
                                 ("dark", truth.dark, repository.ANY_FILTER), ("flat", truth.flat, FILTER)):
            path = repository.calibration_path(root, night.instrument, kind, detector, filt, valid_start, valid_end)
            repository.write_calibration(path, data, kind, detector, filt, valid_start, valid_end)
        path = repository.calibration_path(root, night.instrument, "ptc", detector, repository.ANY_FILTER,
                                           valid_start, valid_end)
        repository.write_ptc(path, truth.amp_calibration(), detector, valid_start, valid_end)


def reference_stars(night: Night, visit: PlannedVisit, detector: int) -> Table:
    """The reference catalogue's share of one field and detector: the detector's stars that fall on its own CCD
    through the visit's true WCS (its star list reaches past the CCD, over its neighbours' lists), with 1% flux
    noise and 10 mas position noise, no proper motion, epoch 2026.0 (seeded by field and detector)."""
    stars, _, _ = _stars(night, visit, detector)
    shape = night.shape_of(detector)
    x, y = true_wcs(night, visit, detector).all_world2pix(stars.ra, stars.dec, 0)
    on = (x >= -0.5) & (x < shape.width - 0.5) & (y >= -0.5) & (y < shape.height - 0.5)
    rng = np.random.default_rng([night.seed, visit.field, detector, 7])
    count = int(on.sum())
    scatter = REFCAT_POSITION_NOISE_MAS / 3.6e6
    dec = stars.dec[on] + rng.normal(0, scatter, count)
    ra = stars.ra[on] + rng.normal(0, scatter, count) / np.cos(np.radians(dec))
    flux = stars.flux[on]
    return Table({"ra": ra, "dec": dec, "pm_ra": np.zeros(count), "pm_dec": np.zeros(count),
                  "epoch": np.full(count, REFCAT_EPOCH),
                  f"{BAND}_flux": flux * (1 + rng.normal(0, REFCAT_FLUX_NOISE, count)),
                  f"{BAND}_flux_err": REFCAT_FLUX_NOISE * flux})


def write_references(root: Path, night: Night) -> list[Path]:
    """The reference catalogue of the simulated sky: each field's on-CCD stars of every detector, written once per
    field and detector (through the true WCS of the field's first visit)."""
    first = {visit.field: visit for visit in reversed(night.visits)}
    tables = [reference_stars(night, visit, detector) for visit in first.values() for detector in night.detectors]
    tables = [table for table in tables if len(table)]
    return refcat.write(root, vstack(tables)) if tables else []


def write_truth(root: Path, night: Night, visit: PlannedVisit, truths: dict[int, Truth]) -> Path:
    """`<root>/truth/<group>.fits`: the injected transients (table TRUTH, the first: detector, x, y in DM's frame,
    ra, dec, flux [e- per snap], snr, flux_njy) and each detector's throughput and true WCS (table DETECTORS:
    detector, njy_per_electron, crval1/2, crpix1/2 (FITS convention: pixel 1 is DM's pixel 0), cd1_1..cd2_2, and
    wcs, the whole WCS header as text); the primary header holds the nominal and the true boresight."""
    names = ("detector", "x", "y", "ra", "dec", "flux", "snr", "flux_njy")
    parts = [(np.full(len(t.x), d), t.x, t.y, t.ra, t.dec, t.flux, t.snr, t.flux_njy) for d, t in truths.items()]
    transients = Table([np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(len(names))],
                       names=names)
    transients["detector"] = transients["detector"].astype(np.int64)
    rows = []
    for detector in truths:
        wcs = true_wcs(night, visit, detector)
        rows.append((detector, throughput(night, detector), *wcs.wcs.crval, *wcs.wcs.crpix, *wcs.wcs.cd.ravel(),
                     wcs.to_header_string()))
    detectors = Table(rows=rows, names=("detector", "njy_per_electron", "crval1", "crval2", "crpix1", "crpix2",
                                        "cd1_1", "cd1_2", "cd2_1", "cd2_2", "wcs"),
                      dtype=(np.int64, *(np.float64,) * 9, str)) if rows else Table()
    header = fits.Header([("GROUPID", visit.group_id), ("NOMRA", visit.ra), ("NOMDEC", visit.dec),
                          ("NOMROT", visit.camera_angle), *zip(("TRUERA", "TRUEDEC", "TRUEROT"), visit.true_pointing,
                                                                strict=True)])
    first, second = fits.table_to_hdu(transients), fits.table_to_hdu(detectors)
    first.name, second.name = TRUTH_TABLE, DETECTORS_TABLE
    path = root / "truth" / f"{visit.group_id}.fits"
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.HDUList([fits.PrimaryHDU(header=header), first, second]).writeto(path, overwrite=True)
    return path


def write_visit(root: Path, night: Night, visit: PlannedVisit) -> list[list[RawImageAvailable]]:
    """A visit's raws, sidecars, templates and truth; the raw arrivals, snap by snap."""
    arrivals: list[list[RawImageAvailable]] = [[] for _ in range(night.snaps)]
    truths: dict[int, Truth] = {}
    conditions = night.conditions
    for detector in night.detectors:
        shape = night.shape_of(detector)
        electronics = _detector(night, detector)
        rng = np.random.default_rng([night.seed, visit.index, detector, 2])
        stars, ra, dec = _stars(night, visit, detector)
        places = np.random.default_rng([night.seed, visit.field, detector, 4]) if night.repeats_fields else None
        truth = inject_transients(rng, nominal_wcs(night, visit, detector), shape, conditions, night.snaps,
                                  njy_per_electron=electronics.njy_per_electron, positions=places,
                                  true_wcs=true_wcs(night, visit, detector))
        headers = [primary_header(
            night.instrument, detector, exposure_id=visit.exposure_ids[snap], group_id=visit.group_id, snap=snap,
            snaps=night.snaps, image_type="SCIENCE",
            start=visit.start + timedelta(seconds=snap * (conditions.exposure_time + 2.0)),
            exposure_time=conditions.exposure_time, boresight=(visit.ra, visit.dec, visit.camera_angle),
            filter_name=FILTER) for snap in range(night.snaps)]
        for snap, hdus in enumerate(observe(rng, electronics, true_wcs(night, visit, detector), stars, truth,
                                            conditions, headers)):
            path = _write_raw(root, raw_key(night, visit, snap, detector), hdus, visit.group_id, snap, detector)
            arrivals[snap].append(RawImageAvailable(
                instrument=night.instrument, group_id=visit.group_id, detector=detector, snap=snap,
                exposure_id=visit.exposure_ids[snap], uri=path.as_uri(), size_bytes=path.stat().st_size))
        if visit.has_template:
            size = int(1.6 * max(shape.width, shape.height))
            image, variance, tile_wcs = template_tile(rng, stars, ra, dec, (size, size), conditions,
                                                      electronics.njy_per_electron)
            repository.write_template(root, night.instrument, FILTER, f"v{visit.field}_d{detector}", image,
                                      variance, tile_wcs, conditions.template_sigma)
        truths[detector] = truth
    write_truth(root, night, visit, truths)
    return arrivals


def write_bias_sequence(root: Path, night: Night, group_id: str, exposures: int,
                        first_exposure_id: int) -> list[list[RawImageAvailable]]:
    """A bias sequence: `exposures` zero-second exposures of every detector, one group, as the camera writes them
    (IMGTYPE BIAS, controller C; the boresight is wherever the telescope points, the night's first field)."""
    arrivals: list[list[RawImageAvailable]] = [[] for _ in range(exposures)]
    boresight = (night.visits[0].ra, night.visits[0].dec, night.visits[0].camera_angle) if night.visits else \
        (0.0, 0.0, 0.0)
    try:
        start = datetime.fromisoformat(group_id.split("#")[0])
    except ValueError:  # a group id that is not a time
        start = datetime.now(UTC)
    for detector in night.detectors:
        rng = np.random.default_rng([night.seed, detector, 3])
        electronics = _detector(night, detector)
        shape = electronics.shape
        sky = np.zeros((shape.height, shape.width), dtype=np.float32)
        for index in range(exposures):
            exposure_id = first_exposure_id + index
            header = primary_header(night.instrument, detector, exposure_id=exposure_id, group_id=group_id,
                                    snap=index, snaps=exposures, image_type="BIAS",
                                    start=start + timedelta(seconds=5 * index), exposure_time=0.0,
                                    boresight=boresight, filter_name=FILTER, controller="C")
            hdus = raw_hdus(expose(rng, electronics, sky, 0.0), electronics, header)
            path = _write_raw(root, camera_raw_key(night.instrument, exposure_id, detector, "C"), hdus, group_id,
                              index, detector)
            arrivals[index].append(RawImageAvailable(
                instrument=night.instrument, group_id=group_id, detector=detector, snap=index,
                exposure_id=exposure_id, uri=path.as_uri(), size_bytes=path.stat().st_size))
    return arrivals


def amp_calibration(night: Night, detector: int) -> isr.AmpCalibration:
    """The true gains [e-/ADU] and read noise [e-] of a detector's amplifiers, by segment name (its ptc)."""
    return _detector(night, detector).amp_calibration()


def read_noise(night: Night, detector: int) -> dict[str, float]:
    """The true read noise [e-] of each amplifier of a detector, by segment name (to judge a master bias)."""
    return dict(_detector(night, detector).read_noise)


def true_bias(night: Night, detector: int) -> np.ndarray:
    """The true residual bias structure [e-] of a detector (DM's frame)."""
    return _detector(night, detector).bias


def write_night(root: Path, night: Night) -> list[list[list[RawImageAvailable]]]:
    """Everything the night needs, under `root`; the arrivals of every visit."""
    write_calibrations(root, night, tai_now())
    write_references(root, night)
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
