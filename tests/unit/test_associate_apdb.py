"""associateApdb on one detector against a real SQLite APDB (dax_apdb): stored once, alerted the same on a
retry, capped, edges flagged, and an APDB that does not answer retried."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import astropy.time
import numpy as np
import pandas as pd
import pytest

from streams.config import Settings
from streams.data.apdb import ApdbAccess, Sky, create_sqlite
from streams.errors import RetriableError
from streams.pipelines.associate_apdb import AssociateApdb, Exposure
from streams.science.alert_production import Timer
from streams.science.geometry import CcdShape, detector_wcs
from streams.serde.alert_packets import read_packets, validate
from streams.serde.records import DetectorProgress, HeldSnap

SIZE = 200
VISIT = 2026112500367


def settings(tmp_path: Path, **changes: object) -> Settings:
    """Settings with an SQLite APDB of the test's own."""
    config = tmp_path / "apdb" / "apdb.yaml"
    create_sqlite(config.with_name("apdb.db"), config)
    return replace(Settings(), apdb_config=str(config), output_root=str(tmp_path / "out"), **changes)  # type: ignore[arg-type]


def midpoint(visit: int) -> astropy.time.Time:
    """The visit's time: a thousandth of a day per exposure id after the first."""
    return astropy.time.Time(61000.1 + (visit - VISIT) / 1000, format="mjd", scale="tai")


def progress(visit: int = VISIT) -> DetectorProgress:
    """Detector 94 of a visit pointed at (150, 2), announced 20 s before its midpoint."""
    return DetectorProgress(instrument="LSSTCam", group_id=f"g{visit}", detector=94, position=[150.0, 2.0],
                            filters="r_57", next_visit_time=float(midpoint(visit).unix_tai) - 20,
                            snaps=[HeldSnap(snap=0, exposure_id=visit, uri="file:///raw", arrival_time=0.0)])


NJY_PER_ELECTRON = 0.57


def exposure(x: list[float], y: list[float], snr: list[float], visit: int = VISIT) -> Exposure:
    """A flat image with detections at (x, y), calibrated at NJY_PER_ELECTRON."""
    wcs = detector_wcs("LSSTCam", 94, 150.0, 2.0, 0.0, CcdShape(SIZE, SIZE))
    ra, dec = wcs.all_pix2world(np.asarray(x), np.asarray(y), 0)
    flat = np.random.default_rng(1).normal(0, 1, (SIZE, SIZE)).astype(np.float32)
    ones = np.ones((SIZE, SIZE), dtype=np.float32)
    detections = pd.DataFrame({"x": x, "y": y, "ra": ra, "dec": dec, "psf_flux": np.asarray(snr) * 10,
                               "psf_flux_err": 10.0, "snr": snr, "is_negative": False})
    return Exposure(visit, 94, midpoint(visit), "r", 30.0, wcs, 1.5, flat,
                    ones, flat, ones, flat, detections, NJY_PER_ELECTRON)


def run(step: AssociateApdb, folder: Path, shot: Exposure, visit: int = VISIT) -> tuple[dict[str, float], list[dict]]:
    """One attempt at the detector: its metrics and its packets."""
    folder.mkdir(parents=True, exist_ok=True)
    alerts = step.run(progress(visit), shot, folder, Timer())
    return alerts.metrics, read_packets(folder / "alerts.avro")


def test_fluxes_are_calibrated_to_nanojansky(tmp_path: Path) -> None:
    """The APDB and the alerts carry fluxes in nJy, as the SDM says: the detections' electrons times the CCD's
    photometric calibration, errors likewise."""
    _, packets = run(AssociateApdb(settings(tmp_path)), tmp_path / "a", exposure([50.0, 120.5], [60.0, 100.0],
                                                                                  [12.0, 30.0]))
    by_snr = sorted(packets, key=lambda packet: packet["diaSource"]["snr"])
    assert [p["diaSource"]["psfFlux"] for p in by_snr] == pytest.approx([NJY_PER_ELECTRON * 120.0,
                                                                         NJY_PER_ELECTRON * 300.0])
    assert all(p["diaSource"]["psfFluxErr"] == pytest.approx(NJY_PER_ELECTRON * 10.0) for p in by_snr)


def test_a_second_attempt_stores_nothing_and_alerts_the_same(tmp_path: Path) -> None:
    """A detector processed again (a new process, as after a crash) writes nothing to the APDB and writes the
    same alert packets, byte for byte in content, as the first attempt."""
    config = settings(tmp_path)
    shot = exposure([50.0, 120.5, 160.0], [60.0, 100.0, 150.2], [12.0, 30.0, 8.0])
    first_metrics, first = run(AssociateApdb(config), tmp_path / "a", shot)
    again_metrics, again = run(AssociateApdb(config), tmp_path / "b", shot)
    assert first_metrics["apdbAlreadyStored"] == 0 and again_metrics["apdbAlreadyStored"] == 1
    assert first == again and len(first) == 3
    for packet in first:
        validate(packet)


def test_the_next_visit_of_the_field_carries_the_history(tmp_path: Path) -> None:
    """The next visit's sources at the same places join the same DIA objects and carry the first as history."""
    config = settings(tmp_path)
    x, y = [50.0, 120.5], [60.0, 100.0]
    _, first = run(AssociateApdb(config), tmp_path / "a", exposure(x, y, [12.0, 30.0]))
    metrics, second = run(AssociateApdb(config), tmp_path / "b", exposure(x, y, [15.0, 25.0], VISIT + 2), VISIT + 2)
    assert metrics["diaObjectsMatched"] == 2 and metrics["diaObjectsCreated"] == 0
    assert [p["diaObject"]["diaObjectId"] for p in second] == [p["diaObject"]["diaObjectId"] for p in first]
    assert all([s["diaSourceId"] for s in p["prvDiaSources"]] == [f["diaSourceId"]]
               for p, f in zip(second, first, strict=True))
    assert all(p["diaObject"]["nDiaSources"] == 2 for p in second)


def test_an_absurd_number_of_sources_is_capped_and_edges_are_flagged(tmp_path: Path) -> None:
    """Past max_dia_sources, only the highest |S/N| are kept and the rest counted; a source by the edge gets a
    padded cutout and pixelFlags_edge."""
    config = settings(tmp_path, max_dia_sources=5)
    rng = np.random.default_rng(3)
    x, y = list(rng.uniform(30, 170, 20)), list(rng.uniform(30, 170, 20))
    snr = list(rng.uniform(5, 50, 20))
    x[0], y[0], snr[0] = 2.0, 100.0, 99.0  # by the edge, and the brightest: kept
    metrics, packets = run(AssociateApdb(config), tmp_path / "a", exposure(x, y, snr))
    assert metrics["alertCount"] == 5 and metrics["diaSourcesDropped"] == 15
    assert sorted(p["diaSource"]["snr"] for p in packets) == pytest.approx(sorted(snr)[-5:], rel=1e-6)
    edge = [p for p in packets if p["diaSource"]["x"] < 10]
    assert len(edge) == 1 and edge[0]["diaSource"]["pixelFlags_edge"] and metrics["cutoutsPaddedCount"] == 1


def test_an_apdb_that_does_not_answer_is_retried_then_fails_retriable(tmp_path: Path) -> None:
    """An APDB that is away for a moment is waited for, and the detector is stored once; one that stays away
    fails the detector as retriable (running it again is safe), never silently."""
    config = settings(tmp_path)
    database = Path(config.apdb_config).with_name("apdb.db")
    apdb = ApdbAccess(config.apdb_config, retry_seconds=20.0)
    sky = Sky(150.0, 2.0, 0.1)
    when = astropy.time.Time(61000.1, format="mjd", scale="tai")
    database.rename(database.with_suffix(".away"))
    threading.Timer(1.5, lambda: database.with_suffix(".away").rename(database)).start()
    started = time.monotonic()
    history = apdb.history(sky, when)
    assert time.monotonic() - started >= 1.0 and len(history.objects) == 0, "waited for the APDB to come back"
    database.rename(database.with_suffix(".away"))
    with pytest.raises(RetriableError, match="APDB"):
        ApdbAccess(config.apdb_config, retry_seconds=1.0).history(sky, when)
