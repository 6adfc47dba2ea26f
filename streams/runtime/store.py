"""One partition of a table kept by a transactional processor: RocksDB, written after each commit.

Rows are only written once the transaction that produced their changelog records committed,
together with the changelog offset they reach (the checkpoint). So the local copy is never
ahead of the changelog, only behind it; restoring means replaying the changelog from the
checkpoint (from 0 for a new or lost folder).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

CHECKPOINT = b"\x00checkpoint"
WRITE_BUFFER_BYTES = 1 << 20
"""Each partition's memtable. RocksDB's default (64 MiB, up to two) times every partition of every table
and standby grew a worker by gigabytes over a night; the rows are small and a flush is cheap."""


def options() -> Options:
    """Small memtables: a partition's writes are a few rows per batch."""
    opts = Options()
    opts.create_if_missing(True)
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
    opts.set_max_write_buffer_number(2)
    return opts


class PartitionStore:
    """The rows of one table partition, by key."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(path), options())
        raw = self._db.get(CHECKPOINT)
        self.checkpoint: int = int.from_bytes(raw, "big") if raw is not None else 0
        """The changelog offset the rows reflect: restoring continues from here."""

    def items(self, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every row, in key order (from `start` on, if given)."""
        for key, value in self._db.items(from_key=start):
            if isinstance(key, bytes) and key != CHECKPOINT:
                yield key, value

    def with_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The rows whose key starts with `prefix`."""
        for key, value in self.items(prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def get(self, key: bytes) -> bytes | None:
        """One row's value."""
        value = self._db.get(key)
        return value if isinstance(value, bytes) else None

    def apply(self, changes: dict[bytes, bytes | None], checkpoint: int) -> None:
        """Write committed changes (None deletes) and the offset they bring the rows to, atomically."""
        batch = WriteBatch()
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        batch.put(CHECKPOINT, checkpoint.to_bytes(8, "big"))
        self._db.write(batch)
        self.checkpoint = checkpoint

    def clear(self) -> None:
        """Forget every row and the checkpoint: the copy was not a prefix of its changelog."""
        batch = WriteBatch()
        for key in list(self._db.keys()):
            batch.delete(key)
        self._db.write(batch)
        self.checkpoint = 0

    def close(self) -> None:
        """Flush and close the database."""
        self._db.close()
