"""`make demo`: start the local stack and a worker, run a full LSSTCam visit, print its summary.

The visit is announced with a SAL nextVisit, its 189 detectors x 2 snaps arrive as the camera
writes them, the stand-in pipeline runs on each, and the gather emits the one visit summary.
The stack stays up afterwards for you to explore (`make down` stops it).
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from datetime import UTC, datetime

from stack.cluster import LOCAL_DIR, Cluster
from stack.workers import WorkerPool
from streams.config import Settings
from streams.driver import Visits, by_group
from streams.records import VisitSummary

DETECTORS = range(189)


def show(summary: VisitSummary) -> str:
    """A visit summary for people."""
    def seconds(value: float) -> str:
        return "n/a" if math.isnan(value) else f"{value:.2f} s"

    counts = ", ".join(f"{status} {count}" for status, count in summary.counts.items() if count)
    return "\n".join([
        f"visit {summary.instrument} {summary.group_id} (survey {summary.survey}): {summary.reason}",
        f"  detectors: {summary.detectors_expected} expected; {counts}",
        f"  exposures: {', '.join(map(str, summary.exposure_ids))}",
        f"  nextVisit -> first raw {seconds(summary.next_visit_to_first_raw)}; "
        f"raw -> result p50 {seconds(summary.raw_to_result_p50)}, max {seconds(summary.raw_to_result_max)}; "
        f"nextVisit -> summary {seconds(summary.next_visit_to_summary)}",
        f"  preload (prep_butlerTotalTime) mean {seconds(summary.metrics_mean.get('prep_butlerTotalTime', math.nan))}",
    ])


def main() -> int:
    """Run the demo; return the exit status."""
    state = Cluster("main").up()
    print(f"stack: Kafka at {state.bootstrap}, schema registry at {state.registry_url}")
    settings = replace(Settings.from_env(), bootstrap=state.bootstrap, registry_url=state.registry_url,
                       standin_run_seconds=0.05)
    pool = WorkerPool(settings, LOCAL_DIR / "logs" / "demo")
    try:
        worker = pool.start("demo-worker")
        print(f"worker: `faust -A streams.app worker` is ready (log: {worker.log})")
        visits = Visits(settings)
        group = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        visits.next_visit(group, instrument="LSSTCam", duration=30.0, nimages=2)
        print(f"sent: nextVisit for LSSTCam group {group} (189 detectors, 2 snaps)")
        visits.raws([visits.raw(group, d, snap, 100 + snap, instrument="LSSTCam")
                     for d in DETECTORS for snap in (0, 1)])
        print(f"sent: {2 * len(DETECTORS)} raw arrivals; waiting for the results and the summary ...")
        results = by_group(visits.results(len(DETECTORS), timeout=300, settle=1.0), group)
        summary = by_group(visits.summaries(1, timeout=60, settle=0.5), group)
    finally:
        pool.stop_all()
    print(f"results: {len(results)} per-CCD results")
    for found in summary:
        print(show(found))
    print("the stack is still running: `make down` stops it")
    return 0 if len(summary) == 1 and len(results) == len(DETECTORS) else 1


if __name__ == "__main__":
    sys.exit(main())
