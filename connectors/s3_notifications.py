"""Object-store bucket notifications -> raw-image-available, in the detector's own partition.

The observatory's storage emits one standard S3 event JSON per object into one topic for all
detectors (`{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": ...},
"object": {"key": ...}}}]}`). The real system has every worker read every notification; here one
processor (`s3-notifications`, on the engine) resolves each raw once: instrument and detector from the
key (`LSSTCam/<day_obs>/<obs_id>/<obs_id>_<RNN_SNN>.fits`), the group id (`GROUPID`) and snap
(`CURINDEX`, from 1) from the sidecar JSON beside it, the exposure id from the obs_id, and sends
the arrival to the detector's partition. Sidecar files themselves are skipped.

Each record of a notification has its own fate, so one bad record never costs its neighbours:
a good one becomes its raw's arrival, a bad one its own dead letter (holding that record alone,
as a one-record notification that can be sent again, and why), and one that is not for us
(another event than a creation, a sidecar, another file) is logged and dropped. A notification's
records beyond `PROMPT_STREAMS_S3_MAX_RECORDS` (each may cost `SIDECAR_ATTEMPTS` reads) are one dead
letter together. Only buckets named in `PROMPT_STREAMS_RAW_BUCKETS` are read: the bucket comes from
the event, and the worker's credentials must sign no request for a bucket an event names.

`triage` (records -> what each asks for) and `arrival` are the pure core; `resolve` adds the
sidecar reads, and `S3Notifications` stages what came of each record: its arrivals, its dead letters
and the consumed offset commit in one transaction (`streams.runtime.engine`). Storage that fails for
now (an S3 5xx, a refused connection, a timeout) is no record's fault: the batch is consumed again
later, and nothing is dead-lettered for it.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, unquote_plus

from confluent_kafka import Message

from streams.clock import tai_now
from streams.config import PREFIX, Settings
from streams.core.arrivals import BUCKET, check_raw
from streams.core.focal_plane import detector_id
from streams.core.instruments import Instrument
from streams.data.storage import ObjectMissing, Storage
from streams.errors import DecodeError, InvalidEventError, RetriableError, SchemaMismatchError, WireFormatError
from streams.observability import logs
from streams.runtime.dead_letters import dead_letter as bounded_dead_letter
from streams.runtime.engine import Batch, TransactionalProcessor, message_offset, message_partition
from streams.serde.base import Record
from streams.serde.records import DeadLetter, RawImageAvailable
from topology.graph import declare_graph
from topology.keys import snap_key

log = logs.events(__name__)
NAME = "s3-notifications"
"""The processor's name in `topology/graph.py`: its consumer group, and the agent of its dead letters."""
KEY = re.compile(r"^(?P<instrument>[A-Za-z]+)/(?P<day_obs>\d{8})/(?P<obs_id>[A-Z]{2}_[A-Z]_(?P<date>\d{8})_"
                 r"(?P<seq>\d{6}))/(?P=obs_id)_(?P<detector>R\d\d_S\d\d)\.fits$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_KEY_BYTES = 1024
"""S3's own limit on a key (UTF-8 bytes)."""
RETRY_SECONDS = 0.1


@dataclass(frozen=True)
class RawObject:
    """A raw file named in a notification, with what its key says."""

    uri: str
    sidecar_uri: str
    instrument: str
    detector: int
    exposure_id: int
    size_bytes: int


@dataclass(frozen=True)
class Ignored:
    """A record that is not for this connector (not a creation, a sidecar, another file): logged, no dead letter."""

    reason: str
    quiet: bool = False
    """A sidecar: there are as many as raws, so it is logged at debug level only."""


Outcome = RawObject | RawImageAvailable | Ignored | Exception
"""What one part of a notification asks for or came to; an exception is that part's dead letter."""


@dataclass(frozen=True)
class Part:
    """One record of a notification (or all the records beyond the cap) and what became of it."""

    where: str
    """Which records, for a dead letter's reason: `record 3 of 7`."""
    value: bytes
    """What a dead letter of this part holds: a notification of only these records (the original bytes when
    that is all of them), so the letter can be read, and sent again, on its own."""
    outcome: Outcome


# -- the functional core: no storage, no Kafka ------------------------------------------------------
def records_of(payload: bytes | None) -> list[Any]:
    """The Records list of an S3 event notification, not yet checked.

    Raises:
        WireFormatError: not a JSON object with a non-empty Records list (one dead letter for the whole input).
    """
    try:
        event = json.loads(payload or b"")
    except (ValueError, RecursionError) as error:
        raise WireFormatError(f"not an S3 event notification: {error!r}") from error
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        raise WireFormatError("not an S3 event notification: expected a JSON object with a non-empty Records list")
    return records


def _member(record: Any, path: str) -> Any:
    value = record
    for name in path.split("."):
        if not isinstance(value, dict) or name not in value:
            raise SchemaMismatchError(f"not an S3 event record: it has no {path}")
        value = value[name]
    return value


def record_fields(record: Any) -> tuple[str, str, str, int]:
    """eventName, bucket name, key (still URL-encoded) and size of one record, their types checked.

    Raises:
        SchemaMismatchError: a field missing or of the wrong type (an object for eventName, a number for a bucket).
    """
    event, bucket, key = (_member(record, path) for path in ("eventName", "s3.bucket.name", "s3.object.key"))
    size = _member(record, "s3.object").get("size", 0)
    for path, value in (("eventName", event), ("s3.bucket.name", bucket), ("s3.object.key", key)):
        if not isinstance(value, str):
            raise SchemaMismatchError(f"not an S3 event record: {path} is {type(value).__name__} "
                                      f"{value!r:.80}, not a string")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise SchemaMismatchError(f"not an S3 event record: s3.object.size {size!r:.80} is not a size in bytes")
    return event, bucket, key, size


def plain_key(key: str) -> str:
    """The object key of a record's URL-encoded key, if it is a plain relative path.

    A key with `.` or `..` parts, a leading `/` or control characters would name another object (or, made
    into a path, another file) than the one stored: such a key is refused, not skipped.

    Raises:
        InvalidEventError: with the reason.
    """
    decoded = unquote_plus(key)
    try:
        length = len(decoded.encode())
    except UnicodeEncodeError as error:
        raise InvalidEventError(f"key {key!r:.200} is not valid UTF-8") from error
    if not decoded or length > MAX_KEY_BYTES:
        raise InvalidEventError(f"key of {length} bytes: S3 keys have 1 to {MAX_KEY_BYTES}")
    if decoded.startswith("/") or CONTROL.search(decoded) or {".", ".."} & set(decoded.split("/")):
        raise InvalidEventError(f"key {decoded!r:.200} is not a plain relative path (no '.' or '..' parts, "
                                f"leading '/' or control characters)")
    return decoded


def raw_object(bucket: str, key: str, size: int) -> RawObject | None:
    """What a raw file's key says; None for a sidecar or anything else that is not a raw.

    Raises:
        InvalidEventError: a bucket name S3 would not allow, or a raw's key whose detector the
            instrument does not have.
    """
    if not BUCKET.match(bucket):
        raise InvalidEventError(f"bucket name {bucket!r:.80} is not a valid S3 bucket name")
    match = KEY.match(key)
    if match is None:
        return None
    instrument = match["instrument"]
    uri = f"s3://{bucket}/{quote(key)}"
    return RawObject(uri=uri, sidecar_uri=uri.removesuffix(".fits") + ".json", instrument=instrument,
                     detector=detector_id(instrument, match["detector"]),
                     exposure_id=int(match["date"]) * 100_000 + int(match["seq"]), size_bytes=size)


def check_record(record: Any, buckets: Collection[str]) -> RawObject | Ignored:
    """What one record asks for, decided before any request is made: a raw to resolve, or nothing for us.

    Raises:
        SchemaMismatchError: not an S3 event record (a field missing or of the wrong type).
        InvalidEventError: a creation in a bucket not among `buckets`, a key that is not a plain relative path,
            or a raw's key naming a detector its instrument does not have.
    """
    event, bucket, key, size = record_fields(record)
    if not event.startswith("ObjectCreated:"):
        return Ignored(f"event {event!r:.80} is not an object creation")
    if bucket not in buckets:
        raise InvalidEventError(f"bucket {bucket!r:.80} is not one of {PREFIX}RAW_BUCKETS "
                                f"({', '.join(sorted(buckets)) or 'none'}): it is not read")
    key = plain_key(key)
    raw = raw_object(bucket, key, size)
    if raw is None:
        sidecar = key.endswith(".json")
        return Ignored(f"s3://{bucket}/{key:.200} is {'a sidecar' if sidecar else 'not a raw'}", quiet=sidecar)
    return raw


def excerpt(payload: bytes, records: Sequence[Any], total: int) -> bytes:
    """A notification of only `records` (`payload` itself when they are all of its `total`)."""
    if len(records) == total:
        return payload
    try:
        return json.dumps({"Records": list(records)}).encode()
    except (ValueError, RecursionError):  # as deep as json.loads allowed: keep the whole input instead
        return payload


def triage(payload: bytes | None, buckets: Collection[str], max_records: int) -> list[Part]:
    """Each of the first `max_records` records checked on its own, in order; the rest as one part, refused.

    A record that fails a check, or whose check fails unexpectedly, is a part with that error: it never
    takes the others with it.

    Raises:
        WireFormatError: the payload is not a notification at all (one dead letter of its bytes).
    """
    data = payload or b""
    records = records_of(data)
    total = len(records)
    parts = []
    for index, record in enumerate(records[:max_records]):
        outcome: Outcome
        try:
            outcome = check_record(record, buckets)
        except Exception as error:  # typed or a bug: either way this record's own dead letter
            outcome = error
        parts.append(Part(f"record {index + 1} of {total}", excerpt(data, [record], total), outcome))
    if total > max_records:
        parts.append(Part(f"records {max_records + 1}-{total} of {total}", excerpt(data, records[max_records:], total),
                          InvalidEventError(f"a notification may hold {max_records} records "
                                            f"({PREFIX}S3_MAX_RECORDS): these {total - max_records} were not read")))
    return parts


def arrival(raw: RawObject, sidecar: bytes, now: float) -> RawImageAvailable:
    """The raw-image-available record of a raw, given its sidecar.

    Raises:
        InvalidEventError: a sidecar without GROUPID, or with a bad CURINDEX.
    """
    try:
        header = json.loads(sidecar)
        group = str(header["GROUPID"])
        snap = int(header.get("CURINDEX", 1)) - 1
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as error:
        raise InvalidEventError(f"sidecar {raw.sidecar_uri} has no usable GROUPID/CURINDEX: {error!r}") from error
    return RawImageAvailable(instrument=raw.instrument, group_id=group, detector=raw.detector, snap=snap,
                             exposure_id=raw.exposure_id, uri=raw.uri, size_bytes=raw.size_bytes, arrival_time=now)


def part_dead_letter(topic: str, partition: int, offset: int, key: bytes | None, part: Part, error: Exception,
                     now: float) -> DeadLetter:
    """The dead letter of a refused part: where its notification came from, which of its records, and why."""
    letter = bounded_dead_letter(topic, partition, offset, key, part.value, error, NAME, now)
    return replace(letter, reason=f"{part.where}: {letter.reason}")


# -- the shell: storage and Kafka ---------------------------------------------------------------------
def read_sidecar(read: Callable[[str], bytes], raw: RawObject, attempts: int) -> bytes:
    """A raw's sidecar, tried `attempts` times 0.1 s apart: the storage may notify the raw before its sidecar.

    Raises:
        InvalidEventError: still missing after the last try.
        RetriableError: the storage cannot be read for now (from `read`).
    """
    for attempt in range(1, attempts + 1):
        try:
            return read(raw.sidecar_uri)
        except ObjectMissing as missing:
            if attempt >= attempts:
                raise InvalidEventError(f"sidecar of {raw.uri} not found after {attempts} tries: {missing}") \
                    from missing
        time.sleep(RETRY_SECONDS)  # the engine's own thread: a blocking wait holds up only this processor
    raise InvalidEventError(f"sidecar of {raw.uri} not read: {attempts} tries allowed")


def resolve(payload: bytes | None, settings: Settings, read: Callable[[str], bytes],
            accept: Callable[[RawImageAvailable], None]) -> list[Part]:
    """The notification's parts, each raw's sidecar read (only for raws in the allowed buckets) and its arrival
    checked by `accept`; a raw whose sidecar is missing or unusable is a dead letter of its own.

    Raises:
        WireFormatError: the payload is not a notification at all.
        RetriableError: the storage cannot be read for now: no record is to blame, the whole notification is
            read again later.
    """
    parts = triage(payload, settings.raw_bucket_names(), settings.s3_max_records)
    resolved = []
    for part in parts:
        if isinstance(part.outcome, RawObject):
            outcome: Outcome
            try:
                outcome = arrival(part.outcome, read_sidecar(read, part.outcome, settings.sidecar_attempts),
                                  tai_now())
                accept(outcome)
            except RetriableError:
                raise
            except Exception as error:  # typed or a bug: this record's dead letter, not its neighbours'
                outcome = error
            part = replace(part, outcome=outcome)
        resolved.append(part)
    return resolved


class S3Notifications(TransactionalProcessor[Record]):
    """Turns bucket notifications into raw arrivals, each refused record its own dead letter; stateless."""

    row_type = Record

    def __init__(self, settings: Settings, instruments: dict[str, Instrument]) -> None:
        super().__init__(settings, declare_graph(settings).s3_notifications)
        self.instruments = instruments
        self.storage = Storage(settings)

    def accept(self, found: RawImageAvailable) -> None:
        """The worker's own check of an arrival (as for a raw-image-available sent directly)."""
        check_raw(found, self.instruments, self.policy, self.settings.data_root)

    def apply(self, batch: Batch[Record], message: Message, now: float) -> None:
        """Stage each arrival for its detector's partition and each refused part's dead letter; log the rest.

        The engine counts the dead letters once the transaction has committed, as it does its own.
        """
        parts = resolve(message.value(), self.settings, self.storage.read, self.accept)
        topic, partition, offset, key = (message.topic() or "", message_partition(message), message_offset(message),
                                         message.key())
        for part in parts:
            outcome = part.outcome
            if isinstance(outcome, RawImageAvailable):
                batch.records.append((self.topics.raw_image_available,
                                      snap_key(outcome.instrument, outcome.group_id, outcome.detector,
                                               outcome.snap).encode(), outcome))
            elif isinstance(outcome, Ignored):
                log.log(logging.DEBUG if outcome.quiet else logging.INFO, "ignored", processor=NAME, topic=topic,
                        partition=partition, offset=offset, part=part.where, reason=outcome.reason)
            elif isinstance(outcome, Exception):
                if isinstance(outcome, (DecodeError, InvalidEventError)):
                    log.warning("dead letter", processor=NAME, topic=topic, partition=partition, offset=offset,
                                part=part.where, error=type(outcome).__name__, reason=outcome)
                else:
                    log.exception("unexpected error: dead letter", outcome, processor=NAME, topic=topic,
                                  partition=partition, offset=offset, part=part.where)
                batch.records.append((self.topics.dead_letter, key,
                                      part_dead_letter(topic, partition, offset, key, part, outcome, now)))
            else:
                raise TypeError(f"{part.where}: raw {outcome.uri} was never resolved")  # resolve() resolves every raw
