"""Reading small objects (sidecar JSON) by URI: `file://` under the data root, or `s3://`.

The S3 client is built once from the settings (endpoint, credentials), so the same code reads
the observatory's Ceph buckets and a local S3-compatible server in the tests.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from streams.config import Settings
from streams.core.arrivals import check_uri
from streams.errors import InvalidEventError, RetriableError

MAX_OBJECT_BYTES = 1 << 20
"""A sidecar larger than this is refused: it would not be a sidecar."""


class ObjectMissing(RetriableError):  # noqa: N818 (a state of the world, which may change)
    """The object is not there (yet): storage notifications can overtake the object's sidecar."""


class Storage:
    """Reads objects named by URI."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def _s3(self) -> Any:
        return boto3.client(
            "s3", endpoint_url=self.settings.s3_endpoint_url or None,
            aws_access_key_id=self.settings.s3_access_key or None,
            aws_secret_access_key=self.settings.s3_secret_key or None, region_name="us-east-1",
        )

    def read(self, uri: str, limit: int = MAX_OBJECT_BYTES) -> bytes:
        """The object's bytes (at most `limit` of them).

        Raises:
            InvalidEventError: a URI outside the data root, a symbolic link out of it, or too large.
            ObjectMissing: no such object (yet).
            RetriableError: the object store cannot be read for now (an error status, no connection, a timeout,
                also while the body is read).
        """
        check_uri(uri, self.settings.data_root)
        parts = urlsplit(uri)
        if parts.scheme == "file":
            return self._read_file(Path(unquote(parts.path)), limit)
        try:
            response = self._s3.get_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
            if response.get("ContentLength", 0) > limit:
                raise InvalidEventError(f"{uri} is larger than {limit} bytes")
            data: bytes = response["Body"].read(limit + 1)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
                raise ObjectMissing(f"{uri} does not exist") from error
            raise RetriableError(f"cannot read {uri}: {error}") from error
        except BotoCoreError as error:
            raise RetriableError(f"cannot read {uri}: {error}") from error
        return data

    def _read_file(self, path: Path, limit: int) -> bytes:
        root = Path(self.settings.data_root).resolve()
        try:
            real = path.resolve(strict=True)
        except FileNotFoundError as error:
            raise ObjectMissing(f"{path} does not exist") from error
        if not real.is_relative_to(root):
            raise InvalidEventError(f"{path} leads outside the data root {root} (symbolic link)")
        if real.stat().st_size > limit:
            raise InvalidEventError(f"{path} is larger than {limit} bytes")
        return real.read_bytes()
