"""A token bucket, as a pure function: how log storms are kept from flooding Chile.

`burst` records may go at once; after that, `rate` per second on average. What the bucket
refuses is counted, so the next record that goes out can say how many were dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Bucket:
    """The state of one rate limit."""

    tokens: float
    updated: float
    """Time of the last refill, in whatever clock the caller uses (seconds)."""
    suppressed: int = 0
    """Records refused since the last one admitted."""


def full(burst: int, now: float) -> Bucket:
    """A bucket that admits `burst` records at once from `now`."""
    return Bucket(tokens=float(burst), updated=now)


def admit(bucket: Bucket, now: float, rate: float, burst: int) -> tuple[Bucket, bool]:
    """Whether one more record at `now` may go; the bucket refills at `rate` up to `burst`.

    A clock that goes backwards refills nothing (it never adds tokens twice). When admitted, the
    returned bucket's `suppressed` is still the count to report; `reported()` then clears it.
    """
    elapsed = max(0.0, now - bucket.updated)
    tokens = min(float(burst), bucket.tokens + elapsed * rate)
    updated = max(now, bucket.updated)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, updated, bucket.suppressed), True
    return Bucket(tokens, updated, bucket.suppressed + 1), False


def reported(bucket: Bucket) -> Bucket:
    """The bucket once its suppressed count has been reported."""
    return replace(bucket, suppressed=0)
