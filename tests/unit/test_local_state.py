"""Local table copies checked against their changelogs: which positions can be caught up."""

from __future__ import annotations

from pathlib import Path

from streams.runtime.local_state import invalid
from streams.runtime.store import PartitionStore


def test_a_copy_within_the_changelog_is_caught_up() -> None:
    """Behind the end (or at it) and not before the start: replaying the rest is enough."""
    assert invalid(0, 0, 0) is None
    assert invalid(5, 0, 9) is None
    assert invalid(9, 3, 9) is None


def test_a_copy_ahead_of_or_before_its_changelog_is_refused_with_a_reason() -> None:
    """Past the end: the topic was recreated; before the start: records it lacks are gone."""
    assert "recreated" in (invalid(12, 0, 0) or "")
    assert "gone" in (invalid(2, 5, 9) or "")


def test_a_cleared_store_has_no_rows_and_starts_from_zero(tmp_path: Path) -> None:
    """Clearing forgets rows and checkpoint, and the folder reopens empty."""
    store = PartitionStore(tmp_path / "gather-0")
    store.apply({b"k": b"v"}, 17)
    store.clear()
    assert list(store.items()) == [] and store.checkpoint == 0
    store.close()
    reopened = PartitionStore(tmp_path / "gather-0")
    assert list(reopened.items()) == [] and reopened.checkpoint == 0
    reopened.close()
