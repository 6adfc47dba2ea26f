"""The timing rules of a deployment: expiry, waits and deadlines, in seconds."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """Timeouts and limits; the defaults are the real system's production values."""

    message_expiration: float = 3600.0
    """A nextVisit older than this (from private_sndStamp) is dropped."""
    image_timeout: float = 120.0
    """Extra wait for raws beyond 2 x duration (IMAGE_TIMEOUT)."""
    process_timeout: float = 600.0
    """After the image deadline, how long the gather waits for a detector's result."""
    retention: float = 3600.0
    """How long finished state is kept to recognise duplicates and late events."""
    max_duration: float = 3600.0
    """A nextVisit announcing a longer script is refused as absurd."""
    max_nimages: int = 100
    """A nextVisit announcing more snaps is refused as absurd."""
    max_clock_skew: float = 600.0
    """An event stamped further than this in the future is refused: its clock (or its field) is wrong."""
    max_raw_bytes: int = 1 << 32
    """A raw announced as bigger than this is refused as absurd (an LSSTCam CCD raw is about 35 MB)."""

    def image_deadline(self, fanout_time: float, duration: float) -> float:
        """When a detector stops waiting for raws: 2 x duration + image timeout after fan-out."""
        return fanout_time + 2.0 * duration + self.image_timeout

    def visit_deadline(self, fanout_time: float, duration: float) -> float:
        """When the gather declares missing detectors timed out."""
        return self.image_deadline(fanout_time, duration) + self.process_timeout
