"""`make demo`: a short simulated night through the topology and the Alert Production pipeline.

It starts the local stack and a worker (the faust CLI), writes a night (master calibrations,
templates, and raws of every detector with variable sources injected at known positions; the third
visit returns to the first one's field), replays its visits as nextVisit and raw-arrival events,
and prints, per visit, the summary, the alerts sent, and how many of the injected transients the
alerts recovered. The stack stays up afterwards (`python -m stack down`, or `make down`, stops it).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from stack.cluster import LOCAL_DIR, Cluster
from streams.config import Settings
from streams.ops.inspection import Inspector
from streams.ops.workers import WorkerPool
from streams.science.geometry import CcdShape
from streams.science.photometry import AB_NJY_ZERO
from streams.serde.records import CcdResult, VisitSummary
from streams.simulate.night import plan_night, replay, write_night
from streams.simulate.scoring import score_alerts
from streams.simulate.visits import Visits, by_group

VISITS = 3
FIELDS = 2
"""Visit i points at field i mod FIELDS: the third visit's alerts carry the first one's sources as history."""
SIZE = 256
ALERT_WAIT_S = 60.0


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


def calibration_line(truth_path: Path, results: list[CcdResult]) -> str:
    """How the astrometric fits and zero points of a visit's CCDs went, the zero points against the truth."""
    truth = Table.read(truth_path, hdu="DETECTORS")
    true_njy = dict(zip(truth["detector"].tolist(), truth["njy_per_electron"].tolist(), strict=True))
    fitted = [r for r in results if r.metrics.get("astromFallback") == 0.0]
    calibrated = [r for r in results if r.metrics.get("photoCalibFallback") == 0.0]
    errors = [abs(10 ** (-0.4 * (r.metrics["photoCalibZeroPoint"] - AB_NJY_ZERO)) / true_njy[r.detector] - 1)
              for r in calibrated]
    rms = [r.metrics["astromRmsArcsec"] for r in fitted]
    return (f"  astrometry fitted on {len(fitted)}/{len(results)} CCDs (median rms "
            f"{np.median(rms) if rms else math.nan:.3f} arcsec); zero point fitted on {len(calibrated)}/"
            f"{len(results)}, within {100 * np.median(errors) if errors else math.nan:.1f}% of the truth (median)")


def this_night(read: Callable[..., list[Any]], groups: list[str], count: int, timeout: float) -> list[Any]:
    """The records of this night's groups, once `count` are there (or after `timeout`): the topics also hold
    earlier demos' records, which must not count."""
    deadline = time.monotonic() + timeout
    while True:
        mine = [record for record in read(0, timeout=10.0, settle=1.0) if record.group_id in groups]
        if len(mine) >= count or time.monotonic() > deadline:
            return mine
        time.sleep(5.0)


def read_alerts(settings: Settings, visit_ids: set[int], expected: int) -> list[dict[str, Any]]:
    """The committed alerts of these visits, once `expected` are there (or after ALERT_WAIT_S)."""
    deadline = time.monotonic() + ALERT_WAIT_S
    while True:
        alerts = [a for _m, a in Inspector(settings).records(settings.alert_topic)
                  if isinstance(a, dict) and a["diaSource"]["visit"] in visit_ids]
        if len(alerts) >= expected or time.monotonic() > deadline:
            return alerts
        time.sleep(2.0)


def main() -> int:
    """Run the demo; return the exit status."""
    state = Cluster("main").up()
    print(f"stack: Kafka at {state.bootstrap}, schema registry at {state.registry_url}")
    settings = Settings.from_env().on(state.client())
    night = plan_night(VISITS, tuple(range(189)), CcdShape(SIZE, SIZE), seed=int(time.time()),  # ids from now
                       fields=FIELDS)
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
        results = this_night(visits.results, groups, 189 * VISITS, timeout=900)
        summaries = this_night(visits.summaries, groups, VISITS, timeout=120)
        alerts = read_alerts(settings, {v.exposure_ids[0] for v in night.visits},
                             sum(int(r.metrics.get("alertCount", 0)) for r in results))
    finally:
        pool.stop_all()
    for visit in night.visits:
        for summary in by_group(summaries, visit.group_id):
            print(show(summary))
        mine = [alert for alert in alerts if alert["diaSource"]["visit"] == visit.exposure_ids[0]]
        recurring = sum(1 for alert in mine if alert["prvDiaSources"])
        print(f"  alerts sent {len(mine)}: {recurring} of them for sources seen in an earlier visit (with history)")
        processed = [r.detector for r in by_group(results, visit.group_id)
                     if r.status == "success" and r.pipeline == "ap"]
        recovery = score_alerts(Path(settings.data_root) / "truth" / f"{visit.group_id}.fits", mine, processed)
        print(f"  transients with S/N >= 10 recovered from the alerts within 1 pixel: {recovery.found}/"
              f"{recovery.bright} ({100 * recovery.completeness:.0f}%); alerts not injected: {recovery.spurious}/"
              f"{recovery.detections}")
        print(calibration_line(Path(settings.data_root) / "truth" / f"{visit.group_id}.fits",
                               [r for r in by_group(results, visit.group_id) if r.status == "success"]))
    print("the stack is still running: `python -m stack down` (or `make down` in a checkout) stops it")
    return 0 if len(summaries) == VISITS else 1


if __name__ == "__main__":
    sys.exit(main())
