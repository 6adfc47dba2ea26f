"""`--last N` counts records, not offsets: a transactional partition's commit markers take offsets too."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from streams.runtime.topic_reader import last_of_each

MARKER = None
"""An offset that holds no record (a transaction's commit marker, or an aborted record)."""


def transactional(records: int, per_transaction: int = 1) -> list[str | None]:
    """A partition's offsets written in transactions of `per_transaction` records, each ending with a marker."""
    log: list[str | None] = []
    for n in range(records):
        log.append(f"record {n}")
        if (n + 1) % per_transaction == 0 or n + 1 == records:
            log.append(MARKER)
    return log


def reader(logs: Mapping[int, list[str | None]],
           reads: list[dict[int, int]]) -> Callable[[Mapping[int, int]], dict[int, list[str]]]:
    """`read` over partitions' offsets (the records from each start to the end), recording each call."""
    def read(starts: Mapping[int, int]) -> dict[int, list[str]]:
        reads.append(dict(starts))
        return {p: [r for r in logs[p][start:] if r is not MARKER] for p, start in starts.items()}
    return read


def test_the_last_record_of_a_transactional_partition_is_found_behind_its_marker() -> None:
    """One record per transaction: `last 1` gives the last record (the last offset is a marker)."""
    logs = {0: transactional(5)}
    reads: list[dict[int, int]] = []
    assert last_of_each(reader(logs, reads), {0: (0, len(logs[0]))}, 1) == {0: ["record 4"]}
    assert reads[0] == {0: 9}, "read from one offset back first"
    assert last_of_each(reader(logs, []), {0: (0, len(logs[0]))}, 3) == {0: ["record 2", "record 3", "record 4"]}


def test_a_partition_with_fewer_records_gives_them_all_and_others_keep_theirs() -> None:
    """`last 10` of a 3-record partition gives its 3 (read from its first offset); a plain partition and an empty
    one are read once each."""
    logs: dict[int, list[str | None]] = {0: transactional(3), 1: ["a", "b", "c", "d"], 2: []}
    reads: list[dict[int, int]] = []
    bounds = {0: (0, 6), 1: (0, 4), 2: (0, 0)}
    got = last_of_each(reader(logs, reads), bounds, 2)
    assert got == {0: ["record 1", "record 2"], 1: ["c", "d"], 2: []}
    assert [sorted(r) for r in reads] == [[0, 1, 2], [0]], "only the short partition is read again"
    assert last_of_each(reader(logs, []), bounds, 10)[0] == ["record 0", "record 1", "record 2"]


def test_the_first_offset_bounds_the_search_and_no_records_means_none() -> None:
    """A partition whose early offsets were deleted is not read before its first offset; `last 0` reads nothing."""
    logs = {0: [MARKER] * 4 + transactional(2)}
    reads: list[dict[int, int]] = []
    assert last_of_each(reader(logs, reads), {0: (4, 8)}, 5) == {0: ["record 0", "record 1"]}
    assert min(start for r in reads for start in r.values()) == 4
    assert last_of_each(reader(logs, []), {0: (4, 8)}, 0) == {}
