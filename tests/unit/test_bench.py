"""The benchmark harness's arithmetic and report (the runs themselves are `make bench`, never a test)."""

from __future__ import annotations

import argparse
import math

from bench.harness import Spread
from bench.overhead import Overhead
from bench.report import Results, render
from bench.throughput import Rate


def test_percentiles_are_observed_values_by_nearest_rank() -> None:
    spread = Spread.of([float(v) for v in range(100, 0, -1)])
    assert (spread.count, spread.p50, spread.p99, spread.max) == (100, 50.0, 99.0, 100.0)
    assert Spread.of([0.004]).p99 == 0.004
    assert math.isnan(Spread.of([]).p50)


def test_rate_counts_what_happened_between_the_first_and_the_last_output() -> None:
    summaries = Rate("Prompt Streams", outputs=201, per_output=189, seconds=10.0)
    assert summaries.results_per_second == 200 * 189 / 10.0
    assert summaries.visits_per_second == 20.0
    assert math.isnan(Rate("x", outputs=1, per_output=189, seconds=0.0).results_per_second)


def test_the_report_has_a_row_for_every_run_and_the_ratios() -> None:
    ms = Spread.of([0.001, 0.002, 0.010])
    overhead = Overhead(2, 50, ms, ms, ms, ms, rss_start=[100 << 20, 110 << 20], rss_warm=[120 << 20, 120 << 20],
                        rss_end=[125 << 20, 130 << 20], lost=1)
    rates = [Rate("Prompt Streams", 201, 189, 20.0), Rate("Kafka Streams", 201, 189, 5.0),
             Rate("Quix Streams", 201, 189, 10.0), Rate("confluent-kafka ceiling", 37800, 1, 1.0)]
    text = render(Results([overhead], rates, ["# Built-in Alert Production", "| isr | 0.25 |"], 600.0),
                  argparse.Namespace(visits=50))
    assert "| 2 | 50 (1) | 3 | 2.0 / 10.0 / 10.0 |" in text
    assert "| Kafka Streams | 7560 | 40.0 | 4.00 |" in text
    assert "| Quix Streams | 3780 | 20.0 | 2.00 |" in text
    assert "| overhead run, 2 worker(s) | 50 | 100, 110 | 125, 130 | 100, 200 |" in text
    assert "### Built-in Alert Production" in text and "| isr | 0.25 |" in text
