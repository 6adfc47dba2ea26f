"""Faust workers as separate processes, started the way users start them: the faust CLI.

Used by the replay command (its own workers), `make demo`, the integration tests and the chaos and benchmark
runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from streams.config import Settings
from streams.runtime import READY_LINE

FAUST = Path(sys.executable).with_name("faust")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
READY = READY_LINE


@dataclass
class Worker:
    """One `faust -A streams.app worker` process and its log."""

    process: subprocess.Popen[bytes]
    log: Path
    offset: int = 0
    """Where this process's lines start in the log (a restarted worker appends to its name's log)."""
    url: str = ""
    """Its web server (views, dashboard, metrics)."""

    def text(self) -> str:
        """Everything this process logged so far."""
        with self.log.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode(errors="replace")

    def wait_for(self, needle: str, timeout: float = 60.0) -> str:
        """Wait until the log contains `needle`; return the log. Fails if the worker dies."""
        deadline = time.monotonic() + timeout
        while needle not in (text := self.text()):
            if self.process.poll() is not None:
                raise AssertionError(
                    f"worker exited ({self.process.returncode}) before {needle!r}:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} in the worker log after {timeout} s:\n{text[-3000:]}")
            time.sleep(0.1)
        return text

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop the worker (SIGTERM: clean shutdown; SIGKILL: a crash)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)


class WorkerPool:
    """The workers of one test: each with its own data directory and web port."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.started: list[Worker] = []

    def start(self, name: str = "w1", wait: bool = True) -> Worker:
        """Start a worker with the faust CLI; by default, wait until it is ready."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        own = replace(self.settings, data_dir=f"{self.settings.data_dir}/{name}", web_port=free_port(),
                      worker_name=name)
        with log.open("ab") as out:
            offset = out.tell()
            process = subprocess.Popen(
                [str(FAUST), "-A", "streams.app", "worker", "-l", "info"],
                env=os.environ | own.to_env() | {"PYTHONUNBUFFERED": "1"}, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        worker = Worker(process, log, offset, f"http://127.0.0.1:{own.web_port}")
        self.started.append(worker)
        if wait:
            worker.wait_for(READY)
        return worker

    def stop_all(self, sig: int = signal.SIGTERM) -> None:
        """Stop every worker this pool started (SIGTERM lets each shut down cleanly)."""
        for worker in self.started:
            worker.stop(sig, timeout=15)
