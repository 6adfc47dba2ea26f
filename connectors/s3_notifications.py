"""Object-store bucket notifications -> raw-image-available, in the detector's own partition.

The observatory's storage emits one standard S3 event JSON per object into one topic for all
detectors (`{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": ...},
"object": {"key": ...}}}]}`). The real system has every worker read every notification; here one
agent resolves each raw once: instrument and detector from the key
(`LSSTCam/<day_obs>/<obs_id>/<obs_id>_<RNN_SNN>.fits`), the group id (`GROUPID`) and snap
(`CURINDEX`, from 1) from the sidecar JSON beside it, the exposure id from the obs_id, and sends
the arrival to the detector's partition. Sidecar files themselves are skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

import faust

from streams import edge
from streams.clock import tai_now
from streams.context import Context
from streams.core.arrivals import BUCKET, check_raw
from streams.core.focal_plane import detector_id
from streams.errors import InvalidEventError, WireFormatError
from streams.records import RawImageAvailable
from streams.storage import ObjectMissing, Storage
from topology.keys import snap_key

log = logging.getLogger(__name__)
NAME = "s3_notifications"
KEY = re.compile(r"^(?P<instrument>[A-Za-z]+)/(?P<day_obs>\d{8})/(?P<obs_id>[A-Z]{2}_[A-Z]_(?P<date>\d{8})_"
                 r"(?P<seq>\d{6}))/(?P=obs_id)_(?P<detector>R\d\d_S\d\d)\.fits$")
BATCH, WITHIN = 200, 0.02
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


def parse_notification(payload: bytes | None) -> list[tuple[str, str, int]]:
    """(bucket, key, size) of every ObjectCreated record in an S3 event notification.

    Raises:
        WireFormatError: not a JSON object with a Records list of S3 events.
    """
    try:
        event = json.loads(payload or b"")
        records = event["Records"]
        created = [r for r in records if str(r.get("eventName", "")).startswith("ObjectCreated:")]
        objects = [(r["s3"]["bucket"]["name"], unquote_plus(r["s3"]["object"]["key"]),
                    int(r["s3"]["object"].get("size", 0))) for r in created]
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as error:
        raise WireFormatError(f"not an S3 event notification: {error!r}") from error
    if not all(isinstance(bucket, str) for bucket, _, _ in objects):
        raise WireFormatError("not an S3 event notification: a bucket name is not a string")
    return objects


def raw_object(bucket: str, key: str, size: int) -> RawObject | None:
    """What a raw file's key says; None for a sidecar or anything else that is not a raw.

    Raises:
        InvalidEventError: a bucket name S3 would not allow, or a raw's key whose detector the
            instrument does not have.
    """
    if not BUCKET.match(bucket):
        raise InvalidEventError(f"bucket name {bucket!r} is not a valid S3 bucket name")
    match = KEY.match(key)
    if match is None:
        return None
    instrument = match["instrument"]
    uri = f"s3://{bucket}/{quote(key)}"
    return RawObject(uri=uri, sidecar_uri=uri.removesuffix(".fits") + ".json", instrument=instrument,
                     detector=detector_id(instrument, match["detector"]),
                     exposure_id=int(match["date"]) * 100_000 + int(match["seq"]), size_bytes=size)


def arrival(raw: RawObject, sidecar: bytes, now: float) -> RawImageAvailable:
    """The raw-image-available record of a raw, given its sidecar.

    Raises:
        InvalidEventError: a sidecar without GROUPID, or with a bad CURINDEX.
    """
    try:
        header = json.loads(sidecar)
        group = str(header["GROUPID"])
        snap = int(header.get("CURINDEX", 1)) - 1
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidEventError(f"sidecar {raw.sidecar_uri} has no usable GROUPID/CURINDEX: {error!r}") from error
    return RawImageAvailable(instrument=raw.instrument, group_id=group, detector=raw.detector, snap=snap,
                             exposure_id=raw.exposure_id, uri=raw.uri, size_bytes=raw.size_bytes, arrival_time=now)


def register(app: faust.App, context: Context) -> None:
    """Attach the connector's agent to `app`."""
    topics, settings = context.topics, context.settings
    storage = Storage(settings)

    async def read_sidecar(raw: RawObject) -> bytes:
        for attempt in range(settings.sidecar_attempts):
            try:
                return await asyncio.to_thread(storage.read, raw.sidecar_uri)
            except ObjectMissing:
                if attempt + 1 == settings.sidecar_attempts:
                    raise
                await asyncio.sleep(RETRY_SECONDS)
        raise ObjectMissing(raw.sidecar_uri)

    async def resolve(payload: bytes | None) -> list[RawImageAvailable]:
        arrivals = []
        for bucket, key, size in parse_notification(payload):
            raw = raw_object(bucket, key, size)
            if raw is None:
                continue  # a sidecar, or not a raw
            try:
                sidecar = await read_sidecar(raw)
            except ObjectMissing as missing:
                raise InvalidEventError(f"sidecar of {raw.uri} not found after "
                                        f"{settings.sidecar_attempts} tries: {missing}") from missing
            found = arrival(raw, sidecar, tai_now())
            check_raw(found, context.instruments, context.policy, settings.data_root)
            arrivals.append(found)
        return arrivals

    @app.agent(context.channel(topics.s3_notifications), name=NAME)
    async def s3_notifications(stream: faust.StreamT[bytes]) -> None:
        async for events in stream.take_events(BATCH, within=WITHIN):  # type: ignore[attr-defined]
            resolved = await asyncio.gather(*(resolve(event.value) for event in events), return_exceptions=True)
            for event, outcome in zip(events, resolved, strict=True):
                async with edge.guard(context, event, NAME):
                    if isinstance(outcome, BaseException):
                        raise outcome
                    for found in outcome:
                        await context.send(topics.raw_image_available, snap_key(
                            found.instrument, found.group_id, found.detector, found.snap), found)
