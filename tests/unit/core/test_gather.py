"""The gather state machine."""

from __future__ import annotations

import math

from streams.core import gather
from streams.core.visit import plan_visit
from streams.serde.records import CcdResult
from tests.unit.core.flow import INSTRUMENTS, POLICY, SURVEYS, T0, next_visit

GROUP = "2026-11-25T01:00:00.000"


def result(detector: int, status: str = "success", first_raw: float = T0 + 30, at: float = T0 + 40,
           metrics: dict[str, float] | None = None) -> CcdResult:
    """A detector's outcome."""
    return CcdResult(instrument="TestCam", group_id=GROUP, detector=detector, status=status,
                     first_raw_time=first_raw, result_time=at, next_visit_time=T0, exposure_ids=[100 + detector],
                     metrics=metrics or {})


def expected():  # type: ignore[no-untyped-def]
    """What the gather expects of the TestCam visit (detectors 0, 1, 2)."""
    return plan_visit(next_visit(), INSTRUMENTS, SURVEYS, POLICY, T0 + 1).expected


def summaries(outputs: list[gather.Output]) -> list[gather.EmitSummary]:
    """The summaries among the outputs."""
    return [o for o in outputs if isinstance(o, gather.EmitSummary)]


def test_summary_when_the_last_detector_reports() -> None:
    """Three expected, three results: one summary with counts and latencies."""
    state, _ = gather.on_expected(None, expected(), T0 + 1)
    state, out = gather.on_outcome(state, result(0, metrics={"diaSourceCount": 4.0}), T0 + 40)
    assert next(type(o).__name__ for o in out) == "EmitResult" and not summaries(out)
    state, out = gather.on_outcome(state, result(1, "failed", first_raw=T0 + 31, at=T0 + 50), T0 + 50)
    state, out = gather.on_outcome(state, result(2, metrics={"diaSourceCount": 6.0}), T0 + 60)
    [summary] = [s.summary for s in summaries(out)]
    assert summary.counts == {"success": 2, "failed": 1, "timeout": 0, "canceled": 0, "ignored": 0}
    assert summary.reason == "complete" and summary.failed_detectors == [1]
    assert summary.next_visit_to_first_raw == 30.0 and summary.raw_to_result_max == 19.0
    assert summary.raw_to_result_p50 == 10.0 and summary.next_visit_to_summary == 60.0
    assert summary.metrics_sum == {"diaSourceCount": 10.0} and summary.metrics_mean == {"diaSourceCount": 5.0}
    assert summary.exposure_ids == [100, 101, 102]


def test_duplicate_and_late_outcomes_are_dropped() -> None:
    """A second outcome for a detector, or any outcome after the summary, emits nothing."""
    state, _ = gather.on_expected(None, expected(), T0)
    state, _ = gather.on_outcome(state, result(0), T0)
    state, out = gather.on_outcome(state, result(0, "failed"), T0)
    assert out == []
    state, _ = gather.on_outcome(state, result(1), T0)
    state, _ = gather.on_outcome(state, result(2), T0)
    assert state.summary_time
    state, out = gather.on_outcome(state, result(2, "failed"), T0 + 1)
    assert out == []


def test_outcomes_before_expected_are_kept() -> None:
    """Results that overtake the VisitExpected record count once it arrives."""
    state, _ = gather.on_outcome(None, result(0), T0)
    state, _ = gather.on_outcome(state, result(1), T0)
    state, _ = gather.on_outcome(state, result(2), T0)
    assert not state.summary_time
    state, out = gather.on_expected(state, expected(), T0 + 1)
    assert len(summaries(out)) == 1


def test_deadline_times_out_the_missing_detectors() -> None:
    """At the visit deadline, missing detectors get timeout results and the summary follows."""
    state, _ = gather.on_expected(None, expected(), T0)
    state, _ = gather.on_outcome(state, result(0), T0)
    state, out = gather.on_tick(state, state.deadline - 1, POLICY.retention)
    assert out == []
    state, out = gather.on_tick(state, state.deadline, POLICY.retention)
    timeouts = [o.result.detector for o in out if isinstance(o, gather.EmitResult)]
    [summary] = [s.summary for s in summaries(out)]
    assert timeouts == [1, 2] and summary.reason == "deadline" and summary.counts["timeout"] == 2


def test_ignored_visit_reports_every_detector_ignored() -> None:
    """No pipeline for the survey: ignored results and a summary straight away."""
    plan = plan_visit(next_visit(survey="BLOCK-T454"), INSTRUMENTS, SURVEYS, POLICY, T0)
    _, out = gather.on_expected(None, plan.expected, T0)
    statuses = [o.result.status for o in out if isinstance(o, gather.EmitResult)]
    [summary] = [s.summary for s in summaries(out)]
    assert statuses == ["ignored"] * 3 and summary.counts["ignored"] == 3
    assert math.isnan(summary.raw_to_result_p50)


def test_summarised_state_is_forgotten_after_retention() -> None:
    """After the retention time the state is deleted."""
    state, _ = gather.on_expected(None, expected(), T0)
    for d in range(3):
        state, _ = gather.on_outcome(state, result(d), T0)
    kept, out = gather.on_tick(state, T0 + 10, 100)
    assert kept is state and out == []
    gone, out = gather.on_tick(state, T0 + 101, 100)
    assert gone is None and isinstance(out[0], gather.Forget)
