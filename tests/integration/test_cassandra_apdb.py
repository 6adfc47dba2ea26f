"""The Alert Production Database on a real Cassandra node: what associateApdb writes, preload reads back.

The node runs from the Maven Central jars (`stack.cassandra`), the schema is created by dax_apdb's own
`apdb-cli create-cassandra`, and the APDB is opened as the pipeline opens it, `Apdb.from_uri`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import astropy.time
import pandas as pd
import pytest
from lsst.dax.apdb import Apdb
from lsst.sphgeom import Angle, Circle, LonLat, UnitVector3d

from stack.cassandra import CassandraState, create_apdb

pytestmark = pytest.mark.integration

RA, DEC = 150.1, 2.2
VISIT, DETECTOR, OTHER_DETECTOR = 2026113000042, 94, 95
OBJECT_ID, SOURCE_ID, FORCED_SOURCE_ID = 7_000_001, 8_000_001, 9_000_001


def catalogs(visit_time: astropy.time.Time) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One DiaObject with one DiaSource and one DiaForcedSource from VISIT/DETECTOR.

    Every column the SDM schema declares NOT NULL is filled, so the same frames also suit the SQL
    backend; Cassandra itself needs only the ids, ra/dec, visit, detector and midpointMjdTai.
    """
    mjd = float(visit_time.tai.mjd)
    objects = pd.DataFrame({
        "diaObjectId": [OBJECT_ID], "ra": [RA], "dec": [DEC], "nDiaSources": [1],
        **{f"{band}_psfFluxNdata": [1 if band == "r" else 0] for band in "ugrizy"},
    })
    sources = pd.DataFrame({
        "diaSourceId": [SOURCE_ID], "diaObjectId": [OBJECT_ID], "visit": [VISIT], "detector": [DETECTOR],
        "band": ["r"], "midpointMjdTai": [mjd], "ra": [RA], "dec": [DEC], "x": [1021.5], "y": [2047.25],
        "psfNdata": [1], "trailNdata": [1], "dipoleNdata": [1], "bboxSize": [15], "timeProcessedMjdTai": [mjd],
    })
    forced = pd.DataFrame({
        "diaForcedSourceId": [FORCED_SOURCE_ID], "diaObjectId": [OBJECT_ID], "visit": [VISIT],
        "detector": [DETECTOR], "band": ["r"], "midpointMjdTai": [mjd], "ra": [RA], "dec": [DEC],
        "timeProcessedMjdTai": [mjd],
    })
    return objects, sources, forced


def test_store_and_read_back_one_visit_detector(cassandra: CassandraState, tmp_path: Path) -> None:
    """What store() wrote for a visit/detector comes back by region and object id, and only that one is marked."""
    config = create_apdb(cassandra.host, cassandra.native_port, f"apdb_{uuid.uuid4().hex[:12]}",
                         tmp_path / "apdb.yaml")
    apdb = Apdb.from_uri(str(config))
    region = Circle(UnitVector3d(LonLat.fromDegrees(RA, DEC)), Angle.fromDegrees(0.1))
    visit_time = astropy.time.Time("2026-11-30T03:14:15", scale="tai")
    assert apdb.getDiaObjects(region).empty
    assert not apdb.containsVisitDetector(VISIT, DETECTOR, region, visit_time)

    apdb.store(visit_time, *catalogs(visit_time))

    objects = apdb.getDiaObjects(region)
    assert objects["diaObjectId"].tolist() == [OBJECT_ID]
    assert objects["ra"].iloc[0] == pytest.approx(RA) and objects["dec"].iloc[0] == pytest.approx(DEC)
    assert objects["nDiaSources"].tolist() == [1]
    sources = apdb.getDiaSources(region, [OBJECT_ID], visit_time)
    assert sources is not None
    assert sources[["diaSourceId", "diaObjectId", "visit", "detector"]].values.tolist() == [
        [SOURCE_ID, OBJECT_ID, VISIT, DETECTOR]]
    forced = apdb.getDiaForcedSources(region, [OBJECT_ID], visit_time)
    assert forced is not None
    assert forced[["diaForcedSourceId", "diaObjectId", "visit", "detector"]].values.tolist() == [
        [FORCED_SOURCE_ID, OBJECT_ID, VISIT, DETECTOR]]
    assert apdb.containsVisitDetector(VISIT, DETECTOR, region, visit_time)
    assert not apdb.containsVisitDetector(VISIT, OTHER_DETECTOR, region, visit_time)

    elsewhere = Circle(UnitVector3d(LonLat.fromDegrees(RA + 10, DEC)), Angle.fromDegrees(0.1))
    assert apdb.getDiaObjects(elsewhere).empty
