"""Metrics events derived from results and summaries, for the Chile bridge and Sasquatch.

Names follow the real system where they map: the preload timings are `prep_butler*Time`
(set by the pipeline runner), the rest are framework timings in seconds and counts.
"""

from __future__ import annotations

import math

from streams.serde.records import CcdResult, Metric, VisitSummary


def _metric(name: str, value: float, unit: str, instrument: str, group_id: str, survey: str,
            detector: int, timestamp: float) -> Metric:
    return Metric(name=name, value=value, unit=unit, instrument=instrument, group_id=group_id,
                  detector=detector, survey=survey, timestamp=timestamp)


def result_metrics(result: CcdResult) -> list[Metric]:
    """Per-CCD metrics: the pipeline's own, then the framework's timings."""
    timings = {
        "nextVisitToResultTime": result.result_time - result.next_visit_time if result.next_visit_time else math.nan,
        "rawToResultTime": result.result_time - result.first_raw_time if result.first_raw_time else math.nan,
        "pipelineRunTime": (result.process_end_time - result.process_start_time
                            if result.process_start_time else math.nan),
    }
    units = {name: "s" for name in timings}
    values = {**result.metrics, **timings}
    return [
        _metric(name, value, units.get(name, "s" if name.endswith("Time") else ""), result.instrument,
                result.group_id, result.survey, result.detector, result.result_time)
        for name, value in values.items()
    ]


def summary_metrics(summary: VisitSummary) -> list[Metric]:
    """Per-visit metrics: counts by status and the visit's latencies."""
    values: dict[str, tuple[float, str]] = {
        f"ccd{status.capitalize()}Count": (float(count), "count") for status, count in summary.counts.items()
    }
    values |= {
        "nextVisitToSummaryTime": (summary.next_visit_to_summary, "s"),
        "nextVisitToFirstRawTime": (summary.next_visit_to_first_raw, "s"),
        "rawToResultP50Time": (summary.raw_to_result_p50, "s"),
        "rawToResultMaxTime": (summary.raw_to_result_max, "s"),
    }
    return [_metric(name, value, unit, summary.instrument, summary.group_id, summary.survey, -1,
                    summary.summary_time) for name, (value, unit) in values.items()]
