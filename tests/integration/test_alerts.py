"""Alert Production's end: association in the APDB and the alert stream, through a worker, read as a broker would."""

from __future__ import annotations

import io
import os
import subprocess
from collections import Counter
from pathlib import Path

import astropy.units as u
import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from lsst.dax.apdb import Apdb
from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

from stack.cluster import ClusterState
from stack.workers import FAUST, WorkerPool
from streams.driver import Visits
from streams.science.association import visit_of
from tests.integration.alert_stream import latest_schema, read_alerts
from tests.integration.settings import isolated_settings

DETECTOR = 94


def test_two_visits_of_one_field_alert_once_with_history(cluster: ClusterState, tmp_path: Path) -> None:
    """Two visits of one field: one valid alert per DIA source, cutouts centred on it, each source stored once in
    the APDB, and visit 2's alerts for recurring sources carry visit 1's sources under the same diaObjectId.

    Visit 2 comes 10 s after visit 1, once visit 1 is stored: its preload reads the APDB at its nextVisit."""
    instruments = tmp_path / "instruments.toml"
    instruments.write_text(f'[LSSTCam]\ndetectors = "0-188"\ndisabled = {sorted(set(range(189)) - {DETECTOR})}\n')
    settings = isolated_settings(cluster, tmp_path, instruments_file=str(instruments))
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        pool.start("w1")
        command = [str(FAUST), "-A", "streams.app", "simulate-night", "--visits", "2", "--fields", "1",
                   "--detectors", str(DETECTOR), "--size", "512", "--lead-time", "1", "--snap-interval", "0.5",
                   "--visit-interval", "10", "--survey", "BLOCK-AP365", "--start", "2026-11-25T03:00:00"]
        done = subprocess.run(command, env=os.environ | settings.to_env(), capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        results = Visits(settings).results(2, timeout=240, settle=2.0)
        expected = sum(int(r.metrics.get("alertCount", 0)) for r in results)
        alerts = read_alerts(settings)
        for _ in range(20):  # the publisher commits shortly after the results
            if len(alerts) >= expected:
                break
            alerts = read_alerts(settings)
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
    assert sorted(stored["diaSourceId"]) == sorted(ids), "every DIA source stored once, and only those"

