"""Metrics in analysis_tools' Sasquatch dispatcher layout."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from connectors.sasquatch import (
    TOPIC_LIMIT,
    SasquatchRecord,
    Unmapped,
    avro_name,
    day_obs,
    environment_problem,
    sasquatch_record,
    topic_problem,
)
from streams.serde.codec import parse, read_datum, write_datum
from streams.serde.records import Metric

METRIC = Metric(name="prep_butlerTotalTime", value=0.25, unit="s", instrument="LSSTCam",
                group_id="2026-11-25T03:14:15.926", detector=94, survey="BLOCK-365",
                timestamp=1_795_000_000.0 + 37, tags={"band": "r"})


def test_a_per_ccd_metric_becomes_a_dispatcher_record() -> None:
    """Topic and schema lsst.prompt.<env>.<metric>; UTC timestamps; data id as strings; one float."""
    record = sasquatch_record(METRIC, "prod", 37.0)
    assert record is not None
    assert record.topic == "lsst.prompt.prod.prep_butlerTotalTime"
    assert (record.schema["namespace"], record.schema["name"]) == ("lsst.prompt.prod", "prep_butlerTotalTime")
    names = [f["name"] for f in record.schema["fields"]]
    assert names[:9] == ["id", "run", "dataset_type", "reference_package", "reference_package_version",
                         "reference_package_timestamp", "run_timestamp", "timestamp", "dataset_tag"]
    assert names[9:] == ["instrument", "detector", "group", "band", "day_obs", "tags", "prep_butlerTotalTime"]
    datum = record.datum
    assert datum["timestamp"] == 1_795_000_000.0 and datum["detector"] == "94" and datum["band"] == "r"
    assert datum["dataset_tag"] == "Live" and datum["prep_butlerTotalTime"] == 0.25
    schema = parse(record.schema)
    assert read_datum(write_datum(schema, datum), schema, schema)["group"] == METRIC.group_id


def test_per_visit_metrics_have_no_detector_and_nan_is_not_sent() -> None:
    """The dispatcher skips NaN; a per-visit metric's data id has no detector."""
    visit = sasquatch_record(replace(METRIC, name="nextVisitToSummaryTime", detector=-1), "prod", 37.0)
    assert visit is not None and "detector" not in visit.datum
    assert sasquatch_record(replace(METRIC, value=math.nan), "prod", 37.0) is None


def test_names_become_avro_names_and_day_obs_rolls_over_at_noon() -> None:
    """Odd metric names are made valid; day_obs is the UTC date 12 h earlier."""
    assert avro_name("psf.fwhm-arcsec") == "psf_fwhm_arcsec" and avro_name("3sigma") == "_3sigma"
    assert avro_name("timestamp") == "metric_timestamp", "a measurement cannot shadow a bookkeeping field"
    odd = sasquatch_record(replace(METRIC, name="timestamp"), "prod", 37.0)
    assert odd is not None and parse(odd.schema) and odd.datum["metric_timestamp"] == 0.25
    assert day_obs(1_795_000_000.0) == "20261117"  # 2026-11-18T11:06Z minus 12 h
    assert day_obs(1_795_000_000.0 + 3600) == "20261118"  # 12:06Z: the next day_obs has begun


@pytest.mark.parametrize(("topic", "valid"), [
    ("lsst.prompt.prod.prep_butlerTotalTime", True), ("a" * TOPIC_LIMIT, True), ("a-b_c.D9", True),
    ("a" * (TOPIC_LIMIT + 1), False), ("lsst.prompt.prod.psf fwhm", False), ("lsst.prompt.prod.é", False),
    ("lsst/prompt", False), ("a\nb", False), ("", False), (".", False), ("..", False),
])
def test_topic_names_follow_kafkas_rule(topic: str, valid: bool) -> None:
    """At most 249 characters of [A-Za-z0-9._-], not "." or "..": otherwise a reason, never an exception."""
    problem = topic_problem(topic)
    assert (problem is None) == valid, problem
    if len(topic) > TOPIC_LIMIT:
        assert problem is not None and f"{len(topic)} characters long" in problem and "249" in problem


def test_a_metric_whose_topic_kafka_would_refuse_is_unmapped_with_the_reason() -> None:
    """lsst.prompt.prod. takes 17 characters: a 232-character name fits, a 233-character one does not."""
    longest = sasquatch_record(replace(METRIC, name="m" * (TOPIC_LIMIT - 17)), "prod", 37.0)
    assert isinstance(longest, SasquatchRecord) and len(longest.topic) == TOPIC_LIMIT
    too_long = sasquatch_record(replace(METRIC, name="m" * (TOPIC_LIMIT - 16)), "prod", 37.0)
    assert isinstance(too_long, Unmapped)
    assert "250 characters long" in too_long.reason and "has no Sasquatch topic" in too_long.reason
    huge = sasquatch_record(replace(METRIC, name="x" * 1_000_000), "prod", 37.0)
    assert isinstance(huge, Unmapped) and len(huge.reason) < 400, "the reason quotes the start of the name"
    assert sasquatch_record(replace(METRIC, name="x" * 1_000_000, value=math.nan), "prod", 37.0) is None


def test_an_environment_no_topic_could_be_named_in_is_a_start_up_problem() -> None:
    """The bridge refuses to start with such an environment rather than dead-letter every metric."""
    assert environment_problem("prod") is None and environment_problem("usdf-dev_1") is None
    assert environment_problem("prod/x") is not None and environment_problem("e" * 240) is not None
