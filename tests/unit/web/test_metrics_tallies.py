"""The gather's tallied Prometheus updates expose what one update per observation would."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from streams.observability.metrics import SECONDS, count_by, observe_many


def exposed(registry: CollectorRegistry) -> list[str]:
    """The registry's exposition, without the creation times."""
    return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]


def test_tallies_expose_the_same_series_as_one_update_each() -> None:
    one, many = CollectorRegistry(), CollectorRegistry()
    amounts = [0.0, 0.01, 0.0100001, 0.05, 3.0, 1e9, 600.0, 600.1, 0.3, math.inf]
    histogram = Histogram("latency_seconds", "x", buckets=SECONDS, registry=one)
    for amount in amounts:
        histogram.observe(amount)
    observe_many(Histogram("latency_seconds", "x", buckets=SECONDS, registry=many), amounts)
    counter = Counter("results", "x", ["instrument", "status"], registry=one)
    for labels in [("LSSTCam", "success")] * 3 + [("LSSTCam", "failed")]:
        counter.labels(*labels).inc()
    count_by(Counter("results", "x", ["instrument", "status"], registry=many),
             {("LSSTCam", "success"): 3, ("LSSTCam", "failed"): 1})
    assert exposed(one) == exposed(many)
