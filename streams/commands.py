"""Faust app commands for the chores around a night (`faust -A streams.app <command> --help`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import faust
from faust.cli import option

from streams.core.instruments import parse_detectors
from streams.driver import Visits
from streams.science.geometry import CcdShape
from streams.simulate.night import plan_night, replay, write_night


def register(app: faust.App) -> None:
    """Attach the commands to `app`."""
    settings = app.context.settings  # type: ignore[attr-defined]

    @app.command(
        option("--visits", type=int, default=3, help="Visits in the night."),
        option("--instrument", default="LSSTCam", help="Instrument."),
        option("--detectors", default="0-188", help="Detector ids, e.g. 0-188 or 0,94,188."),
        option("--size", type=int, default=256, help="CCD size in pixels (4000 = full LSSTCam size)."),
        option("--lead-time", type=float, default=5.0, help="Seconds from nextVisit to the first raw."),
        option("--snap-interval", type=float, default=2.0, help="Seconds between the two snaps' raws."),
        option("--visit-interval", type=float, default=5.0, help="Seconds between visits (real time: 32)."),
        option("--seed", type=int, default=2026, help="Random seed: the same seed writes the same night."),
        option("--survey", default="BLOCK-365", help="Survey of every visit (it selects the pipelines)."),
        option("--without-template", default="", help="Visits (from 0) left without templates, e.g. 1,3."),
        option("--start", default="", help="UTC start of the night, e.g. 2026-11-25T03:00:00 (default: now). "
                                            "With the seed, it fixes the night: its groups and exposures."),
    )
    async def simulate_night(self: faust.cli.AppCommand, visits: int, instrument: str, detectors: str, size: int,
                             lead_time: float, snap_interval: float, visit_interval: float, seed: int,
                             survey: str, without_template: str, start: str) -> None:
        """Write a simulated night under the data root and replay it as events."""
        shape = CcdShape(size, size if size != 4000 else 4072)
        night = plan_night(visits, tuple(sorted(parse_detectors(detectors))), shape, instrument=instrument,
                           seed=seed, without_template=tuple(parse_detectors(without_template)),
                           start=datetime.fromisoformat(start).replace(tzinfo=UTC) if start else None)
        root = Path(settings.data_root)
        self.say(f"writing {visits} visits x {len(night.detectors)} detectors x 2 snaps ({size} px) under {root}")
        arrivals = write_night(root, night)
        driver = Visits(replace(settings), survey=survey)
        replay(driver, night, arrivals, lead_time=lead_time, snap_interval=snap_interval,
               visit_interval=visit_interval)
        self.say(f"sent {visits} visits: groups {', '.join(v.group_id for v in night.visits)}")
