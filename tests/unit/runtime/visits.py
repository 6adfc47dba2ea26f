"""Records and settings the driver tests share: one LSSTComCam visit, as the summit and the detectors send it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from streams.config import Settings
from streams.serde.records import CcdResult, VisitExpected
from tests.unit.core.flow import T0

INSTRUMENT = "LSSTComCam"
GROUP = "2026-11-25T01:00:00.000"
NOW = T0 + 1
"""The driver's clock: a second after the nextVisit was sent."""


def driver_settings(data_dir: Path) -> Settings:
    """Settings needing no broker: tables under `data_dir`, 4 partitions, a fixed worker name."""
    return replace(Settings.from_env({}), data_dir=str(data_dir), detector_partitions=4, worker_name="driver")


def visit_expected(detectors: tuple[int, ...] = (0, 1, 2)) -> VisitExpected:
    """What sal-intake tells the gather about the visit."""
    return VisitExpected(instrument=INSTRUMENT, group_id=GROUP, survey="BLOCK-365", pipelines=["ap"],
                         detectors=list(detectors), nimages=2, next_visit_time=T0, fanout_time=T0,
                         deadline=T0 + 600)


def outcome(detector: int, status: str = "success") -> CcdResult:
    """A detector's outcome, on its way to the gather."""
    return CcdResult(instrument=INSTRUMENT, group_id=GROUP, detector=detector, status=status, survey="BLOCK-365",
                     first_raw_time=T0 + 30, result_time=T0 + 40, next_visit_time=T0, exposure_ids=[100 + detector])
