"""Reading objects by file URI stays inside the data root, symbolic links included; an object store that fails
for now is told apart from an object that is not there (yet)."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
from botocore.exceptions import ReadTimeoutError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from streams.config import Settings
from streams.data.storage import ObjectMissing, Storage
from streams.errors import InvalidEventError, RetriableError


def storage(root: Path) -> Storage:
    """Storage with `root` as the data root."""
    return Storage(replace(Settings.from_env({}), data_root=str(root)))


def test_file_under_the_root_is_read(tmp_path: Path) -> None:
    """A sidecar under the data root is read."""
    (tmp_path / "a.json").write_text('{"GROUPID": "g"}')
    assert storage(tmp_path).read(f"file://{tmp_path}/a.json") == b'{"GROUPID": "g"}'


def test_missing_file_may_come_later(tmp_path: Path) -> None:
    """A file that is not there yet is ObjectMissing (retriable), not a dead letter."""
    with pytest.raises(ObjectMissing):
        storage(tmp_path).read(f"file://{tmp_path}/later.json")


def test_symbolic_link_out_of_the_root_is_refused(tmp_path: Path) -> None:
    """A link inside the root that points outside it cannot be followed."""
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    root = tmp_path / "repo"
    root.mkdir()
    (root / "link.json").symlink_to(outside)
    with pytest.raises(InvalidEventError, match="symbolic link"):
        storage(root).read(f"file://{root}/link.json")


class TimingOut(io.RawIOBase):
    """A response body whose server stops sending."""

    def read(self, size: int = -1) -> bytes:
        """Time out."""
        raise ReadTimeoutError(endpoint_url="http://s3.example")


def test_an_object_store_that_fails_for_now_is_retriable_and_a_missing_object_is_missing() -> None:
    """A 5xx or a timeout while the body is read: RetriableError (read again later), not ObjectMissing."""
    reader = Storage(replace(Settings.from_env({}), s3_access_key="test", s3_secret_key="test"))
    uri = "s3://rubin-summit/a.json"
    with Stubber(reader._s3) as stub:
        stub.add_client_error("get_object", service_error_code="SlowDown", http_status_code=503)
        stub.add_client_error("get_object", service_error_code="NoSuchKey", http_status_code=404)
        stub.add_response("get_object", {"Body": StreamingBody(TimingOut(), 10), "ContentLength": 10})
        with pytest.raises(RetriableError, match="SlowDown") as slow:
            reader.read(uri)
        assert not isinstance(slow.value, ObjectMissing)
        with pytest.raises(ObjectMissing):
            reader.read(uri)
        with pytest.raises(RetriableError, match="Read timeout") as timeout:
            reader.read(uri)
        assert not isinstance(timeout.value, ObjectMissing)
