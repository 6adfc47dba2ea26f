"""Master calibrations: the file-naming rule, and the announcement a calibration result makes."""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from streams.records import CalibrationProduct, CcdResult

PIPELINE_PREFIX = "calib-"


def calibration_name(calib_type: str, filter_name: str, valid_start: float, valid_end: float) -> str:
    """The file name of a master: `<type>_<filter>_<valid start>_<valid end>.fits` (TAI seconds)."""
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
