"""Parsing bucket notifications, raw keys and sidecars."""

from __future__ import annotations

import json

import pytest

from connectors.s3_notifications import arrival, parse_notification, raw_object
from streams.errors import InvalidEventError, WireFormatError

KEY = "LSSTCam/20250501/MC_O_20250501_000367/MC_O_20250501_000367_R22_S11.fits"


def notification(*keys: str, event: str = "ObjectCreated:Put") -> bytes:
    """An S3 event notification as Ceph sends it."""
    return json.dumps({"Records": [{"eventName": event, "s3": {"bucket": {"name": "rubin-summit"},
                                                               "object": {"key": k, "size": 123}}}
                                   for k in keys]}).encode()


def test_created_objects_are_listed() -> None:
    """Bucket, key and size of each ObjectCreated record; other events are left out."""
    assert parse_notification(notification(KEY)) == [("rubin-summit", KEY, 123)]
    assert parse_notification(notification(KEY, event="ObjectRemoved:Delete")) == []


@pytest.mark.parametrize("payload", [b"", b"[]", b'{"Records": [{"eventName": "ObjectCreated:Put"}]}', b"\xff"])
def test_malformed_notifications_are_refused(payload: bytes) -> None:
    """Anything that is not an S3 event notification is a wire-format error."""
    with pytest.raises(WireFormatError):
        parse_notification(payload)


def test_raw_key_gives_instrument_detector_and_exposure() -> None:
    """R22_S11 is LSSTCam detector 94; obs_id MC_O_20250501_000367 is exposure 2025050100367."""
    raw = raw_object("rubin-summit", KEY, 5)
    assert raw is not None
    assert (raw.instrument, raw.detector, raw.exposure_id) == ("LSSTCam", 94, 2025050100367)
    assert raw.uri == f"s3://rubin-summit/{KEY}"
    assert raw.sidecar_uri == f"s3://rubin-summit/{KEY.removesuffix('.fits')}.json"


def test_sidecars_and_other_files_are_skipped() -> None:
    """The sidecar JSON and unrelated keys are not raws."""
    assert raw_object("raws", KEY.replace(".fits", ".json"), 1) is None
    assert raw_object("raws", "LSSTCam/README.txt", 1) is None


def test_a_detector_the_camera_lacks_is_invalid() -> None:
    """A corner-raft (R00) key on LSSTCam names no science detector."""
    with pytest.raises(InvalidEventError, match="no detector R00_S11"):
        raw_object("raws", KEY.replace("R22_S11", "R00_S11"), 1)


def test_sidecar_gives_group_and_snap() -> None:
    """GROUPID is the group; CURINDEX counts snaps from 1."""
    raw = raw_object("raws", KEY, 9)
    assert raw is not None
    found = arrival(raw, json.dumps({"GROUPID": "2025-05-01T03:04:05.678", "CURINDEX": 2}).encode(), 1.0)
    assert (found.group_id, found.snap, found.detector, found.size_bytes) == ("2025-05-01T03:04:05.678", 1, 94, 9)
    with pytest.raises(InvalidEventError, match="GROUPID"):
        arrival(raw, b'{"CURINDEX": 1}', 1.0)
