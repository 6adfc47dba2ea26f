"""Record keys and the one partitioner.

Every per-detector topic puts a detector's records in partition `detector % partitions`, so the
fan-out record, the raws and the result of one detector meet in one partition, on the worker
that owns it, whose caches then stay warm for that detector visit after visit.
"""

from __future__ import annotations

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
