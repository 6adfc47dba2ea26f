"""Bucket notifications, record by record: parsing and checking (the pure core), then sidecar reads against
moto's in-process S3 and what the processor stages (its `apply` on stand-in messages: no Kafka)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from connectors import s3_notifications
from connectors.s3_notifications import (
    NAME,
    Ignored,
    RawObject,
    S3Notifications,
    arrival,
    check_record,
    part_dead_letter,
    raw_object,
    records_of,
    resolve,
    triage,
)
from streams.config import Settings
from streams.core.arrivals import check_raw
from streams.core.instruments import parse_instruments
from streams.data.storage import ObjectMissing, Storage
from streams.errors import InvalidEventError, RetriableError, SchemaMismatchError, WireFormatError
from streams.observability import metrics
from streams.runtime.engine import Batch
from streams.serde.records import DeadLetter, RawImageAvailable
from tests.unit.fake_kafka import FakeMessage, offline
from topology.graph import declare_graph
from topology.keys import snap_key

BUCKET = "rubin-summit"
BUCKETS = frozenset({BUCKET})
KEY = "LSSTCam/20250501/MC_O_20250501_000367/MC_O_20250501_000367_R22_S11.fits"
OTHER_KEY = KEY.replace("R22_S11", "R22_S12")
GROUP = "2025-05-01T03:04:05.678"


def record(key: Any = KEY, *, bucket: Any = BUCKET, event: Any = "ObjectCreated:Put", size: Any = 123,
           ) -> dict[str, Any]:
    """One S3 event record as Ceph sends it."""
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size}}}


def notification(*records: Any) -> bytes:
    """An S3 event notification of these records."""
    return json.dumps({"Records": list(records)}).encode()


def sidecar_of(key: str) -> str:
    """The sidecar's key beside a raw's."""
    return key.removesuffix(".fits") + ".json"


# -- the pure core --------------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [b"", b"[]", b"{}", b'{"Records": []}', b'{"Records": {}}', b"\xff",
                                     b'{"Records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])
def test_what_is_no_notification_at_all_is_refused_whole(payload: bytes) -> None:
    """Anything without a non-empty Records list is one wire-format error (one dead letter of its bytes)."""
    with pytest.raises(WireFormatError):
        records_of(payload)


def test_raw_key_gives_instrument_detector_and_exposure() -> None:
    """R22_S11 is LSSTCam detector 94; obs_id MC_O_20250501_000367 is exposure 2025050100367."""
    raw = raw_object(BUCKET, KEY, 5)
    assert raw is not None
    assert (raw.instrument, raw.detector, raw.exposure_id) == ("LSSTCam", 94, 2025050100367)
    assert raw.uri == f"s3://{BUCKET}/{KEY}"
    assert raw.sidecar_uri == f"s3://{BUCKET}/{sidecar_of(KEY)}"


def test_records_not_for_us_are_ignored_sidecars_quietly() -> None:
    """Other events than creations, sidecars and other files are logged and dropped, not dead-lettered."""
    assert check_record(record(sidecar_of(KEY)), BUCKETS) == Ignored(f"s3://{BUCKET}/{sidecar_of(KEY)} is a sidecar",
                                                                     quiet=True)
    assert check_record(record("LSSTCam/README.txt"), BUCKETS) == Ignored(
        f"s3://{BUCKET}/LSSTCam/README.txt is not a raw")
    assert check_record(record(event="ObjectRemoved:Delete"), BUCKETS) == Ignored(
        "event 'ObjectRemoved:Delete' is not an object creation")


def test_a_detector_the_camera_lacks_is_invalid() -> None:
    """A corner-raft (R00) key on LSSTCam names no science detector."""
    with pytest.raises(InvalidEventError, match="no detector R00_S11"):
        check_record(record(KEY.replace("R22_S11", "R00_S11")), BUCKETS)


@pytest.mark.parametrize(("changed", "reason"), [
    (record(event={"name": "ObjectCreated:Put"}), "eventName is dict"),
    (record(bucket=12345), "s3.bucket.name is int"),
    (record(key=["a"]), "s3.object.key is list"),
    (record(size=-1), "s3.object.size -1"),
    (record(size="123"), "s3.object.size '123'"),
    (record(size=True), "s3.object.size True"),
    ({"eventName": "ObjectCreated:Put"}, "no s3.bucket.name"),
    ("ObjectCreated:Put", "no eventName"),
])
def test_records_of_the_wrong_types_are_refused_with_the_reason(changed: Any, reason: str) -> None:
    """A record with an object for eventName or a number for a bucket was once dropped silently: now refused."""
    with pytest.raises(SchemaMismatchError, match=reason):
        check_record(changed, BUCKETS)


@pytest.mark.parametrize("key", ["LSSTCam/../../etc/passwd", "LSSTCam/20250501/%2e%2e/x.fits", "../x.fits",
                                 "/LSSTCam/x.fits", "LSSTCam/./x.fits", "LSSTCam/x%00.fits", "LSSTCam/a\nb.fits",
                                 "LSSTCam/x/..", KEY.replace("LSSTCam/", "LSSTCam/../LSSTCam/")])
def test_keys_that_are_not_plain_relative_paths_are_refused(key: str) -> None:
    """A key with `..` (once dropped silently as `not a raw`) or `.` parts, a leading `/` or control characters."""
    with pytest.raises(InvalidEventError, match="not a plain relative path"):
        check_record(record(key), BUCKETS)


@pytest.mark.parametrize("key", ["", "x" * 1025])
def test_keys_s3_would_not_have_are_refused(key: str) -> None:
    """S3 keys are 1 to 1024 bytes."""
    with pytest.raises(InvalidEventError, match="S3 keys have 1 to 1024"):
        check_record(record(key), BUCKETS)


@pytest.mark.parametrize("bucket", ["other-bucket", "rubin-summit-evil", "RUBIN-SUMMIT", "", " rubin-summit"])
def test_a_creation_in_a_bucket_not_configured_is_refused(bucket: str) -> None:
    """The bucket comes from the event: only those of PROMPT_STREAMS_RAW_BUCKETS are read."""
    with pytest.raises(InvalidEventError, match="is not one of PROMPT_STREAMS_RAW_BUCKETS"):
        check_record(record(bucket=bucket), BUCKETS)


def test_each_record_has_its_own_fate() -> None:
    """Good records around bad ones are raws all the same; each bad one is refused with its own reason, in order."""
    records = [record(), record(bucket="elsewhere"), record("LSSTCam/../x.fits"), record(event={"x": 1}),
               record(bucket=7), record(sidecar_of(KEY)), record(OTHER_KEY)]
    parts = triage(notification(*records), BUCKETS, 100)
    assert [part.where for part in parts] == [f"record {n} of 7" for n in range(1, 8)]
    kinds = [type(part.outcome) for part in parts]
    assert kinds == [RawObject, InvalidEventError, InvalidEventError, SchemaMismatchError, SchemaMismatchError,
                     Ignored, RawObject]
    assert [json.loads(part.value) for part in parts] == [{"Records": [r]} for r in records]


def test_a_one_record_notification_keeps_its_own_bytes() -> None:
    """Its dead letter holds the original bytes, as the edge's dead letters do."""
    payload = b'{"Records": [ {"eventName": 5} ]}'
    [part] = triage(payload, BUCKETS, 100)
    assert part.value == payload and isinstance(part.outcome, SchemaMismatchError)


def test_records_beyond_the_cap_are_one_dead_letter() -> None:
    """With a cap of 3, records 4 and 5 are not read: one part holding both, with a reason naming the setting."""
    records = [record(KEY.replace("000367", f"{n:06d}")) for n in range(1, 6)]
    parts = triage(notification(*records), BUCKETS, 3)
    assert [type(part.outcome) for part in parts] == [RawObject, RawObject, RawObject, InvalidEventError]
    assert parts[-1].where == "records 4-5 of 5"
    assert json.loads(parts[-1].value) == {"Records": records[3:]}
    assert "PROMPT_STREAMS_S3_MAX_RECORDS" in str(parts[-1].outcome)


def test_the_dead_letter_of_a_record_says_which_and_why() -> None:
    """Origin of the notification, the record's position and error, and only that record's bytes."""
    bad = record(bucket="elsewhere")
    part = triage(notification(record(), bad), BUCKETS, 100)[1]
    assert isinstance(part.outcome, InvalidEventError)
    letter = part_dead_letter("prompt.s3-notifications", 2, 41, b"k", part, part.outcome, 5.0)
    assert (letter.topic, letter.partition, letter.offset, letter.key) == ("prompt.s3-notifications", 2, 41, b"k")
    assert letter.error_class == "InvalidEventError" and letter.agent == "s3-notifications"
    assert letter.reason.startswith("record 2 of 2: bucket 'elsewhere' is not one of PROMPT_STREAMS_RAW_BUCKETS")
    assert json.loads(letter.value or b"") == {"Records": [bad]}


def test_sidecar_gives_group_and_snap() -> None:
    """GROUPID is the group; CURINDEX counts snaps from 1; anything else in a sidecar is refused with the reason."""
    raw = raw_object(BUCKET, KEY, 9)
    assert raw is not None
    found = arrival(raw, json.dumps({"GROUPID": GROUP, "CURINDEX": 2}).encode(), 1.0)
    assert (found.group_id, found.snap, found.detector, found.size_bytes) == (GROUP, 1, 94, 9)
    for sidecar in (b'{"CURINDEX": 1}', b"[]", b"7", b'{"GROUPID": "g", "CURINDEX": 1e999}'):
        with pytest.raises(InvalidEventError, match="GROUPID"):
            arrival(raw, sidecar, 1.0)


# -- the shell: sidecar reads, and what the processor stages ---------------------------------------
def settings(**changes: Any) -> Settings:
    """Default settings (the raw bucket included), one sidecar try, S3 credentials moto accepts."""
    return replace(Settings.from_env({}), **{"sidecar_attempts": 1, "s3_access_key": "test", "s3_secret_key": "test"}
                   | changes)


def accept(found: RawImageAvailable) -> None:
    """The worker's own check of an arrival, with the project's instruments."""
    config = Settings()
    check_raw(found, parse_instruments(Path(config.instruments_file).read_text()), config.policy(), config.data_root)


def test_no_request_is_made_for_a_bucket_not_configured() -> None:
    """Only the configured bucket's sidecar is read; the other bucket's record is refused without a request."""
    read: list[str] = []

    def reader(uri: str) -> bytes:
        read.append(uri)
        return json.dumps({"GROUPID": GROUP}).encode()

    parts = resolve(notification(record(bucket="attacker-bucket"), record(), record(bucket=7)), settings(), reader,
                    accept)
    assert read == [f"s3://{BUCKET}/{sidecar_of(KEY)}"]
    assert [type(part.outcome) for part in parts] == [InvalidEventError, RawImageAvailable, SchemaMismatchError]


@pytest.fixture
def s3() -> Iterator[Any]:
    """moto's in-process S3 with the raw bucket."""
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="test",
                              aws_secret_access_key="test")
        client.create_bucket(Bucket=BUCKET)
        yield client


def test_sidecars_are_read_from_s3_record_by_record(s3: Any) -> None:
    """A raw with its sidecar arrives; one whose sidecar is missing, one with a bad sidecar and one for a detector
    the camera lacks are three dead letters; none of them costs the good raw, whichever order they come in."""
    lacking, bad, corner = (KEY.replace("000367", "000368"), KEY.replace("000367", "000369"),
                            KEY.replace("R22_S11", "R00_S11"))
    s3.put_object(Bucket=BUCKET, Key=sidecar_of(KEY), Body=json.dumps({"GROUPID": GROUP, "CURINDEX": 1}))
    s3.put_object(Bucket=BUCKET, Key=sidecar_of(bad), Body=b'{"CURINDEX": 1}')
    parts = resolve(notification(record(lacking), record(bad), record(), record(corner)), settings(),
                    Storage(settings()).read, accept)
    outcomes = [part.outcome for part in parts]
    assert isinstance(outcomes[0], InvalidEventError) and "sidecar of" in str(outcomes[0])
    assert isinstance(outcomes[1], InvalidEventError) and "GROUPID" in str(outcomes[1])
    assert isinstance(outcomes[2], RawImageAvailable)
    assert (outcomes[2].group_id, outcomes[2].detector, outcomes[2].snap) == (GROUP, 94, 0)
    assert isinstance(outcomes[3], InvalidEventError) and "R00_S11" in str(outcomes[3])


def test_a_sidecar_that_comes_late_is_read_on_a_later_try(monkeypatch: pytest.MonkeyPatch) -> None:
    """The storage may notify a raw before its sidecar: each try waits RETRY_SECONDS; the last one gives up."""
    waits: list[float] = []
    monkeypatch.setattr(s3_notifications.time, "sleep", waits.append)
    tries: list[str] = []

    def late(uri: str) -> bytes:
        tries.append(uri)
        if len(tries) < 3:
            raise ObjectMissing(f"{uri} does not exist")
        return json.dumps({"GROUPID": GROUP}).encode()

    [part] = resolve(notification(record()), settings(sidecar_attempts=3), late, accept)
    assert isinstance(part.outcome, RawImageAvailable) and len(tries) == 3
    assert waits == [s3_notifications.RETRY_SECONDS] * 2
    tries.clear()
    [part] = resolve(notification(record()), settings(sidecar_attempts=2), late, accept)
    assert isinstance(part.outcome, InvalidEventError) and "not found after 2 tries" in str(part.outcome)


def test_storage_down_is_no_records_fault() -> None:
    """An S3 5xx, a refused connection or a timeout (RetriableError from the storage) is raised, not a dead
    letter: the whole notification is read again later."""
    def down(uri: str) -> bytes:
        raise RetriableError(f"cannot read {uri}: 503 Slow Down")

    with pytest.raises(RetriableError, match="503"):
        resolve(notification(record(bucket="elsewhere"), record()), settings(), down, accept)


# -- the processor: its apply on stand-in messages ------------------------------------------------------
class Sidecars(Storage):
    """Storage holding these sidecars (by URI), or down when `down` is set."""

    def __init__(self, config: Settings, sidecars: dict[str, bytes], down: bool = False) -> None:
        super().__init__(config)
        self.sidecars, self.down = sidecars, down

    def read(self, uri: str, limit: int = 0) -> bytes:
        """The sidecar's bytes."""
        if self.down:
            raise RetriableError(f"cannot read {uri}: connection refused")
        if uri not in self.sidecars:
            raise ObjectMissing(f"{uri} does not exist")
        return self.sidecars[uri]


def processor(down: bool = False) -> S3Notifications:
    """The processor, offline, with the project's instruments and one sidecar in its storage."""
    config = settings()
    made = offline(S3Notifications(config, parse_instruments(Path(config.instruments_file).read_text())))
    made.storage = Sidecars(config, {f"s3://{BUCKET}/{sidecar_of(KEY)}": json.dumps({"GROUPID": GROUP}).encode()},
                            down)
    return made


def message(payload: bytes, offset: int = 7) -> FakeMessage:
    """A notification as consumed from the connector's topic."""
    return FakeMessage(declare_graph(settings()).s3_notifications.inputs[0].name, payload, b"n", 0, offset)


def test_the_processor_is_the_one_the_graph_declares() -> None:
    """Its dead letters and metrics name the processor of topology/graph.py."""
    assert NAME == declare_graph(settings()).s3_notifications.name == processor().name


def test_the_processor_stages_each_arrival_and_each_dead_letter_and_logs_them(
        caplog: pytest.LogCaptureFixture) -> None:
    """Arrivals go to their detector's partition; every refused record is its own dead letter and log line;
    a record not for us is a log line."""
    payload = notification(record(), record(bucket=5), record("LSSTCam/../secret.fits"), record("LSSTCam/x.txt"))
    s3 = processor()
    with caplog.at_level(logging.INFO, logger="connectors.s3_notifications"):
        batch = s3._transform([message(payload)], 1.0)  # type: ignore[list-item]
    assert batch.retry is None and batch.consumed == 1 and not batch.changes
    topics = s3.topics
    assert [(spec.name, key) for spec, key, _ in batch.records] == [
        (topics.raw_image_available.name, snap_key("LSSTCam", GROUP, 94, 0).encode()),
        (topics.dead_letter.name, b"n"), (topics.dead_letter.name, b"n")]
    found = batch.records[0][2]
    assert isinstance(found, RawImageAvailable) and (found.group_id, found.detector, found.snap) == (GROUP, 94, 0)
    letters = [letter for _, _, letter in batch.records[1:]]
    assert all(isinstance(letter, DeadLetter) and letter.agent == NAME for letter in letters)
    assert [letter.error_class for letter in letters] == ["SchemaMismatchError", "InvalidEventError"]  # type: ignore[union-attr]
    assert letters[1].reason.startswith(  # type: ignore[union-attr]
        "record 3 of 4: key 'LSSTCam/../secret.fits' is not a plain relative path")
    logged = [(getattr(r, "event", None), r.fields.get("topic"), r.fields.get("offset"), r.fields.get("part"),
               r.fields.get("error")) for r in caplog.records if hasattr(r, "fields")]
    assert ("dead letter", "prompt.s3-notifications", 7, "record 2 of 4", "SchemaMismatchError") in logged
    assert ("dead letter", "prompt.s3-notifications", 7, "record 3 of 4", "InvalidEventError") in logged
    assert ("ignored", "prompt.s3-notifications", 7, "record 4 of 4", None) in logged


def test_a_payload_that_is_no_notification_is_one_dead_letter_of_the_engine() -> None:
    """Not even a Records list: the engine dead-letters the whole input, in the processor's name."""
    batch = processor()._transform([message(b"{}")], 1.0)  # type: ignore[list-item]
    [(spec, key, letter)] = batch.records
    assert spec.name == processor().topics.dead_letter.name and key == b"n"
    assert isinstance(letter, DeadLetter) and letter.agent == NAME and letter.error_class == "WireFormatError"


def test_storage_down_retries_the_batch_and_dead_letters_nothing() -> None:
    """A batch whose sidecar cannot be read for now is consumed again later, nothing of it committed."""
    batch = processor(down=True)._transform([message(notification(record(bucket="elsewhere"))),
                                             message(notification(record()), 8)], 1.0)  # type: ignore[list-item]
    assert isinstance(batch.retry, RetriableError) and "connection refused" in str(batch.retry)


def dead_letters_counted() -> float:
    """The processor's dead letters counted by this process so far."""
    return metrics.REGISTRY.get_sample_value("prompt_streams_dead_letters_total", {"agent": NAME}) or 0.0


def test_each_dead_letter_is_counted_once_when_committed() -> None:
    """The engine counts the dead letters a batch produced after its commit; the processor adds no count."""
    s3 = processor()
    batch = s3._transform([message(notification(record(bucket=5), record(), record(bucket="elsewhere"))),
                           message(b"[]", 8)], 1.0)  # type: ignore[list-item]
    before = dead_letters_counted()
    s3._apply(batch, {}, {})
    assert dead_letters_counted() - before == 3 == sum(isinstance(r, DeadLetter) for _, _, r in batch.records)


def test_an_empty_batch_is_nothing_to_commit() -> None:
    """A notification of ignored records only stages nothing but its offset."""
    batch: Batch[Any] = processor()._transform([message(notification(record(sidecar_of(KEY))))], 1.0)  # type: ignore[list-item]
    assert not batch.records and batch.consumed == 1
