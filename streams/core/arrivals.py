"""Checks on a raw arrival before it touches any state: instrument, detector, snap, and its URI.

A `file://` URI must name a normalised absolute path under the data root (no `..`, no other
scheme), so no event field can point a pipeline outside the repository; `s3://` URIs need a valid
bucket name. Symbolic links are checked again where the file is opened.
"""

from __future__ import annotations

import math
import posixpath
import re
from urllib.parse import unquote, urlsplit

from streams.core.instruments import Instrument
from streams.core.policy import Policy
from streams.errors import InvalidEventError
from streams.serde.records import RawImageAvailable

GROUP_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$")
"""Group ids are timestamps like 2026-11-25T03:14:15.926: they become path parts and arguments."""
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
MAX_URI = 4096


def check_group(group_id: str) -> None:
    """Refuse a group id that is not a plain identifier.

    Raises:
        InvalidEventError: with the reason.
    """
    if not GROUP_ID.fullmatch(group_id):
        raise InvalidEventError(f"group id {group_id!r} is not a plain identifier (letters, digits, ._:+-)")


def check_uri(uri: str, data_root: str) -> None:
    """Refuse a URI that is not file:// under `data_root` or a well-formed s3://.

    Raises:
        InvalidEventError: with the reason.
    """
    if len(uri) > MAX_URI:
        raise InvalidEventError(f"URI of {len(uri)} characters is longer than {MAX_URI}")
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        if not BUCKET.match(parts.netloc) or not parts.path.strip("/"):
            raise InvalidEventError(f"malformed s3 URI {uri!r}: expected s3://bucket/key")
        return
    if parts.scheme != "file":
        raise InvalidEventError(f"unsupported URI scheme {parts.scheme!r} in {uri!r}: only file:// and s3://")
    if parts.netloc not in ("", "localhost"):
        raise InvalidEventError(f"file URI {uri!r} names a host: only local files")
    path = unquote(parts.path)
    if "\x00" in path or ".." in path.split("/") or posixpath.normpath(path) != path or not path.startswith("/"):
        raise InvalidEventError(f"file URI {uri!r} is not a normalised absolute path")
    root = posixpath.normpath(data_root)
    if posixpath.commonpath([root, path]) != root:
        raise InvalidEventError(f"file URI {uri!r} is outside the data root {root}")


def check_raw(raw: RawImageAvailable, instruments: dict[str, Instrument], policy: Policy, data_root: str) -> None:
    """Refuse a raw arrival that makes no sense.

    Raises:
        InvalidEventError: unknown instrument, a detector the instrument does not have, an absurd
            snap, exposure id, size or arrival time, a blank group, or a URI that fails `check_uri`.
    """
    instrument = instruments.get(raw.instrument)
    if instrument is None:
        raise InvalidEventError(f"raw for unknown instrument {raw.instrument!r}")
    if raw.detector not in instrument.detectors:
        raise InvalidEventError(f"{raw.instrument} has no detector {raw.detector}")
    check_group(raw.group_id)
    if not 0 <= raw.snap < policy.max_nimages:
        raise InvalidEventError(f"snap {raw.snap} is outside 0..{policy.max_nimages - 1}")
    if raw.exposure_id < 0 or raw.size_bytes < 0:
        raise InvalidEventError(f"negative exposure id {raw.exposure_id} or size {raw.size_bytes}")
    if raw.size_bytes > policy.max_raw_bytes:
        raise InvalidEventError(f"size {raw.size_bytes} bytes is beyond the {policy.max_raw_bytes} byte limit")
    if not math.isfinite(raw.arrival_time) or raw.arrival_time < 0:
        raise InvalidEventError(f"arrival_time {raw.arrival_time} is not a time")
    check_uri(raw.uri, data_root)
