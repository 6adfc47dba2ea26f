"""Alert packets in Rubin's official schema, checked by Rubin's own package (lsst.alert.packet)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from lsst.alert.packet import get_latest_schema_version, get_schema_path

from streams.science.cutouts import cutout
from streams.serde.alert_packets import (
    SCHEMA_VERSION,
    packet,
    read_packets,
    required_fields,
    schema,
    schema_json,
    validate,
    write_packets,
)

SAMPLE_DATA = Path(get_schema_path(*SCHEMA_VERSION)) / "sample_data"


def stamps() -> tuple[bytes, bytes, bytes]:
    """Difference, science and template stamps of a source, as FITS bytes."""
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.1, -30.2]
    wcs.wcs.crpix = [50.0, 50.0]
    wcs.wcs.cd = np.array([[-0.2, 0.0], [0.0, 0.2]]) / 3600
    image = np.random.default_rng(3).normal(size=(100, 100)).astype(np.float32)
    difference, science, template = (cutout(image * k, wcs, 49.3, 50.6).fits for k in (1, 2, 3))
    return difference, science, template


def apdb_source(source_id: int, visit: int, mjd: float) -> dict[str, Any]:
    """A DiaSource row as the APDB gives it: numpy scalars, NaN for gaps, extra columns."""
    return {
        "diaSourceId": np.int64(source_id), "visit": np.int64(visit), "detector": np.int16(94),
        "diaObjectId": np.int64(7001), "ssObjectId": np.nan, "parentDiaSourceId": np.int64(0),
        "midpointMjdTai": np.float64(mjd), "ra": np.float64(150.10012), "dec": np.float64(-30.19987),
        "raErr": np.float32(1.5e-5), "decErr": np.float32(np.nan), "ra_dec_Cov": None,
        "x": np.float32(1000.25), "y": np.float32(2000.75), "xErr": np.float32(0.04), "yErr": np.float32(np.nan),
        "psfFlux": np.float32(1234.5), "psfFluxErr": np.float32(12.25), "snr": np.float32(98.7),
        "psfNdata": np.float64(441.0),  # an integer column with gaps: pandas made it float
        "trailNdata": np.int32(0), "dipoleNdata": np.int32(0), "bboxSize": np.int64(17),
        "band": np.str_("r"), "reliability": np.float32(0.93), "reliabilityVersion": None,
        "centroid_flag": np.True_, "isDipole": np.False_, "pixelFlags_edge": False, "glint_trail": 0,
        "timeProcessedMjdTai": np.float64(mjd + 0.001), "timeWithdrawnMjdTai": np.nan,
        "ssObjectReassocTimeMjdTai": np.nan, "pixelId": np.int64(123456789),  # not in the alert schema
    }


def apdb_object() -> dict[str, Any]:
    """A DiaObject row as the APDB gives it."""
    row: dict[str, Any] = {
        "diaObjectId": np.int64(7001), "validityStartMjdTai": np.float64(60900.1),
        "validityEndMjdTai": np.nan, "pixelId": np.int64(123456789),  # not in the alert schema
        "ra": np.float64(150.10011), "dec": np.float64(-30.19988), "raErr": np.float32(np.nan),
        "r_psfFluxMean": np.float32(1200.5), "r_psfFluxSigma": np.float32(np.nan), "g_psfFluxMean": np.nan,
        "nDiaSources": np.int64(3), "firstDiaSourceMjdTai": np.float64(60880.2),
        "lastDiaSourceMjdTai": np.float64(60900.1),
    }
    row.update({f"{band}_psfFluxNdata": np.int32(3 if band == "r" else 0) for band in "ugrizy"})
    return row


def apdb_forced(forced_id: int, visit: int, mjd: float) -> dict[str, Any]:
    """A DiaForcedSource row as the APDB gives it."""
    return {
        "diaForcedSourceId": np.int64(forced_id), "diaObjectId": np.int64(7001), "ra": np.float64(150.10011),
        "dec": np.float64(-30.19988), "visit": np.int64(visit), "detector": np.int16(94),
        "psfFlux": np.float32(-15.5), "psfFluxErr": np.float32(11.0), "midpointMjdTai": np.float64(mjd),
        "scienceFlux": np.float32(np.nan), "band": "g", "timeProcessedMjdTai": np.float64(mjd + 0.001),
        "timeWithdrawnMjdTai": None,
    }


def alert_from_rows() -> dict[str, Any]:
    """An alert for a source with two earlier detections and two forced measurements."""
    return packet(apdb_source(9003, 2025120100300, 60900.1), apdb_object(),
                  [apdb_source(9001, 2025110100100, 60880.2), apdb_source(9002, 2025111500200, 60890.3)],
                  [apdb_forced(8001, 2025110500150, 60884.0), apdb_forced(8002, 2025112000250, 60895.0)],
                  stamps(), observation_reason="wfd", target_name="lowdust")


def test_schema_is_the_newest_the_package_ships() -> None:
    """The packets follow the newest alert schema of lsst.alert.packet, loaded from the package."""
    assert tuple(get_latest_schema_version()) == SCHEMA_VERSION
    major, minor = SCHEMA_VERSION
    assert schema().definition["name"] == f"lsst.v{major}_{minor}.alert"
    assert schema() is schema(), "loaded once"


def test_schema_json_is_one_self_contained_document_for_a_registry() -> None:
    """The schema as one JSON document parses alone and writes records the package's schema reads."""
    document = json.loads(schema_json())
    assert "__fastavro_parsed" not in schema_json() and "__named_schemas" not in schema_json()
    parsed = fastavro.parse_schema(document)
    assert fastavro.schema.to_parsing_canonical_form(parsed) == \
        fastavro.schema.to_parsing_canonical_form(schema().definition), "the same schema as the package's"
    alert = alert_from_rows()
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, parsed, alert)
    assert schema().deserialize(buffer.getvalue()) == alert


def test_packet_from_apdb_rows_is_valid_and_round_trips(tmp_path: Path) -> None:
    """APDB rows (numpy types, NaN, extra columns) give a packet the package validates; it survives a file."""
    alert = alert_from_rows()
    assert schema().validate(alert), "valid for lsst.alert.packet"
    validate(alert)
    assert schema().deserialize(schema().serialize(alert)) == alert, "nothing lost or rounded in Avro"
    source = alert["diaSource"]
    assert alert["diaSourceId"] == source["diaSourceId"] == 9003
    assert type(source["psfNdata"]) is int and source["psfNdata"] == 441
    assert source["centroid_flag"] is True and source["isDipole"] is False and source["glint_trail"] is False
    assert type(source["band"]) is str and type(source["ra"]) is float
    assert source["decErr"] is None and source["ssObjectId"] is None and source["timeWithdrawnMjdTai"] is None
    assert "pixelId" not in source and "validityEndMjdTai" not in alert["diaObject"]
    assert alert["diaObject"]["r_psfFluxNdata"] == 3 and alert["diaObject"]["g_psfFluxMean"] is None
    assert [row["diaSourceId"] for row in alert["prvDiaSources"]] == [9001, 9002]
    assert [row["diaForcedSourceId"] for row in alert["prvDiaForcedSources"]] == [8001, 8002]
    assert alert["ssSource"] is None and alert["mpc_orbits"] is None

    path = tmp_path / "alerts.avro"
    assert write_packets(path, [alert, alert_from_rows()]) == 2
    assert read_packets(path) == [alert, alert]
    with path.open("rb") as file:
        written: Any = fastavro.reader(file).writer_schema
        assert written["name"] == schema().definition["name"], "the schema is in the file"
    with path.open("rb") as file:
        _, records = schema().retrieve_alerts(file)
        assert list(records) == [alert, alert], "the package reads the file"
    for key in ("cutoutDifference", "cutoutScience", "cutoutTemplate"):
        with fits.open(io.BytesIO(read_packets(path)[0][key])) as hdus:
            assert hdus[0].data.shape == (30, 30)


def test_a_row_with_only_the_required_fields_is_enough() -> None:
    """Rows filling just the schema's required fields (no null, no default) make a valid packet."""
    def minimal(record: str, row: dict[str, Any]) -> dict[str, Any]:
        return {name: row.get(name, 0) for name in required_fields(record)}

    alert = packet(minimal("diaSource", apdb_source(1, 2, 60900.0)), minimal("diaObject", apdb_object()), [],
                   [minimal("diaForcedSource", apdb_forced(3, 2, 60899.0))], (None, None, None))
    validate(alert)
    assert alert["prvDiaSources"] == [] and alert["diaSource"]["snr"] is None
    assert required_fields("diaSource")[:3] == ["diaSourceId", "visit", "detector"]


@pytest.mark.skipif(not (SAMPLE_DATA / "fakeAlert.avro").exists(), reason="the package ships no sample alert")
def test_the_packages_sample_alert_passes_through_unchanged() -> None:
    """lsst.alert.packet's sample alert, rebuilt from its parts, is the same alert (its id: its source's)."""
    with (SAMPLE_DATA / "fakeAlert.avro").open("rb") as file:
        _, records = schema().retrieve_alerts(file)
        samples = list(records)
    assert samples
    for sample in samples:
        rebuilt = packet(sample["diaSource"], sample["diaObject"], sample["prvDiaSources"],
                         sample["prvDiaForcedSources"],
                         (sample["cutoutDifference"], sample["cutoutScience"], sample["cutoutTemplate"]),
                         sample["observation_reason"], sample["target_name"])
        # The sample's top-level id (1231321321) is not its diaSource's; an alert's id is its source's.
        assert rebuilt == {**sample, "diaSourceId": sample["diaSource"]["diaSourceId"]}

    if (SAMPLE_DATA / "alert.json").exists():
        data = json.loads((SAMPLE_DATA / "alert.json").read_text())
        from_json = packet(data["diaSource"], data.get("diaObject"), data.get("prvDiaSources"),
                           data.get("prvDiaForcedSources"), (None, None, None))
        assert schema().deserialize(schema().serialize(from_json)) == \
            {**samples[0], "diaSourceId": samples[0]["diaSource"]["diaSourceId"]}, "the JSON the sample was made of"


@pytest.mark.parametrize(("record", "field", "value"), [
    ("diaSource", "psfNdata", "absent"),
    ("diaSource", "ra", np.nan),
    ("diaObject", "nDiaSources", None),
    ("prvDiaSources", "timeProcessedMjdTai", "absent"),
    ("prvDiaForcedSources", "midpointMjdTai", np.float64(np.nan)),
])
def test_missing_required_field_is_refused_by_name(record: str, field: str, value: Any) -> None:
    """A row without a value the schema requires raises ValueError naming the record and field."""
    rows: dict[str, Any] = {
        "diaSource": apdb_source(1, 2, 60900.0), "diaObject": apdb_object(),
        "prvDiaSources": apdb_source(4, 5, 60890.0), "prvDiaForcedSources": apdb_forced(3, 2, 60899.0),
    }
    if value == "absent":
        del rows[record][field]
    else:
        rows[record][field] = value
    with pytest.raises(ValueError, match=rf"{record}\.{field}\b.*required"):
        packet(rows["diaSource"], rows["diaObject"], [rows["prvDiaSources"]], [rows["prvDiaForcedSources"]],
               (None, None, None))


def test_a_value_of_the_wrong_kind_is_refused_by_name() -> None:
    """A string where a number belongs, or a fractional count, raises ValueError naming the field."""
    source = apdb_source(1, 2, 60900.0)
    with pytest.raises(ValueError, match=r"diaSource\.psfFlux\b"):
        packet({**source, "psfFlux": "bright"}, None, [], [], (None, None, None))
    with pytest.raises(ValueError, match=r"diaSource\.psfNdata\b.*not an integer"):
        packet({**source, "psfNdata": 2.5}, None, [], [], (None, None, None))
    with pytest.raises(ValueError, match=r"diaSource\.centroid_flag\b"):
        packet({**source, "centroid_flag": "yes"}, None, [], [], (None, None, None))


def test_validate_says_what_does_not_conform() -> None:
    """validate() passes a good packet and names the field of a bad one."""
    alert = alert_from_rows()
    validate(alert)
    alert["diaSource"]["psfNdata"] = None
    with pytest.raises(ValueError, match="psfNdata"):
        validate(alert)


def test_write_is_all_or_nothing(tmp_path: Path) -> None:
    """A write that fails midway leaves the previous file intact and no temporary file behind."""
    path = tmp_path / "alerts.avro"
    write_packets(path, [alert_from_rows()])

    def failing() -> Any:
        yield alert_from_rows()
        raise RuntimeError("the producer died")

    with pytest.raises(RuntimeError):
        write_packets(path, failing())
    assert len(read_packets(path)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["alerts.avro"]
    (tmp_path / "plain").write_bytes(b"")
    assert path.stat().st_mode == (tmp_path / "plain").stat().st_mode, "permissions of any new file, not 0600"
    assert write_packets(tmp_path / "empty.avro", []) == 0 and read_packets(tmp_path / "empty.avro") == []


@pytest.mark.filterwarnings("ignore:The inplace keyword")  # inside lsst.dax.apdb, with pandas 3
def test_rows_of_a_real_apdb_make_valid_packets(tmp_path: Path) -> None:
    """Rows read back from an APDB (lsst.dax.apdb on SQLite: nullable pandas types, pandas NA) are accepted."""
    pd = pytest.importorskip("pandas")
    apdb_module = pytest.importorskip("lsst.dax.apdb")
    sphgeom = pytest.importorskip("lsst.sphgeom")
    from astropy.time import Time

    apdb = apdb_module.Apdb.from_config(apdb_module.ApdbSql.init_database(f"sqlite:///{tmp_path / 'apdb.db'}"))
    # Columns the APDB fills itself, and gaps it stores as NULL anyway.
    left_out = ["pixelId", "ssObjectId", "ssObjectReassocTimeMjdTai", "validityEndMjdTai", "ra_dec_Cov",
                "reliabilityVersion", "timeWithdrawnMjdTai"]
    sources = pd.DataFrame([apdb_source(9001, 1, 60880.2), apdb_source(9002, 2, 60890.3)])
    objects = pd.DataFrame([apdb_object()])
    forced = pd.DataFrame([apdb_forced(8001, 1, 60884.0)])
    sources, objects, forced = (frame.drop(columns=left_out, errors="ignore") for frame in (sources, objects, forced))
    apdb.store(Time(60890.4, format="mjd", scale="tai"), objects, sources, forced)

    region = sphgeom.Circle(sphgeom.UnitVector3d(sphgeom.LonLat.fromDegrees(150.1, -30.2)),
                            sphgeom.Angle.fromDegrees(0.1))
    later = Time(60900.0, format="mjd", scale="tai")
    read_objects = apdb.getDiaObjects(region)
    read_sources = apdb.getDiaSources(region, [7001], later)
    read_forced = apdb.getDiaForcedSources(region, [7001], later)
    assert len(read_objects) == 1 and len(read_sources) == 2 and len(read_forced) == 1

    as_dicts = packet(read_sources.to_dict("records")[1], read_objects.to_dict("records")[0],
                      read_sources.to_dict("records")[:1], read_forced.to_dict("records"), stamps())
    as_series = packet(read_sources.iloc[1], read_objects.iloc[0], [read_sources.iloc[0]],
                       [read_forced.iloc[0]], stamps())
    validate(as_dicts)
    assert as_series == as_dicts, "pandas rows (numpy scalars, pandas NA) and dict rows agree"
    assert as_dicts["diaSource"]["ssObjectId"] is None and as_dicts["diaSource"]["psfNdata"] == 441
    assert as_dicts["diaSource"]["centroid_flag"] is True and as_dicts["diaSource"]["apFlux_flag"] is None
    assert math.isclose(as_dicts["diaObject"]["r_psfFluxMean"], 1200.5)
