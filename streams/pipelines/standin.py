"""The stand-in pipeline: a configurable cost in place of real Alert Production.

Its preload sleeps (preloading is I/O) and its run burns CPU (processing is compute), so tests
and benchmarks exercise the framework with a known, adjustable load.
"""

from __future__ import annotations

import time

from streams.config import Settings
from streams.pipelines.base import Outcome
from streams.records import DetectorProgress


class StandIn:
    """A pipeline whose cost is set by configuration."""

    name = "stand-in"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Sleep for the configured preload time, reported as the real system's preload timings."""
        started = time.perf_counter()
        time.sleep(self.settings.standin_preload_seconds)
        total = time.perf_counter() - started
        return {"prep_butlerTotalTime": total, "prep_butlerSearchTime": 0.2 * total,
                "prep_butlerTransferTime": 0.7 * total, "prep_butlerPreprocessTime": 0.1 * total}

    def run(self, progress: DetectorProgress) -> Outcome:
        """Keep one core busy for the configured time."""
        started = time.process_time()
        deadline = time.perf_counter() + self.settings.standin_run_seconds
        spins = 0
        while time.perf_counter() < deadline:
            spins += 1
        return Outcome(metrics={"standInCpuTime": time.process_time() - started,
                                "snapsProcessed": float(len(progress.snaps))})
