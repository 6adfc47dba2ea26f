"""Alert Production's end: association in the APDB and the alert stream, through a worker, read as a broker would."""

from __future__ import annotations

import io
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from confluent_kafka import Consumer, TopicPartition
from lsst.dax.apdb import Apdb
from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

from stack.cassandra import CassandraState, create_apdb
from stack.cluster import ClusterState
from streams.config import Settings
from streams.ops.workers import FAUST, WorkerPool
from streams.science.association import visit_of
from streams.simulate.visits import Visits
from tests.integration.alert_stream import latest_schema, read_alerts
from tests.integration.settings import isolated_settings

DETECTOR = 94


def only(folder: Path, detectors: tuple[int, ...]) -> str:
    """An instruments file with only these LSSTCam detectors switched on."""
    path = folder / "instruments.toml"
    path.write_text(f'[LSSTCam]\ndetectors = "0-188"\ndisabled = {sorted(set(range(189)) - set(detectors))}\n')
    return str(path)


def simulate(settings: Settings, detectors: tuple[int, ...]) -> subprocess.Popen[str]:
    """Two visits of one field, 10 s apart (visit 1 is stored when visit 2's preload reads the APDB), through
    `simulate-night`."""
    command = [str(FAUST), "-A", "streams.app", "simulate-night", "--visits", "2", "--fields", "1",
               "--detectors", ",".join(map(str, detectors)), "--size", "512", "--lead-time", "1",
               "--snap-interval", "0.5", "--visit-interval", "10", "--survey", "BLOCK-AP365",
               "--start", "2026-11-25T03:00:00"]
    return subprocess.Popen(command, env=os.environ | settings.to_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)


def wait_for_alerts(settings: Settings, expected: int) -> list[dict[str, Any]]:
    """The committed alerts, once `expected` are there (the publisher commits shortly after the results)."""
    alerts = read_alerts(settings)
    for _ in range(20):
        if len(alerts) >= expected:
            break
        alerts = read_alerts(settings)
    return alerts


def stored_source_ids(settings: Settings) -> list[int]:
    """Every DiaSource id in the test's SQLite APDB, with repeats if any."""
    with sqlite3.connect(Path(settings.apdb_config).with_name("apdb.db")) as db:
        return [row[0] for row in db.execute('SELECT "diaSourceId" FROM "DiaSource"')]


def test_a_worker_killed_while_alerting_alerts_each_source_once(cluster: ClusterState, tmp_path: Path) -> None:
    """SIGKILL as the first alerts are being published, then a restart: every DIA source of both visits is
    stored once and alerted once (read_committed), and the alerts match the results' counts."""
    detectors = (0, 94, 188)
    settings = isolated_settings(cluster, tmp_path, instruments_file=only(tmp_path, detectors))
    pool = WorkerPool(settings, tmp_path / "logs")
    watcher = Consumer({"bootstrap.servers": settings.cluster.bootstrap, "group.id": "watch"})
    try:
        worker = pool.start("w1")
        night = simulate(settings, detectors)
        deadline = time.monotonic() + 240
        while not _appended(watcher, settings.alert_topic):  # uncommitted ones count: the kill lands mid-publish
            assert time.monotonic() < deadline, "no alert was ever produced"
            time.sleep(0.05)
        worker.stop(signal.SIGKILL)
        pool.start("w1")  # same name: its transactional ids fence what the dead one left open
        assert night.wait(timeout=300) == 0, "simulate-night sent the night"
        results = Visits(settings).results(6, timeout=240, settle=3.0)
        expected = sum(int(r.metrics.get("alertCount", 0)) for r in results)
        alerts = wait_for_alerts(settings, expected)
    finally:
        watcher.close()
        pool.stop_all()
    assert sorted((r.detector, r.status) for r in results) == sorted((d, "success") for d in detectors * 2)
    alerted = Counter(alert["diaSourceId"] for alert in alerts)
    stored = Counter(stored_source_ids(settings))
    assert len(alerts) == expected > 0 and max(alerted.values()) == 1, "each DIA source alerted once"
    assert stored == alerted, "each DIA source stored once, and alerted"


def _appended(consumer: Consumer, topic: str) -> bool:
    """Whether anything, committed or not, was appended to the topic."""
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    return any(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1] > 0
               for p in metadata.partitions)


def test_two_visits_of_one_field_alert_once_with_history_on_cassandra(cluster: ClusterState,
                                                                    cassandra: CassandraState, tmp_path: Path) -> None:
    """Two visits of one field, with the APDB at scale (a real Cassandra node; dax_apdb's apdb-cli made the
    schema): one valid alert per DIA source, cutouts centred on it, each source stored once in the APDB, and
    visit 2's alerts for recurring sources carry visit 1's sources under the same diaObjectId.

    Visit 2 comes 10 s after visit 1, once visit 1 is stored: its preload reads the APDB at its nextVisit."""
    config = create_apdb(cassandra.host, cassandra.native_port, f"apdb_{uuid.uuid4().hex[:8]}",
                         tmp_path / "apdb" / "cassandra.yaml")
    settings = isolated_settings(cluster, tmp_path, instruments_file=only(tmp_path, (DETECTOR,)),
                                 apdb_config=str(config))
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        pool.start("w1")
        assert simulate(settings, (DETECTOR,)).wait(timeout=300) == 0, "simulate-night sent the night"
        results = Visits(settings).results(2, timeout=240, settle=2.0)
        expected = sum(int(r.metrics.get("alertCount", 0)) for r in results)
        alerts = wait_for_alerts(settings, expected)
    finally:
        pool.stop_all()
    assert [(r.status, r.pipeline) for r in results] == [("success", "ap")] * 2, [r.error_message for r in results]
    first, second = sorted(r.exposure_ids[0] for r in results)
    assert expected >= 10, "the simulated transients gave DIA sources"
    ids = Counter(alert["diaSourceId"] for alert in alerts)
    assert len(alerts) == expected and max(ids.values()) == 1, "one alert per DIA source"

    schema = latest_schema()
    for alert in alerts:
        assert schema.validate(alert), "the official schema of lsst-alert-packet"
        source = alert["diaSource"]
        assert alert["diaObject"]["diaObjectId"] == source["diaObjectId"]
        for name in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
            hdu = fits.open(io.BytesIO(alert[name]))[0]
            centre = WCS(hdu.header).pixel_to_world((hdu.data.shape[1] - 1) / 2, (hdu.data.shape[0] - 1) / 2)
            offset = centre.separation(SkyCoord(source["ra"] * u.deg, source["dec"] * u.deg))
            assert hdu.data.ndim == 2 and offset < 0.15 * u.arcsec, (name, offset)

    later = [alert for alert in alerts if alert["diaSource"]["visit"] == second]
    recurring = [alert for alert in later if visit_of(np.array([alert["diaSource"]["diaObjectId"]]))[0] == first]
    assert len(recurring) >= 0.5 * len(later) > 0, "most transients of visit 2 were seen in visit 1"
    for alert in recurring:
        history = alert["prvDiaSources"]
        assert [s["visit"] for s in history] == [first], "visit 1's source is the history"
        assert history[0]["diaObjectId"] == alert["diaSource"]["diaObjectId"]
        assert alert["diaObject"]["nDiaSources"] == 2
        assert [f["visit"] for f in alert["prvDiaForcedSources"]] == [first]
    assert all(not alert["prvDiaSources"] for alert in alerts if alert["diaSource"]["visit"] == first)

    apdb = Apdb.from_uri(settings.apdb_config)
    ra, dec = alerts[0]["diaSource"]["ra"], alerts[0]["diaSource"]["dec"]
    region = Circle(UnitVector3d(LonLat.fromDegrees(ra, dec)), Angle.fromDegrees(0.1))
    objects = apdb.getDiaObjects(region)
    after = Time(max(alert["diaSource"]["midpointMjdTai"] for alert in alerts) + 1, format="mjd", scale="tai")
    stored = apdb.getDiaSources(region, [int(i) for i in objects["diaObjectId"]], after)
    assert Counter(stored["diaSourceId"]) == ids, "every DIA source stored once, and only those"
