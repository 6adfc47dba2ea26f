"""Prometheus metrics of a worker at `/metrics`: Faust's sensor and the project's own.

Faust's `PrometheusMonitor` counts messages, events, sends, commits, rebalances and web requests
(names prefixed `prompt_streams_faust_`); ours (prefixed `prompt_streams_`) follow a visit:
results by status, dispatch and gather latencies, raw-to-result latency, visits in flight, dead
letters and consumer lag. Counters live in this module's registry, so the gather thread and the
agents update them directly (prometheus_client is thread-safe); gauges that describe state are
computed when scraped.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping

import faust
from faust.sensors.prometheus import setup_prometheus_sensors
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.serde.records import DetectorProgress

REGISTRY = CollectorRegistry()
SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0, 600.0)

RESULTS = Counter("prompt_streams_results", "Per-CCD results committed by this worker's gather, by status.",
                  ["instrument", "status"], registry=REGISTRY)
SUMMARIES = Counter("prompt_streams_visit_summaries", "Visit summaries committed by this worker's gather.",
                    ["instrument", "reason"], registry=REGISTRY)
DEAD_LETTERS = Counter("prompt_streams_dead_letters", "Events sent to the dead-letter topic, by agent.",
                       ["agent"], registry=REGISTRY)
PROCESSED = Counter("prompt_streams_records_processed", "Input records each processor consumed, in committed batches.",
                    ["processor"], registry=REGISTRY)
DISPATCH_LATENCY = Histogram(
    "prompt_streams_dispatch_latency_seconds",
    "From the raw that completed a detector's snaps (or its image deadline) to its pipeline's dispatch.",
    buckets=SECONDS, registry=REGISTRY)
GATHER_LATENCY = Histogram(
    "prompt_streams_gather_latency_seconds",
    "From a detector's outcome to its result's commit by the gather (exactly-once step).",
    buckets=SECONDS, registry=REGISTRY)
RAW_TO_RESULT = Histogram(
    "prompt_streams_raw_to_result_seconds", "From a detector's first raw to its result (the alert budget is 60 s).",
    buckets=SECONDS, registry=REGISTRY)
ALERTS = Counter("prompt_streams_alerts", "Alerts committed to the alert stream by this worker's alert publisher.",
                 ["instrument"], registry=REGISTRY)
RAW_TO_ALERTS = Histogram(
    "prompt_streams_raw_to_alerts_seconds",
    "From a detector's first raw to its alerts' commit on the alert stream (the budget is 60 s from shutter close).",
    buckets=SECONDS, registry=REGISTRY)


def observe_many(histogram: Histogram, amounts: list[float]) -> None:
    """`histogram.observe` of each amount, with one locked increment per bucket instead of two per amount (the
    gather observes two per result, thousands per second). Reads prometheus_client's private bucket list:
    if it is not there, it observes one by one."""
    if not amounts:
        return
    bounds, buckets, total = (getattr(histogram, name, None) for name in ("_upper_bounds", "_buckets", "_sum"))
    if bounds is None or buckets is None or total is None:
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = Tally(bisect.bisect_left(bounds, amount) for amount in amounts if not math.isnan(amount))
    for at, count in counts.items():
        buckets[at].inc(count)
    total.inc(sum(amounts))


def count_by(counter: Counter, tally: Mapping[tuple[str, ...], int]) -> None:
    """Add each label set's count to `counter`: one locked increment per label set."""
    for labels, count in tally.items():
        counter.labels(*labels).inc(count)


def observe_dispatch(progress: DetectorProgress) -> None:
    """Count a dispatch's wait: from the last raw it holds (or from its image deadline, if earlier
    snaps never came) to the dispatch."""
    if progress.snaps and progress.dispatch_time:
        ready = max(snap.arrival_time for snap in progress.snaps)
        if len(progress.snaps) < progress.nimages:
            ready = max(ready, progress.image_deadline)
        DISPATCH_LATENCY.observe(max(progress.dispatch_time - ready, 0.0))


Lags = Callable[[], Mapping[tuple[str, str, int], int]]
"""(consumer group, topic, partition) -> messages not yet consumed."""


class StateCollector(Collector):
    """Gauges computed at scrape time from the worker's state: visits in flight and consumer lag."""

    def __init__(self, in_flight: Callable[[], int], lags: Iterable[Lags]) -> None:
        self.in_flight = in_flight
        self.lags = list(lags)

    def collect(self) -> Iterable[Metric]:
        """The current values."""
        visits = GaugeMetricFamily("prompt_streams_visits_in_flight",
                                   "Visits this worker's gather holds without a summary yet.")
        visits.add_metric([], self.in_flight())
        yield visits
        lag = GaugeMetricFamily("prompt_streams_consumer_lag", "Messages not yet consumed, per partition.",
                                labels=["group", "topic", "partition"])
        for source in self.lags:
            for (group, topic, partition), value in sorted(source().items()):
                lag.add_metric([group, topic, str(partition)], value)
        yield lag


class Shared(Collector):
    """The process's own counters and histograms (REGISTRY), inside an app's registry."""

    def collect(self) -> Iterable[Metric]:
        """Everything in REGISTRY."""
        yield from REGISTRY.collect()


def register(app: faust.App, in_flight: Callable[[], int], processor_lags: Lags) -> None:
    """Serve `/metrics`: Faust's sensor, the project's counters and the state gauges, in the app's registry
    (one per app, so building a second app in a process, as tests do, registers nothing twice)."""
    registry = CollectorRegistry()
    setup_prometheus_sensors(app, registry=registry, name_prefix="prompt_streams_faust")
    registry.register(Shared())
    registry.register(StateCollector(in_flight, [processor_lags]))
