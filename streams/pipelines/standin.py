"""The stand-in pipeline: a configurable cost in place of real Alert Production.

Its preload sleeps (preloading is I/O) and its run burns CPU (processing is compute), so tests
and benchmarks exercise the framework with a known, adjustable load. With `standin_dia_sources`,
it also "finds" that many DIA sources (`streams.pipelines.associate_apdb.SyntheticAlerts`), which go
through the real end of Alert Production: association, the APDB and the alert stream.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from streams.config import Settings
from streams.pipelines.base import Outcome
from streams.serde.records import DetectorProgress

if TYPE_CHECKING:
    from streams.pipelines.associate_apdb import SyntheticAlerts


class StandIn:
    """A pipeline whose cost is set by configuration."""

    name = "stand-in"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.alerts: SyntheticAlerts | None = None
        if settings.standin_dia_sources:
            # Imported only then: the APDB's stack costs every pipeline process about 2 s at start.
            from streams.pipelines.associate_apdb import SyntheticAlerts

            self.alerts = SyntheticAlerts(settings)

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Sleep for the configured preload time, reported as the real system's preload timings."""
        started = time.perf_counter()
        time.sleep(self.settings.standin_preload_seconds)
        total = time.perf_counter() - started
        timings = {"prep_butlerTotalTime": total, "prep_butlerSearchTime": 0.2 * total,
                   "prep_butlerTransferTime": 0.7 * total, "prep_butlerPreprocessTime": 0.1 * total}
        return timings | (self.alerts.preload(progress) if self.alerts is not None else {})

    def run(self, progress: DetectorProgress) -> Outcome:
        """Keep one core busy for the configured time; then the DIA sources' association and alerts, if any."""
        started = time.process_time()
        deadline = time.perf_counter() + self.settings.standin_run_seconds
        spins = 0
        while time.perf_counter() < deadline:
            spins += 1
        metrics = {"standInCpuTime": time.process_time() - started, "snapsProcessed": float(len(progress.snaps))}
        if self.alerts is None:
            return Outcome(metrics=metrics)
        alerts = self.alerts.run(progress)
        return Outcome(metrics=metrics | alerts.metrics, output_uris=[alerts.uri])
