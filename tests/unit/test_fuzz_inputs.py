"""Fuzzing every input handler: whatever arrives, it is dead-lettered with a typed reason, ignored, or
accepted as sound; no input escapes as an untyped error (a worker would log it as a bug).

Framed Avro here resolves against the project's own schemas held in memory (the unit tier has no
registry); unknown schema ids against the real registry are fuzzed in
tests/integration/test_fuzzed_input.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from connectors.s3_notifications import RawObject
from connectors.sal_bridge_step import BridgeConfig, step
from connectors.sal_events import SalMessage, Writer
from connectors.sal_interface import METRIC, avro_schema
from connectors.sasquatch import SasquatchRecord, Unmapped
from streams.config import Settings
from streams.core.arrivals import GROUP_ID
from streams.core.instruments import parse_instruments
from streams.core.surveys import parse_surveys
from streams.errors import DecodeError, FieldTooLongError, WireFormatError
from streams.pipelines.shell import SAFE_VALUE, UnsafeValue, placeholder_values, render
from streams.serde.codec import MAX_MESSAGE_BYTES, Codec, frame, parse, write_datum
from streams.serde.records import (
    DetectorProgress,
    HeldSnap,
    Metric,
    NextVisit,
    NextVisitCanceled,
    RawImageAvailable,
    SalBridgeCheckpoint,
)
from streams.serde.schemas import Schema
from tests.fuzzing import (
    DEAD_LETTER_CLASSES,
    RAW_BUCKET,
    TRIED,
    Chain,
    Hostile,
    HostileWriter,
    Mixed,
    Sized,
    avro_encoder,
    good_cancel,
    good_next_visit,
    good_raw,
    hostile,
    hostile_writers,
    metric_names,
    mixed_notifications,
    notifications,
    sized_records,
)

ROOT = "/data/repo"
NOW = 1.8e9
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])


class SchemasInMemory:
    """The project's schemas by id, for the unit tier (the integration tier uses the real registry)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, Schema] = {}

    def register(self, subject: str, schema: Schema) -> int:
        """The subject's id, new on first use."""
        if subject not in self._ids:
            self._ids[subject] = len(self._ids) + 1
            self._schemas[self._ids[subject]] = schema
        return self._ids[subject]

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The schema, or None for an unknown id."""
        return self._schemas.get(schema_id)


CODEC = Codec(SchemasInMemory())
CHAIN = Chain(codec=CODEC, instruments=parse_instruments('[LSSTComCam]\ndetectors = "0-8"\n'),
              surveys=parse_surveys('[surveys]\n"BLOCK-*" = ["stand-in"]\n'), policy=Settings().policy(),
              data_root=ROOT, now=NOW)
NEXT_VISITS = hostile(good_next_visit("2026-11-25T03:00:00.000", NOW), ROOT,
                      avro_encoder(CODEC, "nv", NextVisit))
RAWS = hostile(good_raw("2026-11-25T03:00:00.000", ROOT, NOW), ROOT,
               avro_encoder(CODEC, "raw", RawImageAvailable))
CANCELS = hostile(good_cancel("2026-11-25T03:00:00.000", NOW), ROOT,
                  avro_encoder(CODEC, "cancel", NextVisitCanceled))


DEEP_JSON = Hostile(b'{"groupId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep JSON")


@EXAMPLES
@given(NEXT_VISITS)
@example(DEEP_JSON)
def test_next_visits_are_refused_ignored_or_sound(item: Hostile) -> None:
    """A hostile nextVisit is dead-lettered or ignored; one accepted is a visit the core can plan."""
    if CHAIN.outcome("next_visit", item.data) == "accepted":
        visit = CODEC.decode(item.data, NextVisit, accept_json=True)
        assert visit.instrument == "LSSTComCam" and GROUP_ID.match(visit.groupId), item.how
        assert math.isfinite(visit.duration) and 0 <= visit.nimages <= 100, item.how
        assert abs(visit.private_sndStamp - NOW) <= 3600, item.how


@EXAMPLES
@given(RAWS)
@example(DEEP_JSON)
def test_raw_arrivals_are_refused_or_sound(item: Hostile) -> None:
    """A hostile raw arrival is dead-lettered; one accepted names a real detector and a file under the root."""
    if CHAIN.outcome("raw_image_available", item.data) == "accepted":
        raw = CODEC.decode(item.data, RawImageAvailable, accept_json=True)
        assert raw.detector in range(9) and 0 <= raw.snap < 100, item.how
        assert raw.uri.startswith(f"file://{ROOT}/") and "/../" not in raw.uri + "/", item.how
        assert 0 <= raw.size_bytes <= 1 << 32, item.how


@EXAMPLES
@given(CANCELS)
def test_cancellations_are_refused_or_ignored(item: Hostile) -> None:
    """A cancellation of no visit in flight is ignored; undecodable ones are dead-lettered."""
    assert CHAIN.outcome("next_visit_canceled", item.data) in ("dead-letter", "ignored"), item.how


@EXAMPLES
@given(notifications())
@example(Hostile(b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, '
                 b'"object": {"key": "k", "size": Infinity}}}]}', "infinite size"))
def test_bucket_notifications_are_refused_or_parsed(item: Hostile) -> None:
    """A hostile S3 notification is refused with a typed error or parsed into raws of real detectors."""
    CHAIN.outcome("s3_notification", item.data)


CAP = 5
"""A small PROMPT_STREAMS_S3_MAX_RECORDS, so the fuzzed notifications (up to 12 records) often exceed it."""


def same_json(data: bytes, value: object) -> bool:
    """`data` holds `value` (compared as JSON text, so NaN equals itself)."""
    return json.dumps(json.loads(data)) == json.dumps(value)


WRONG_TYPES_ONCE_DROPPED = [{"eventName": {"x": 1}, "s3": {"bucket": {"name": RAW_BUCKET}, "object": {"key": "k"}}},
                            {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": 5}, "object": {"key": "k"}}}]
"""The issue's two silent drops: eventName an object, a bucket name a number."""


@EXAMPLES
@given(mixed_notifications())
@example(Mixed(json.dumps({"Records": WRONG_TYPES_ONCE_DROPPED}).encode(), WRONG_TYPES_ONCE_DROPPED,
               ["dead-letter", "dead-letter"]))
def test_each_record_of_a_notification_has_its_own_fate(item: Mixed) -> None:
    """In a notification mixing good, bad and foreign records, each good one is resolved whatever its
    neighbours hold, each bad one is its own dead letter holding only that record (refused again for the same
    reason when sent alone), and the records beyond the cap are one dead letter that names the setting."""
    chain = replace(CHAIN, max_records=CAP)
    parts = chain.notification(item.data)
    records = item.records
    handled = item.expected[:CAP]
    assert len(parts) == len(handled) + (len(item.expected) > CAP), item
    for expected, (outcome, part), record in zip(handled, parts, records, strict=False):
        assert expected in ("any", outcome), (expected, outcome, part, item)
        if outcome == "needs storage":
            assert isinstance(part.outcome, RawObject)
            assert part.outcome.uri == f"s3://{RAW_BUCKET}/{record['s3']['object']['key']}", item
        if outcome == "dead-letter":
            assert part.value == item.data if len(records) == 1 else same_json(part.value, {"Records": [record]})
            [(again, alone)] = chain.notification(part.value)
            assert again == "dead-letter" and str(alone.outcome) == str(part.outcome), (alone, part)
    if len(records) > CAP:
        outcome, part = parts[-1]
        assert outcome == "dead-letter" and same_json(part.value, {"Records": records[CAP:]}), item
        assert "PROMPT_STREAMS_S3_MAX_RECORDS" in str(part.outcome) and part.where.startswith(f"records {CAP + 1}-")


def progress_with(field: str, value: Any, tmp_path: Path) -> DetectorProgress:
    """A detector with one raw under the root, one field replaced."""
    snap = HeldSnap(snap=0, exposure_id=1, uri=(tmp_path / "repo" / "raw.fits").as_uri(), arrival_time=1.0)
    values: dict[str, Any] = {"instrument": "LSSTCam", "group_id": "2026-11-25T03:14:15.926", "detector": 94,
                              "survey": "BLOCK-365", "filters": "r_57", "snaps": [snap]}
    values[field] = value
    return DetectorProgress(**values)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    """A data root with one raw, and settings naming it."""
    tmp_path = tmp_path_factory.mktemp("shell")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "raw.fits").write_text("x")
    return tmp_path, Settings(data_root=str(tmp_path / "repo"), output_root=str(tmp_path / "out"))


@EXAMPLES
@given(field=st.sampled_from(["instrument", "group_id", "survey", "filters"]),
       value=st.text(max_size=30) | st.sampled_from(["x; rm -rf /", "$(id)", "`id`", "-rf", "a b", "a\nb", "..",
                                                     "--config=evil", "|cat", "&&", "'", '"', "\\", "{raws}"]))
def test_shell_placeholders_are_one_literal_argument_or_refused(field: str, value: str,
                                                                roots: tuple[Path, Settings]) -> None:
    """An event value reaches a shell pipeline's argv as exactly one inert argument, or is refused."""
    tmp_path, config = roots
    try:
        values = placeholder_values(progress_with(field, value, tmp_path), config, tmp_path / "out" / "x")
    except UnsafeValue:
        return
    placeholder = {"instrument": "{instrument}", "group_id": "{group}", "survey": "{survey}",
                   "filters": "{filter}"}[field]
    assert SAFE_VALUE.match(value) and not value.startswith("-")
    assert render(("cmd", placeholder), values) == ["cmd", value]


KAFKA_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""Kafka's rule for a topic name, written from its documentation (not from the bridge)."""
AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
BRIDGE = BridgeConfig(Writer(sal_index=1, subname="sal", origin=1, tai_minus_utc=37.0), log_rate=1.0, log_burst=3,
                      sasquatch_environment="dev")
SAL_METRIC = parse(avro_schema(METRIC))


@EXAMPLES
@given(metric_names())
def test_any_metric_name_gets_its_sal_event_and_a_valid_sasquatch_topic_or_a_reason(name: str) -> None:
    """Whatever a metric is called, the bridge's core sends its SAL event and either a Sasquatch record on a topic
    Kafka accepts, with an Avro field name, or `Unmapped` with a reason for the dead letter; it never raises."""
    metric = Metric(name=name, value=1.0, unit="s", instrument="LSSTCam", group_id="g", detector=1, timestamp=NOW)
    _, (sal, sasquatch) = step(SalBridgeCheckpoint(), metric, NOW, BRIDGE)
    assert isinstance(sal, SalMessage) and sal.datum["name"] == name
    write_datum(SAL_METRIC, sal.datum)
    if isinstance(sasquatch, Unmapped):
        # Characters are made valid (as Avro names); only a name too long for any topic is unmapped.
        assert sasquatch.reason and len("lsst.prompt.dev.metric_" + name) > 249, name
    else:
        assert isinstance(sasquatch, SasquatchRecord) and KAFKA_TOPIC.fullmatch(sasquatch.topic), sasquatch.topic
        field = sasquatch.schema["fields"][-1]["name"]
        assert AVRO_NAME.fullmatch(field) and sasquatch.datum[field] == 1.0
        write_datum(parse(sasquatch.schema), sasquatch.datum)


@EXAMPLES
@given(hostile_writers())
def test_hostile_writer_schemas_are_refused_or_read_in_proportion_to_the_bytes(item: HostileWriter) -> None:
    """Whatever writer schema the registry holds for an id (arrays of nulls or of blindly skipped items, huge
    counts and fixed sizes, records of nextVisit's name with nothing of it), a message framed with that id is a
    nextVisit or a typed dead letter, and so is the same message read with its own schema; neither loops."""
    registry = SchemasInMemory()
    data = frame(registry.register("hostile", item.schema), item.payload)
    codec = Codec(registry)
    reads: list[tuple[str, Callable[[], object]]] = [("as nextVisit", lambda: codec.decode(data, NextVisit)),
                                                     ("as is", lambda: codec.decode_any(data))]
    for name, read in reads:
        try:
            read()
        except DecodeError as error:
            assert type(error).__name__ in DEAD_LETTER_CLASSES, (error, item.how)
            TRIED[f"hostile writer schema, read {name}: dead-letter"] += 1
        else:
            TRIED[f"hostile writer schema, read {name}: read"] += 1


@EXAMPLES
@given(sized_records(), st.booleans())
def test_fields_over_their_limits_are_dead_letters_naming_them(item: Sized, as_json: bool) -> None:
    """An input record with a string, an array or a map over the limit its schema declares is a FieldTooLongError
    naming the field, its size and its limit, in Avro and in JSON; at its limit it is read back unchanged."""
    record = item.record
    record_type = type(record)
    data = json.dumps(record.to_dict()).encode() if as_json else CODEC.encode(f"sized-{record.SCHEMA}", record)
    if len(data) > MAX_MESSAGE_BYTES:
        with pytest.raises(WireFormatError, match="byte limit"):
            CODEC.decode(data, record_type, accept_json=as_json)
        TRIED["record over the message limit"] += 1
    elif item.size > item.limit:
        with pytest.raises(FieldTooLongError, match=rf"{record_type.__name__}\.{item.field} (is|has) {item.size} "
                                                     rf".* over its limit of {item.limit}"):
            CODEC.decode(data, record_type, accept_json=as_json)
        TRIED["field over its limit"] += 1
    else:
        assert CODEC.decode(data, record_type, accept_json=as_json).to_dict() == record.to_dict(), item
        TRIED["field within its limit"] += 1
