"""The token bucket that keeps log storms from flooding Chile."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.core.ratelimit import admit, full, reported


def test_burst_then_rate_and_suppressed_count() -> None:
    """Burst records pass at once, then one per 1/rate seconds; refusals are counted until reported."""
    bucket = full(2, 0.0)
    results = []
    for t in (0.0, 0.0, 0.0, 0.5, 1.0):
        bucket, ok = admit(bucket, t, rate=1.0, burst=2)
        results.append(ok)
        if ok:
            assert bucket.suppressed == (2 if t == 1.0 else 0)
            bucket = reported(bucket)
    assert results == [True, True, False, False, True]


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200))
def test_never_more_than_burst_plus_rate_times_span(times: list[float]) -> None:
    """Whatever the arrival times (even out of order), admitted <= burst + rate * (max time - start)."""
    bucket, admitted = full(5, 0.0), 0
    for t in times:
        bucket, ok = admit(bucket, t, rate=2.0, burst=5)
        admitted += ok
    assert admitted <= 5 + 2.0 * max(times, default=0.0)
