"""TAI time, as SAL stamps it: every time in Prompt Streams' records is TAI Unix seconds.

TAI - UTC (37 s since 2017) comes from ERFA's leap-second table for today's date, so the
offset stays right when a leap second is added; it is read once per process.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import cache

import erfa


@cache
def tai_minus_utc() -> float:
    """TAI - UTC in seconds for today (from ERFA's leap-second table)."""
    today = datetime.now(UTC)
    return float(erfa.dat(today.year, today.month, today.day, 0.0))


def tai_now() -> float:
    """Now, in TAI Unix seconds (what SAL puts in private_sndStamp)."""
    return time.time() + tai_minus_utc()

