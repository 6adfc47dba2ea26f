"""The gather step: a visit's progress, one result per expected detector, one summary.

The first outcome of a detector becomes its result; later ones (retries, duplicates, late
arrivals) are dropped. The summary is emitted when every expected detector has a result, or at
the visit deadline, when the missing detectors get `timeout` results. After the summary the
state is kept (to recognise stragglers) until the retention time, then forgotten.
"""

from __future__ import annotations

import bisect
import math
import statistics
from collections import Counter
from dataclasses import dataclass

from streams.core.calibrations import announcement
from streams.core.metrics import result_metrics, summary_metrics
from streams.serde.records import (
    CalibrationProduct,
    CcdResult,
    DetectorOutcome,
    Metric,
    VisitExpected,
    VisitProgress,
    VisitSummary,
)

STATUSES = ("success", "failed", "timeout", "canceled", "ignored")
ORPHAN_GRACE = 600.0
"""How long outcomes of a visit whose VisitExpected never came wait before being summarised."""


@dataclass(frozen=True, slots=True)
class EmitResult:
    """Emit the detector's one per-CCD result."""

    result: CcdResult


@dataclass(frozen=True, slots=True)
class EmitSummary:
    """Emit the visit's one summary."""

    summary: VisitSummary


@dataclass(frozen=True, slots=True)
class EmitMetric:
    """Emit a metric for the Chile bridge."""

    metric: Metric


@dataclass(frozen=True, slots=True)
class EmitCalibration:
    """Announce a master calibration the visit (a calibration sequence) certified."""

    product: CalibrationProduct


@dataclass(frozen=True, slots=True)
class Forget:
    """The state is past its retention: delete it."""


Output = EmitResult | EmitSummary | EmitMetric | EmitCalibration | Forget
Step = tuple[VisitProgress | None, list[Output]]


def _empty(instrument: str, group_id: str, now: float) -> VisitProgress:
    return VisitProgress(instrument=instrument, group_id=group_id, first_seen_time=now)


def _record(progress: VisitProgress, result: CcdResult) -> tuple[VisitProgress, list[Output]]:
    kept = DetectorOutcome(detector=result.detector, status=result.status, first_raw_time=result.first_raw_time,
                           result_time=result.result_time, exposure_ids=list(result.exposure_ids),
                           metrics=dict(result.metrics))
    # A new sorted list per outcome keeps the state immutable; copying 189 references is cheap next to the
    # rest, and detectors mostly arrive in order, so the insertion is at the end.
    outcomes = progress.outcomes.copy()
    if outcomes and outcomes[-1].detector > result.detector:
        bisect.insort(outcomes, kept, key=_detector)
    else:
        outcomes.append(kept)
    outputs: list[Output] = [EmitResult(result)]
    outputs += map(EmitMetric, result_metrics(result))
    if (product := announcement(result, result.result_time)) is not None:
        outputs.append(EmitCalibration(product))
    return progress.replace(outcomes=outcomes), outputs


def _detector(outcome: DetectorOutcome) -> int:
    return outcome.detector


def _reported(progress: VisitProgress, detector: int) -> bool:
    """Whether the detector has its result (outcomes are sorted by detector)."""
    at = bisect.bisect_left(progress.outcomes, detector, key=_detector)
    return at < len(progress.outcomes) and progress.outcomes[at].detector == detector


def _expects(progress: VisitProgress, detector: int) -> bool:
    """Whether the detector is expected (`expected` is sorted: no scan of up to 189 detectors)."""
    at = bisect.bisect_left(progress.expected, detector)
    return at < len(progress.expected) and progress.expected[at] == detector


def _complete_if_done(progress: VisitProgress, outputs: list[Output], now: float) -> Step:
    # Outcomes are one per detector, so fewer outcomes than expected detectors cannot be complete.
    if not progress.expected_known or len(progress.outcomes) < len(progress.expected):
        return progress, outputs
    reported = {o.detector for o in progress.outcomes}
    if set(progress.expected) <= reported:
        canceled = any(o.status == "canceled" for o in progress.outcomes)
        return _summarise(progress, outputs, "canceled" if canceled else "complete", now)
    return progress, outputs


def _summarise(progress: VisitProgress, outputs: list[Output], reason: str, now: float) -> Step:
    summary = summarise(progress, reason, now)
    outputs = [*outputs, EmitSummary(summary), *(EmitMetric(m) for m in summary_metrics(summary))]
    return progress.replace(summary_time=now), outputs


def summarise(progress: VisitProgress, reason: str, now: float) -> VisitSummary:
    """The summary of a visit's outcomes: counts, latencies, aggregated metrics."""
    counts = Counter(o.status for o in progress.outcomes)
    first_raws = [o.first_raw_time for o in progress.outcomes if o.first_raw_time > 0]
    raw_to_result = [o.result_time - o.first_raw_time for o in progress.outcomes if o.first_raw_time > 0]
    sums: dict[str, float] = {}
    reporters: Counter[str] = Counter()
    for o in progress.outcomes:
        for name, value in o.metrics.items():
            if math.isfinite(value):
                sums[name] = sums.get(name, 0.0) + value
                reporters[name] += 1
    return VisitSummary(
        instrument=progress.instrument, group_id=progress.group_id, survey=progress.survey, reason=reason,
        detectors_expected=len(progress.expected) if progress.expected_known else len(progress.outcomes),
        counts={status: counts.get(status, 0) for status in STATUSES},
        failed_detectors=[o.detector for o in progress.outcomes if o.status in ("failed", "timeout")],
        exposure_ids=sorted({e for o in progress.outcomes for e in o.exposure_ids}),
        next_visit_time=progress.next_visit_time,
        next_visit_to_first_raw=min(first_raws) - progress.next_visit_time if first_raws else math.nan,
        raw_to_result_p50=statistics.median(raw_to_result) if raw_to_result else math.nan,
        raw_to_result_max=max(raw_to_result) if raw_to_result else math.nan,
        next_visit_to_summary=now - progress.next_visit_time if progress.next_visit_time else math.nan,
        metrics_sum=sums, metrics_mean={name: sums[name] / reporters[name] for name in sums},
        summary_time=now,
    )


def on_expected(state: VisitProgress | None, expected: VisitExpected, now: float) -> Step:
    """The visit fanned out: learn its detectors and deadline (a re-run extends the deadline)."""
    progress = state or _empty(expected.instrument, expected.group_id, now)
    if progress.summary_time:
        return progress, []
    if progress.expected_known:
        return progress.replace(deadline=max(progress.deadline, expected.deadline)), []
    progress = progress.replace(
        survey=expected.survey, expected_known=True, expected=sorted(set(expected.detectors)),
        ignored=not expected.pipelines, nimages=expected.nimages, next_visit_time=expected.next_visit_time,
        deadline=expected.deadline,
    )
    outputs: list[Output] = []
    if progress.ignored:
        reported = {o.detector for o in progress.outcomes}
        for detector in progress.expected:
            if detector not in reported:
                progress, emitted = _record(progress, _synthetic(progress, detector, "ignored", now,
                                                                 f"no pipeline for survey {progress.survey!r}"))
                outputs += emitted
    return _complete_if_done(progress, outputs, now)


def on_outcome(state: VisitProgress | None, result: CcdResult, now: float) -> Step:
    """A detector reported: its first outcome is its result; anything later is dropped."""
    progress = state or _empty(result.instrument, result.group_id, now)
    if progress.summary_time or _reported(progress, result.detector):
        return progress, []
    if progress.expected_known and not _expects(progress, result.detector):
        return progress, []
    if not progress.survey:
        progress = progress.replace(survey=result.survey, next_visit_time=result.next_visit_time)
    progress, outputs = _record(progress, result)
    return _complete_if_done(progress, outputs, now)


def on_tick(state: VisitProgress, now: float, retention: float) -> Step:
    """Wall-clock time passed: time out missing detectors at the deadline, or forget old state."""
    if state.summary_time:
        return (None, [Forget()]) if now - state.summary_time > retention else (state, [])
    if state.expected_known and now >= state.deadline:
        progress, outputs = state, []
        reported = {o.detector for o in state.outcomes}
        for detector in state.expected:
            if detector not in reported:
                progress, emitted = _record(progress, _synthetic(
                    progress, detector, "timeout", now, "no result before the visit deadline"))
                outputs += emitted
        return _summarise(progress, outputs, "deadline", now)
    if not state.expected_known and now - state.first_seen_time >= ORPHAN_GRACE:
        return _summarise(state, [], "deadline", now)
    return state, []


def _synthetic(progress: VisitProgress, detector: int, status: str, now: float, why: str) -> CcdResult:
    return CcdResult(
        instrument=progress.instrument, group_id=progress.group_id, detector=detector, status=status,
        error_class="VisitDeadline" if status == "timeout" else "", error_message=why,
        survey=progress.survey, snaps_expected=progress.nimages, next_visit_time=progress.next_visit_time,
        result_time=now,
    )
