"""Reading objects by file URI stays inside the data root, symbolic links included."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from streams.config import Settings
from streams.errors import InvalidEventError
from streams.storage import ObjectMissing, Storage


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
