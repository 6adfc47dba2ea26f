"""Running the faust CLI and shell recipes as a person would, with a test's settings in the environment."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from streams.config import Settings
from streams.ops.workers import FAUST


def faust(settings: Settings, *args: str, timeout: float = 180.0, fails: bool = False
          ) -> subprocess.CompletedProcess[str]:
    """`faust -A streams.app <args>` with these settings; checks it succeeds (or, with `fails`, that it fails)."""
    done = subprocess.run([str(FAUST), "-A", "streams.app", *args], env=os.environ | settings.to_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    assert (done.returncode != 0) == fails, \
        f"faust {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def faust_until(settings: Settings, needle: str, *args: str) -> str:
    """The output of `faust -A streams.app <args>`, run again until it contains `needle`."""
    def check() -> str | None:
        shown = faust(settings, *args).stdout
        return shown if needle in shown else None
    return until(check, f"{needle!r} in the output of faust {' '.join(args)}")


def until(check: Callable[[], str | None], what: str, timeout: float = 120.0) -> str:
    """Repeat `check` until it returns text; fail with `what` and the last text seen."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen after {timeout} s")
        time.sleep(1.0)
