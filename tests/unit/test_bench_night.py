"""The night case's arithmetic and section of the report (the run itself is `make bench`, never a test)."""

from __future__ import annotations

import argparse
import math

from bench.harness import Spread
from bench.night import Lag, NightRun, Sample, all_success, along, group_of, lag_rows, quarter_rates, steady_rate
from bench.report import Results, render
from streams.serde.records import VisitSummary

MB = 1 << 20


def _night(**changes: object) -> NightRun:
    run = NightRun(
        sent=200, workers=2, processes=2, seconds=100.0, steady_rate=2.5, steady_visits=160,
        latency=Spread.of([1.0, 2.0, 3.0]), summaries=200, distinct_summaries=200, summaries_all_success=200,
        results=37800, distinct_results=37800, statuses={"success": 37800}, lost=0, reasons={"complete": 200},
        warm_visits=50, end_visits=200, rss_ready=[150 * MB, 140 * MB], rss_warm=[200 * MB, 190 * MB],
        rss_end=[230 * MB, 205 * MB], rss_max=[231 * MB, 206 * MB], children_warm=[540 * MB, 540 * MB],
        children_end=[540 * MB, 546 * MB], children_max=[541 * MB, 546 * MB],
        cpu={"faust workers": 60.0, "Kafka broker": 70.0, "everything else on the machine": 10.0},
        lags=[Lag("detector", "bench-night.prompt.raw-image-available", 1200, 500.0, 300.0, 700.0),
              Lag("gather", "bench-night.prompt.ccd-outcome", 400, 100.0),
              Lag("detector", "bench-night.prompt.pipeline-done", 300, 80.0, 80.0, 80.0)],
        processed={"detector": 150000.0, "gather": 38000.0, "sal-intake": 200.0, "ocps-jobs": 0.0},
        quarter_rates=[4.0, 2.0], rss_along=[(100, [210 * MB, 195 * MB]), (200, [230 * MB, 205 * MB])])
    for name, value in changes.items():
        setattr(run, name, value)
    return run


def test_the_steady_rate_leaves_out_the_start_and_the_drain() -> None:
    # 10 slow visits to start, 81 at 4 per second, 10 slow ones to drain: the middle 80 % sees only the fast ones.
    times = [float(i) for i in range(10)] + [10.0 + i / 4 for i in range(81)] + [31.0 + i for i in range(10)]
    rate, visits = steady_rate(times)
    assert visits == 80 and rate == 4.0
    assert math.isnan(steady_rate([5.0])[0])


def test_the_night_is_followed_by_quarter_so_a_slowdown_or_a_growth_shows() -> None:
    times = [0.0]
    for rate in (4.0, 2.0, 1.0, 4.0):  # 25 visits at each rate, 101 summaries in all
        times += [times[-1] + (i + 1) / rate for i in range(25)]
    assert quarter_rates(times) == [4.0, 2.0, 1.0, 4.0]
    assert quarter_rates([1.0, 2.0]) == []
    samples = [Sample(float(i), visits, [visits * MB], [0]) for i, visits in enumerate((0, 30, 60, 90, 99))]
    assert along(samples, 100) == [(30, [30 * MB]), (60, [60 * MB]), (90, [90 * MB]), (99, [99 * MB])]


def test_memory_growth_is_per_1000_of_the_visits_measured_and_none_without_any() -> None:
    run = _night()
    assert run.measured_visits == 150
    assert run.growth_per_1000(run.rss_warm, run.rss_end) == [200 * MB, 100 * MB]
    assert all(math.isnan(g) for g in _night(end_visits=50).growth_per_1000(run.rss_warm, run.rss_end))


def test_a_visit_is_all_success_only_if_every_detector_succeeded_and_it_completed() -> None:
    counts = {"success": 189, "failed": 0, "timeout": 0, "canceled": 0, "ignored": 0}
    def summary(reason: str = "complete", **changed: int) -> VisitSummary:
        return VisitSummary(instrument="LSSTCam", group_id="g", reason=reason, counts=counts | changed)

    assert all_success(summary())
    assert not all_success(summary(success=188, timeout=1))
    assert not all_success(summary("deadline"))
    assert group_of(3661) == "2026-11-25T01:01:01.000"


def test_the_night_section_has_its_figures_and_says_when_something_is_wrong() -> None:
    text = render(Results(night=_night()), argparse.Namespace(night_visits=200))
    assert "## 7. A night" in text and "at most 4 visits in flight" in text
    assert "| 200 | 100.0 | 2.00 | 2.50 (160) | 2.0 / 3.0 / 3.0 | 200 (200, 200) | 37800 (37800) | success 37800 " \
           "| 0 / 0 |" in text
    assert "measured over 150 visits" in text
    assert "| faust worker | 150, 140 | 200, 190 | 230, 205 | 231, 206 | 30, 15 | 200, 100 |" in text
    assert "| detector | 150000 | raw-image-available: 500 / 1200 (300 -> 700); pipeline-done: 80 / 300 (80 -> 80) |" \
        in text
    assert "visits/s 4.00, 2.00; faust worker RSS [MB] after 100 visits 210, 195; after 200 visits 230, 205." in text
    assert "| sal-intake | 200 | 0 |" in text and "ocps-jobs" not in text
    assert "faust workers 300 ms; Kafka broker 350 ms" in text and "not as expected" not in text
    wrong = render(Results(night=_night(statuses={"success": 37799, "timeout": 1}, reasons={"complete": 199,
                                                                                           "deadline": 1})),
                   argparse.Namespace())
    assert "| success 37799, timeout 1 | 0 / 2 |" in wrong and "**not as expected**" in wrong


def test_the_lag_rows_put_the_worst_processor_first() -> None:
    assert [name for name, _, _ in lag_rows(_night())] == ["detector", "gather", "sal-intake"]
