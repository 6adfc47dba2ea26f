"""Running pipelines off the event loop, so one worker drives several cores and keeps heartbeating.

Each worker has `pipeline_processes` single-process executors; detector d always goes to
executor `d mod K`, so its preload and its run share one process and its caches. A detector's
run waits behind its own preload (an executor runs one task at a time, in order). When a run
ends, `on_done` receives the result; it goes back to the detector's own partition, so the table
is only ever written by the detector processor. Every method but `busy` runs on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import replace

from streams.clock import tai_now
from streams.config import Settings
from streams.pipelines import execute
from streams.records import CcdResult, DetectorProgress
from topology.keys import detector_key

log = logging.getLogger(__name__)
Key = str
SETTLE_SECONDS = 60.0
"""A finished run's completion event may take this long to come back before the key counts as idle."""


def _key(progress: DetectorProgress) -> Key:
    return detector_key(progress.instrument, progress.group_id, progress.detector)


class PipelineRunner:
    """Preloads and runs detectors' pipelines in a fixed set of processes."""

    def __init__(self, processes: int, settings: Settings, worker: str,
                 on_done: Callable[[CcdResult], Awaitable[None]]) -> None:
        self._settings = settings
        self._worker = worker
        self._on_done = on_done
        self._executors: list[ProcessPoolExecutor | None] = [None] * processes
        self._preloads: dict[Key, asyncio.Future[dict[str, float]]] = {}
        self.inflight: dict[Key, asyncio.Task[None]] = {}
        self._finished: dict[Key, float] = {}
        self._preloaded: dict[Key, float] = {}

    def _executor(self, detector: int) -> ProcessPoolExecutor:
        slot = detector % len(self._executors)
        executor = self._executors[slot]
        if executor is None:
            executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                           initializer=execute.init_process, initargs=(self._settings,))
            self._executors[slot] = executor
        return executor

    def _replace_broken(self, detector: int) -> None:
        slot = detector % len(self._executors)
        broken, self._executors[slot] = self._executors[slot], None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)

    async def start(self) -> None:
        """Start every pipeline process now, so the first visit does not wait for them."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor(slot), execute.warm_up)
                               for slot in range(len(self._executors))))

    def preload(self, progress: DetectorProgress) -> None:
        """Start the detector's preload now, overlapping the exposure."""
        key = _key(progress)
        if key not in self._preloads:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor(progress.detector), execute.preload, progress)
            future.add_done_callback(lambda _f: self._preloaded.__setitem__(key, tai_now()))
            self._preloads[key] = future

    def preloading(self) -> list[Key]:
        """The detectors whose preload is still running here."""
        return [key for key, future in list(self._preloads.items()) if not future.done()]

    def abandon(self, progress: DetectorProgress) -> None:
        """The visit was canceled or timed out: drop its preload (at once, if it has not started)."""
        future = self._preloads.pop(_key(progress), None)
        self._preloaded.pop(_key(progress), None)
        if future is not None:
            future.cancel()

    def dispatch(self, progress: DetectorProgress) -> None:
        """Run the pipeline on the held snaps, unless this worker already is."""
        key = _key(progress)
        if key not in self.inflight:
            task = asyncio.get_running_loop().create_task(self._run(key, progress), name=f"pipeline {key}")
            self.inflight[key] = task
            task.add_done_callback(lambda _t: self._settle(key))

    def _settle(self, key: Key) -> None:
        self.inflight.pop(key, None)
        now = time.monotonic()
        self._finished = {k: t for k, t in self._finished.items() if now - t < SETTLE_SECONDS}
        self._finished[key] = now

    def busy(self, key: Key) -> bool:
        """Whether this worker runs the detector now, or finished it so recently that its
        completion may still be on its way back to the table (safe from the engine's thread)."""
        finished = self._finished.get(key)
        recent = finished is not None and time.monotonic() - finished < SETTLE_SECONDS
        return key in self.inflight or recent

    async def _run(self, key: Key, progress: DetectorProgress) -> None:
        loop = asyncio.get_running_loop()
        preload = self._preloads.pop(key, None) or loop.run_in_executor(
            self._executor(progress.detector), execute.preload, progress)
        try:
            timings = await preload
        except (Exception, asyncio.CancelledError) as error:
            log.warning("preload of %s failed: %r", key, error)
            timings = {}
        preloaded = self._preloaded.pop(key, 0.0) or tai_now()
        try:
            result = await loop.run_in_executor(self._executor(progress.detector), execute.run, progress)
        except BrokenProcessPool as error:  # the process died (out of memory, killed): retry is safe
            self._replace_broken(progress.detector)
            now = tai_now()
            result = CcdResult(instrument=progress.instrument, group_id=progress.group_id,
                               detector=progress.detector, status="failed", retriable=True,
                               error_class="PipelineProcessDied", error_message=str(error),
                               process_start_time=now, process_end_time=now)
        await self._on_done(replace(result, metrics={**timings, **result.metrics}, worker=self._worker,
                                    preload_done_time=preloaded if timings else 0.0))

    def stop(self) -> None:
        """Stop every pipeline process (work in flight is recovered from the table on restart)."""
        for task in list(self.inflight.values()):
            task.cancel()
        for executor in self._executors:
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
