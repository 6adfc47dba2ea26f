"""What an operator sees of visits: each CCD's state, visits in flight, the last summaries, latencies.

A visit's picture is spread over the workers: each holds the detector-table rows of its detector
partitions (and knows which preloads it is running) and the gather rows of its visit partitions.
These functions merge what the workers report into one view; they never touch Kafka.

A CCD's state: `waiting` (fanned out, or started and waiting for raws), `preloading` (its preload
still runs), `processing` (its pipeline is dispatched, or its outcome is on its way to the gather),
then its result: `done` (success or ignored), `failed`, `timed out` or `canceled`.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.core.detector import Phase
from streams.core.focal_plane import detector_name
from streams.serde.records import DetectorProgress, VisitExpected, VisitProgress

STATES = ("waiting", "preloading", "processing", "done", "failed", "timed out", "canceled")
RESULT_STATES = {"success": "done", "ignored": "done", "failed": "failed", "timeout": "timed out",
                 "canceled": "canceled"}
LATENCY_EDGES = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0)
"""Raw-to-result histogram bins [s]; the last bin is open-ended (the alert budget is 60 s)."""


@dataclass(frozen=True)
class WorkerSlice:
    """What one worker knows about a visit."""

    rows: Sequence[DetectorProgress]
    preloading: frozenset[int]
    progress: VisitProgress | None


def ccd_state(row: DetectorProgress | None, preloading: bool, status: str | None) -> str:
    """One CCD's state: its result's if the gather has one, else its detector row's phase."""
    if status is not None:
        return RESULT_STATES.get(status, "failed")
    if row is None or row.phase in (Phase.PRESENCE, Phase.WAITING):
        return "preloading" if row is not None and row.phase == Phase.WAITING and preloading else "waiting"
    if row.phase == Phase.CANCELED:
        return "canceled"
    return "processing"  # dispatched, or done with its outcome not yet committed by the gather


def _clean(value: float) -> float | None:
    """JSON has no NaN: unknown values are null."""
    return None if math.isnan(value) else round(value, 3)


def latency_histogram(latencies: Iterable[float]) -> dict[str, list[float] | list[int]]:
    """Counts of raw-to-result latencies per bin of LATENCY_EDGES (the last bin holds everything above)."""
    counts = [0] * len(LATENCY_EDGES)
    for latency in latencies:
        index = max(i for i, edge in enumerate(LATENCY_EDGES) if latency >= edge or i == 0)
        counts[index] += 1
    return {"edges": list(LATENCY_EDGES), "counts": counts}


def _latencies(progress: VisitProgress | None) -> list[float]:
    if progress is None:
        return []
    return [o.result_time - o.first_raw_time for o in progress.outcomes if o.first_raw_time > 0]


def _progress(slices: Iterable[WorkerSlice]) -> VisitProgress | None:
    return next((s.progress for s in slices if s.progress is not None), None)


def visit_view(instrument: str, group_id: str, expected: VisitExpected | None,
               slices: Sequence[WorkerSlice]) -> dict[str, Any]:
    """One visit: every CCD's state (merged from the workers' slices), counts per state, latencies."""
    progress = _progress(slices)
    rows = {row.detector: row for s in slices for row in s.rows}
    preloading = {d for s in slices for d in s.preloading}
    statuses = {o.detector: o.status for o in progress.outcomes} if progress else {}
    detectors = sorted({*(expected.detectors if expected else ()),
                        *(progress.expected if progress and progress.expected_known else ()), *rows, *statuses})
    ccds = []
    for detector in detectors:
        row = rows.get(detector)
        ccds.append({"detector": detector, "name": detector_name(instrument, detector),
                     "state": ccd_state(row, detector in preloading, statuses.get(detector)),
                     "status": statuses.get(detector, ""), "snaps": len(row.snaps) if row else 0})
    counts = Counter(ccd["state"] for ccd in ccds)
    latencies = _latencies(progress)
    return {
        "instrument": instrument, "group_id": group_id,
        "survey": expected.survey if expected else (progress.survey if progress else ""),
        "next_visit_time": expected.next_visit_time if expected else (progress.next_visit_time if progress else 0.0),
        "deadline": expected.deadline if expected else (progress.deadline if progress else 0.0),
        "summary_time": progress.summary_time if progress else 0.0,
        "counts": {state: counts.get(state, 0) for state in STATES},
        "ccds": ccds, "latency": latency_histogram(latencies),
    }


def visit_row(expected: VisitExpected | None, progress: VisitProgress | None) -> dict[str, Any]:
    """One line of the visits list: what was expected, results so far by status, latencies."""
    assert expected is not None or progress is not None, "a visit is known from its fan-out or its gather"
    latencies = _latencies(progress)
    counts = Counter(o.status for o in progress.outcomes) if progress else Counter()
    instrument = expected.instrument if expected else progress.instrument  # type: ignore[union-attr]
    group_id = expected.group_id if expected else progress.group_id  # type: ignore[union-attr]
    next_visit_time = progress.next_visit_time if progress and progress.next_visit_time else (
        expected.next_visit_time if expected else 0.0)
    summary_time = progress.summary_time if progress else 0.0
    return {
        "instrument": instrument, "group_id": group_id,
        "survey": expected.survey if expected else progress.survey,  # type: ignore[union-attr]
        "detectors_expected": len(expected.detectors) if expected else len(progress.expected),  # type: ignore[union-attr]
        "results": sum(counts.values()), "counts": dict(sorted(counts.items())),
        "next_visit_time": next_visit_time, "summary_time": summary_time,
        "raw_to_result_p50": _clean(statistics.median(latencies)) if latencies else None,
        "raw_to_result_max": _clean(max(latencies)) if latencies else None,
        "next_visit_to_summary": _clean(summary_time - next_visit_time) if summary_time and next_visit_time else None,
    }


def overview(expected: Iterable[VisitExpected], progresses: Iterable[VisitProgress], recent: int = 10,
             ) -> dict[str, Any]:
    """Visits in flight (newest first), the last `recent` finished ones, and the latency histogram of both."""
    fanned = {(e.instrument, e.group_id): e for e in expected}
    gathered = {(p.instrument, p.group_id): p for p in progresses}
    rows = [visit_row(fanned.get(key), gathered.get(key)) for key in fanned.keys() | gathered.keys()]
    in_flight = sorted((r for r in rows if not r["summary_time"]), key=lambda r: -r["next_visit_time"])
    finished = sorted((r for r in rows if r["summary_time"]), key=lambda r: -r["summary_time"])[:recent]
    shown = [gathered.get((r["instrument"], r["group_id"])) for r in [*in_flight, *finished]]
    latencies = [latency for progress in shown for latency in _latencies(progress)]
    return {"in_flight": in_flight, "recent": finished, "latency": latency_histogram(latencies)}
