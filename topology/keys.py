"""Record keys and the one partitioner.

Every per-detector topic puts a detector's records in partition `detector % partitions`, so the
start command, the raws and the pipeline completions of one detector meet in one partition, on
the worker that owns it, whose caches then stay warm for that detector visit after visit.
Every per-visit topic puts a visit's records in partition `crc32(instrument/group) % partitions`,
so the gather step sees all of one visit in one partition.
"""

from __future__ import annotations

import zlib

SEPARATOR = "/"


def visit_key(instrument: str, group_id: str) -> str:
    """Key of a visit: `LSSTCam/2026-11-25T01:02:03.000`."""
    return f"{instrument}{SEPARATOR}{group_id}"


def detector_key(instrument: str, group_id: str, detector: int) -> str:
    """Key of one detector of a visit."""
    return f"{visit_key(instrument, group_id)}{SEPARATOR}{detector}"


def snap_key(instrument: str, group_id: str, detector: int, snap: int) -> str:
    """Key of one raw: one snap of one detector of a visit."""
    return f"{detector_key(instrument, group_id, detector)}{SEPARATOR}{snap}"


def detector_partition(detector: int, partitions: int) -> int:
    """The partition of every record of `detector` in a per-detector topic."""
    return detector % partitions


def visit_partition(instrument: str, group_id: str, partitions: int) -> int:
    """The partition of every record of a visit in a per-visit topic (stable across processes)."""
    return zlib.crc32(visit_key(instrument, group_id).encode()) % partitions
