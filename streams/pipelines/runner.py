"""Running pipelines off the event loop, so one worker drives several cores and keeps heartbeating.

Each worker has `pipeline_processes` slots, each one pipeline process; detector d always goes to slot
`d mod K`, so its preload and its run share one process and its caches. A slot hands its process one task at a
time, in order: a detector's run waits behind its own preload, and when the process dies (killed by its memory
limit, `pipeline_memory_limit`, by SIGKILL, or a crash) the task it was running is known. That task alone fails
(its CCD `failed`, not retriable: the same input would kill the next process too); the slot starts a new process,
and the tasks queued behind the dead one run there. A built-in pipeline's task still running after
`process_timeout` (as long as its visit waits for results) has its process killed the same way, rather than
have everything queued on the slot wait behind it. When a run ends, `on_done` receives the result; it goes back
to the detector's own partition, so the table is only ever written by the detector processor. Every method but
`busy` runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from streams.clock import tai_now
from streams.config import Settings
from streams.errors import NonRetriableError
from streams.observability import logs
from streams.pipelines import execute
from streams.serde.records import CcdResult, DetectorProgress
from topology.keys import detector_key

log = logs.events(__name__)
Key = str
SETTLE_SECONDS = 60.0
"""A finished run's completion event may take this long to come back before the key counts as idle."""


class PipelineProcessDiedError(NonRetriableError):
    """The pipeline process died while running the task: killed (its memory limit, SIGKILL) or crashed."""


class PipelineTimeoutError(PipelineProcessDiedError):
    """The task ran past its time limit, so its process was killed."""


def _key(progress: DetectorProgress) -> Key:
    return detector_key(progress.instrument, progress.group_id, progress.detector)


@dataclass(frozen=True)
class _Task:
    """A call for the slot's process, its time limit [s] (None: none) and where its outcome goes."""

    call: Callable[[], Any]
    limit: float | None
    outcome: asyncio.Future[Any]


class _Slot:
    """One pipeline process and the tasks queued for it, handed over one at a time."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue: asyncio.Queue[_Task] = asyncio.Queue()
        self._executor: ProcessPoolExecutor | None = None
        self._pid = 0
        self._worker: asyncio.Task[None] | None = None

    def submit(self, call: Callable[[], Any], limit: float | None = None) -> asyncio.Future[Any]:
        """Queue `call`; the future has its result, its exception, or PipelineProcessDiedError. Canceling the
        future before the call has started drops it."""
        loop = asyncio.get_running_loop()
        outcome: asyncio.Future[Any] = loop.create_future()
        self._queue.put_nowait(_Task(call, limit, outcome))
        if self._worker is None:
            self._worker = loop.create_task(self._work(), name="pipeline slot")
        return outcome

    async def _work(self) -> None:
        """Hand the queued tasks over one by one, for as long as the slot lives."""
        while True:
            task = await self._queue.get()
            if task.outcome.cancelled():
                continue
            try:
                result = await self._call(task)
            except Exception as error:  # the call's own exception, or the process's death: the task's outcome
                if not task.outcome.done():
                    task.outcome.set_exception(error)
            else:
                if not task.outcome.done():
                    task.outcome.set_result(result)

    async def _process(self) -> ProcessPoolExecutor:
        """The running process, started (and its pid learnt, to kill it at a timeout) if there is none."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=execute.init_process, initargs=(self._settings,))
            self._pid = await asyncio.get_running_loop().run_in_executor(self._executor, os.getpid)
        return self._executor

    async def _submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        """Hand `call` to the process; a process found dead already (it died idle, not of this call) is replaced."""
        loop = asyncio.get_running_loop()
        try:
            return loop.run_in_executor(await self._process(), call)
        except BrokenProcessPool:
            self._discard()
            return loop.run_in_executor(await self._process(), call)

    async def _call(self, task: _Task) -> Any:
        """Run the task alone in the process: if the process dies meanwhile, the task is what it was running.

        Raises:
            PipelineProcessDiedError: the process died (then it is replaced).
            PipelineTimeoutError: the task ran past its limit (its process was killed and is replaced).
        """
        try:
            future = await self._submit(task.call)
            finished, _ = await asyncio.wait({future}, timeout=task.limit)
            if finished:
                return future.result()
        except BrokenProcessPool as error:
            self._discard()
            limit = self._settings.pipeline_memory_limit
            raise PipelineProcessDiedError(
                "the pipeline process died while running this CCD: killed (SIGKILL, or the kernel's out-of-memory "
                f"killer), over its memory limit{f' of {limit} MiB' if limit else ''}, or crashed") from error
        future.cancel()  # it ends when the killed process's pool breaks, with nobody waiting for it
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        self._discard()
        raise PipelineTimeoutError(f"still running after {task.limit} s (PROMPT_STREAMS_PROCESS_TIMEOUT): its "
                                   "pipeline process was killed")

    def _discard(self) -> None:
        """Forget the dead (or killed) process: the next task starts a new one."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        self._executor, self._pid = None, 0

    def stop(self) -> None:
        """Stop the process and drop the queued tasks."""
        if self._worker is not None:
            self._worker.cancel()
        self._worker = None
        self._discard()


class PipelineRunner:
    """Preloads and runs detectors' pipelines in a fixed set of processes."""

    def __init__(self, processes: int, settings: Settings, worker: str,
                 on_done: Callable[[CcdResult], Awaitable[None]]) -> None:
        self._settings = settings
        self._worker = worker
        self._on_done = on_done
        self._slots = [_Slot(settings) for _ in range(processes)]
        self._preloads: dict[Key, asyncio.Future[dict[str, float]]] = {}
        self.inflight: dict[Key, asyncio.Task[None]] = {}
        self._finished: dict[Key, float] = {}
        self._preloaded: dict[Key, float] = {}

    def _slot(self, detector: int) -> _Slot:
        return self._slots[detector % len(self._slots)]

    def _limit(self, progress: DetectorProgress) -> float | None:
        """process_timeout for built-in pipelines; none if a shell pipeline may run, which kills its own command
        at its own timeout (killing the pipeline process would leave the command running, orphaned)."""
        built_in = all(name in execute.PIPELINES for name in progress.pipelines)
        return self._settings.process_timeout if built_in and self._settings.process_timeout > 0 else None

    async def start(self) -> None:
        """Start every pipeline process now, so the first visit does not wait for them."""
        await asyncio.gather(*(slot.submit(execute.warm_up) for slot in self._slots))

    def preload(self, progress: DetectorProgress) -> None:
        """Start the detector's preload now, overlapping the exposure."""
        key = _key(progress)
        if key not in self._preloads:
            future = self._slot(progress.detector).submit(partial(execute.preload, progress), self._limit(progress))
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
        slot, limit = self._slot(progress.detector), self._limit(progress)
        preload = self._preloads.pop(key, None) or slot.submit(partial(execute.preload, progress), limit)
        try:
            timings = await preload
        except (Exception, asyncio.CancelledError) as error:
            log.warning("preload failed", key=key, reason=repr(error))
            timings = {}
        preloaded = self._preloaded.pop(key, 0.0) or tai_now()
        try:
            result = await slot.submit(partial(execute.run, progress), limit)
        except PipelineProcessDiedError as died:  # this CCD alone: the ones queued behind it run in a new process
            now = tai_now()
            result = CcdResult(instrument=progress.instrument, group_id=progress.group_id,
                               detector=progress.detector, status="failed", retriable=False,
                               error_class=type(died).__name__, error_message=str(died),
                               exposure_ids=[s.exposure_id for s in progress.snaps],
                               process_start_time=now, process_end_time=now)
        await self._on_done(replace(result, metrics={**timings, **result.metrics}, worker=self._worker,
                                    preload_done_time=preloaded if timings else 0.0))

    def stop(self) -> None:
        """Stop every pipeline process (work in flight is recovered from the table on restart)."""
        for task in list(self.inflight.values()):
            task.cancel()
        for slot in self._slots:
            slot.stop()
