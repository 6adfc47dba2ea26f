"""Progress bars for the long commands (simulated nights, replays): one line on standard error."""

from __future__ import annotations

import sys
import time


def progress_bar(label: str, done: int, total: int, width: int = 30, started: float | None = None) -> None:
    """Redraw a one-line progress bar; with `started` (time.monotonic()), also the elapsed time."""
    filled = int(width * min(done, total) / max(total, 1))
    elapsed = f" {time.monotonic() - started:.0f} s" if started is not None else ""
    sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}{elapsed}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()
