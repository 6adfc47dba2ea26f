"""Master calibrations: the file-naming rule, and the announcement a calibration result makes.

A filter name becomes a folder (templates) and part of a file name (masters), and it comes from
events (nextVisit `filters`) and raw headers (`FILTER`): only plain names are accepted, the rule
the ingest tool applies to the names it files (letters, digits, '_', '.', '-', no '..').
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from streams.serde.records import CalibrationProduct, CcdResult

PIPELINE_PREFIX = "calib-"
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""One path part: starts with a letter or digit (not an option, not hidden), at most 64 characters."""


def plain_name(value: str) -> bool:
    """Whether `value` can be one path part as it is (no separator, no '..', nothing a shell or FITS reader
    would treat specially); `fullmatch`, so a trailing newline does not slip through as it would with `$`."""
    return PLAIN_NAME.fullmatch(value) is not None and ".." not in value


def calibration_name(calib_type: str, filter_name: str, valid_start: float, valid_end: float) -> str:
    """The file name of a master: `<type>_<filter>_<valid start>_<valid end>.fits` (TAI seconds).

    Raises:
        ValueError: a type or filter that is not a plain name (it would put the master elsewhere).
    """
    for kind, value in (("calibration type", calib_type), ("filter", filter_name)):
        if not plain_name(value):
            raise ValueError(f"{kind} {value!r} is not a plain name (letters, digits, '_', '.', '-', no '..')")
    return f"{calib_type}_{filter_name}_{valid_start:.0f}_{valid_end:.0f}.fits"


def parse_calibration_name(name: str, calib_type: str) -> tuple[str, float, float]:
    """(filter, valid start, valid end) from a master's file name; filters may hold underscores."""
    rest, start, end = PurePosixPath(name).stem.rsplit("_", 2)
    return rest.removeprefix(f"{calib_type}_"), float(start), float(end)


def announcement(result: CcdResult, now: float) -> CalibrationProduct | None:
    """The product a successful calibration pipeline certified, or None for any other result."""
    if result.status != "success" or not result.pipeline.startswith(PIPELINE_PREFIX) or not result.output_uris:
        return None
    calib_type = result.pipeline.removeprefix(PIPELINE_PREFIX)
    uri = result.output_uris[0]
    filter_name, start, end = parse_calibration_name(unquote(urlsplit(uri).path), calib_type)
    return CalibrationProduct(instrument=result.instrument, group_id=result.group_id, detector=result.detector,
                              calib_type=calib_type, filter=filter_name, valid_start=start, valid_end=end,
                              inputs=int(result.metrics.get("calibInputs", 0)), uri=uri, announce_time=now)
