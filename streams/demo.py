"""`make demo`: a short simulated night through the topology and the Alert Production pipeline.

It starts the local stack and a worker (the faust CLI), writes a night (master calibrations,
templates, and raws of every detector with transients injected at known positions), replays its
visits as nextVisit and raw-arrival events, and prints, per visit, the summary and how many of
the injected transients the pipeline found. The stack stays up afterwards (`make down` stops it).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import replace
from pathlib import Path

from stack.cluster import LOCAL_DIR, Cluster
from stack.workers import WorkerPool
from streams.config import Settings
from streams.driver import Visits, by_group
from streams.records import VisitSummary
from streams.science.geometry import CcdShape
from streams.simulate.night import plan_night, replay, write_night
from streams.simulate.scoring import score

VISITS = 3
SIZE = 256


def show(summary: VisitSummary) -> str:
    """A visit summary for people."""
    def seconds(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.1f} s"

    counts = ", ".join(f"{status} {count}" for status, count in summary.counts.items() if count)
    return "\n".join([
        f"visit {summary.instrument} {summary.group_id} ({summary.survey}): {summary.reason}; {counts}",
        f"  nextVisit -> first raw {seconds(summary.next_visit_to_first_raw)}; raw -> result p50 "
        f"{seconds(summary.raw_to_result_p50)}, max {seconds(summary.raw_to_result_max)}; nextVisit -> summary "
        f"{seconds(summary.next_visit_to_summary)}",
        f"  DIA sources {summary.metrics_sum.get('diaSourceCount', 0):.0f}; PSF FWHM "
        f"{summary.metrics_mean.get('psfFwhm', math.nan):.2f} arcsec; preload "
        f"{1000 * summary.metrics_mean.get('prep_butlerTotalTime', math.nan):.0f} ms per CCD",
    ])


def main() -> int:
    """Run the demo; return the exit status."""
    state = Cluster("main").up()
    print(f"stack: Kafka at {state.bootstrap}, schema registry at {state.registry_url}")
    settings = replace(Settings.from_env(), bootstrap=state.bootstrap, registry_url=state.registry_url)
    night = plan_night(VISITS, tuple(range(189)), CcdShape(SIZE, SIZE), seed=int(time.time()))  # ids from now
    print(f"writing a night of {VISITS} visits x 189 detectors x 2 snaps ({SIZE} x {SIZE} pixels) "
          f"under {settings.data_root}")
    arrivals = write_night(Path(settings.data_root), night)
    pool = WorkerPool(settings, LOCAL_DIR / "logs" / "demo")
    try:
        worker = pool.start("demo-worker")
        print(f"worker: `faust -A streams.app worker` is ready (log: {worker.log})")
        visits = Visits(settings)
        replay(visits, night, arrivals, lead_time=3.0, snap_interval=2.0, visit_interval=25.0)
        groups = [v.group_id for v in night.visits]
        results = [r for r in visits.results(189 * VISITS, timeout=900, settle=2.0) if r.group_id in groups]
        summaries = [s for s in visits.summaries(VISITS, timeout=120, settle=1.0) if s.group_id in groups]
    finally:
        pool.stop_all()
    for visit in night.visits:
        for summary in by_group(summaries, visit.group_id):
            print(show(summary))
        recovery = score(Path(settings.data_root) / "truth" / f"{visit.group_id}.fits",
                         by_group(results, visit.group_id))
        print(f"  transients with S/N >= 10 found within 1 pixel: {recovery.found}/{recovery.bright} "
              f"({100 * recovery.completeness:.0f}%); detections not injected: {recovery.spurious}/"
              f"{recovery.detections}")
    print("the stack is still running: `make down` stops it")
    return 0 if len(summaries) == VISITS else 1


if __name__ == "__main__":
    sys.exit(main())
