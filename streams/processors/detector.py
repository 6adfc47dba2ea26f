"""The detector processor: each detector's start command, raws and pipeline completions, in its partition.

All three topics are partitioned by detector, so the worker that owns partition p sees everything
about the detectors in it and is the only writer of their rows (the `detectors` table, which is also
the presence table for raws that come before their start). It runs on the engine: each batch's
outcomes, table changes and consumed offsets commit in one transaction, so a rebalance or a crash
can neither skip a command or a raw nor emit an outcome twice.

What lies outside Kafka happens once a batch has committed: preloads, dispatches and abandons go to
the pipeline processes (`streams.pipelines.runner`), on the worker's event loop. A pipeline's completion comes
back through `pipeline-done` (at least once: the core keeps the first). Only rows still in play
(presence, waiting, processing) are kept in memory; finished ones stay in RocksDB for the retention
time, where a late raw or a repeated completion finds them. The tick applies image timeouts itself
to the rows in memory, re-dispatches a detector found processing with nothing running here (after
a crash or a rebalance), and sweeps the finished rows past the retention time a few hundred at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

from confluent_kafka import Message, Producer

from streams.config import Settings
from streams.core import detector
from streams.core.arrivals import check_raw
from streams.core.detector import Phase
from streams.core.instruments import Instrument
from streams.errors import IgnorableEvent
from streams.observability import logs, metrics
from streams.pipelines.runner import PipelineRunner
from streams.runtime.engine import Batch, TransactionalProcessor, message_partition
from streams.serde.codec import Codec
from streams.serde.records import CcdResult, DetectorCommand, DetectorProgress, RawImageAvailable
from topology.graph import declare_graph
from topology.keys import detector_key, detector_partition, visit_key
from topology.topics import TopicSpec

log = logs.events(__name__)
SCHEDULED_SECONDS = 5.0
"""A dispatch handed to the event loop counts as running for this long, until the runner has it."""
IN_PLAY = (Phase.PRESENCE, Phase.WAITING, Phase.PROCESSING)
"""Phases whose rows are kept in memory: the tick watches their deadlines and dispatches."""

Schedule = Callable[[Callable[[], object]], object]
"""Runs a call on the worker's event loop (the pipeline runner lives there)."""


@dataclass(frozen=True)
class Effect:
    """What the pipeline processes must do once the batch has committed."""

    action: str
    """preload, dispatch (the first), redispatch (after a crash or a rebalance) or abandon."""
    progress: DetectorProgress


class DetectorProcessor(TransactionalProcessor[DetectorProgress]):
    """Moves each detector of each visit from its start to one outcome."""

    row_type = DetectorProgress

    def __init__(self, settings: Settings, instruments: dict[str, Instrument], runner: PipelineRunner,
                 schedule: Schedule) -> None:
        super().__init__(settings, declare_graph(settings).detector)
        self.instruments = instruments
        self.runner = runner
        self.schedule = schedule
        self._scheduled: dict[str, float] = {}
        """Dispatches handed to the event loop, and when (monotonic): the runner knows them a moment later."""

    def apply(self, batch: Batch[DetectorProgress], message: Message, now: float) -> None:
        """A raw, a command or a completion moves its detector on."""
        partition, topics = message_partition(message), self.topics
        if message.topic() == topics.raw_image_available.name:
            raw = self.decode(topics.raw_image_available, message, RawImageAvailable)
            logs.bind(raw)
            check_raw(raw, self.instruments, self.policy, self.settings.data_root)
            if partition != detector_partition(raw.detector, topics.raw_image_available.partitions):
                batch.records.append((topics.raw_image_available, message.key(), raw))  # e.g. kcat without -p
                return
            key = detector_key(raw.instrument, raw.group_id, raw.detector)
            self._step(batch, partition, key, detector.on_raw(self.state(batch, partition, key), raw, now))
        elif message.topic() == topics.detector_commands.name:
            command = self.decode(topics.detector_commands, message, DetectorCommand)
            logs.bind(command)
            key = detector_key(command.instrument, command.group_id, command.detector)
            state = self.state(batch, partition, key)
            if command.action == "expire":  # what earlier versions sent themselves: the tick does it now
                if state is not None and detector.expired(state, self.policy.retention, now):
                    self.stage(batch, partition, key, None)
                return
            if command.action not in ("start", "cancel", "image_timeout"):
                raise IgnorableEvent(f"unknown detector command {command.action!r}")
            self._step(batch, partition, key, detector.on_command(state, command, now))
        else:
            result = self.decode(topics.pipeline_done, message, CcdResult)
            logs.bind(result)
            key = detector_key(result.instrument, result.group_id, result.detector)
            self._step(batch, partition, key, detector.on_pipeline_done(self.state(batch, partition, key), result, now))

    def hot(self, row: DetectorProgress) -> bool:
        """Rows in play stay in memory; finished ones are read back from RocksDB when an event needs them."""
        return row.phase in IN_PLAY

    def tick(self, batch: Batch[DetectorProgress], now: float) -> None:
        """Image deadlines pass, lost dispatches are recovered, finished rows are forgotten."""
        moment = time.monotonic()
        self._scheduled = {k: t for k, t in self._scheduled.items() if moment - t < SCHEDULED_SECONDS}
        for partition, rows in self.rows.items():
            for key in list(rows):
                progress = self.state(batch, partition, key)
                if progress is None:
                    continue
                if detector.expired(progress, self.policy.retention, now):  # raws that never had a start
                    self.stage(batch, partition, key, None)
                elif progress.phase == Phase.WAITING and now >= progress.image_deadline:
                    timeout = DetectorCommand(action="image_timeout", instrument=progress.instrument,
                                              group_id=progress.group_id, detector=progress.detector,
                                              command_time=now)
                    self._step(batch, partition, key, detector.on_command(progress, timeout, now))
                elif progress.phase == Phase.PROCESSING and not self._running(key):
                    log.info("re-dispatching: processing with no pipeline running here", key=key)
                    batch.notes.append(Effect("redispatch", replace(progress)))

        def forget(partition: int, key: str, row: DetectorProgress) -> None:
            if detector.expired(row, self.policy.retention, now):
                self.stage(batch, partition, key, None)

        self.sweep(batch, forget)

    def _running(self, key: str) -> bool:
        """Whether a pipeline runs the detector here, or was just asked to (the runner, on the event loop,
        has not seen that dispatch yet)."""
        return key in self._scheduled or self.runner.busy(key)

    def _step(self, batch: Batch[DetectorProgress], partition: int, key: str, step: detector.Step) -> None:
        """Stage the new row and the outcome; keep the pipeline effects for after the commit."""
        new, outputs = step
        if new is not self.state(batch, partition, key):
            self.stage(batch, partition, key, new)
        for output in outputs:
            if isinstance(output, detector.EmitOutcome):
                result = output.result
                batch.records.append((self.topics.ccd_outcome, visit_key(result.instrument, result.group_id).encode(),
                                      result))
                batch.notes.append(result)
            elif isinstance(output, detector.StartPreload):
                batch.notes.append(Effect("preload", output.progress))
            elif isinstance(output, detector.Dispatch):
                batch.notes.append(Effect("dispatch", output.progress))
            else:
                batch.notes.append(Effect("abandon", output.progress))

    def committed(self, batch: Batch[DetectorProgress], now: float) -> None:
        """The batch is durable: start what it asked of the pipeline processes."""
        for note in batch.notes:
            if isinstance(note, CcdResult):
                with logs.labelled(note):
                    log.info("detector result", status=note.status, **({"error": note.error_class,
                             "reason": note.error_message[:200]} if note.error_class else {}))
            elif note.action == "preload":
                self.schedule(partial(self.runner.preload, note.progress))
            elif note.action in ("dispatch", "redispatch"):
                if note.action == "dispatch":  # the wait for raws is measured once, not again on recovery
                    metrics.observe_dispatch(note.progress)
                self._scheduled[detector_key(note.progress.instrument, note.progress.group_id,
                                             note.progress.detector)] = time.monotonic()
                self.schedule(partial(self.runner.dispatch, note.progress))
            else:
                self.schedule(partial(self.runner.abandon, note.progress))

    def rows_of(self, prefix: str) -> list[DetectorProgress]:
        """This worker's committed rows whose key starts with `prefix`, in play or finished (for the views,
        from the event loop: RocksDB reads are safe beside the engine's writes; a partition being handed
        over is skipped)."""
        found: dict[str, DetectorProgress] = {}
        for partition, store in list(self.stores.items()):
            try:
                found |= {key.decode(): self.codec.decode(value, DetectorProgress)
                          for key, value in store.with_prefix(prefix.encode())}
            except Exception:  # closed by a rebalance meanwhile: its rows are another worker's now
                log.debug("partition changed hands during a view", processor="detector", partition=partition)
        return list(found.values())


class Completions:
    """Sends pipeline completions to their detector's partition of `pipeline-done`.

    Outside the engine's cycle (a pipeline runs outside it too), with an idempotent producer: a
    completion may come twice after a crash, and the detector core keeps the first one.
    """

    def __init__(self, settings: Settings, codec: Codec, spec: TopicSpec) -> None:
        self._settings = settings
        self._producer: Producer | None = None
        self._codec = codec
        self._spec = spec

    async def send(self, result: CcdResult) -> None:
        """Produce one completion and wait until the broker has it (or librdkafka keeps retrying)."""
        value = await asyncio.to_thread(self._codec.encode, self._spec.name, result)
        if self._producer is None:  # on first use: the app is also built for commands that need no broker
            self._producer = Producer(self._settings.kafka_config() | {"enable.idempotence": True, "linger.ms": 1})
        self._producer.produce(self._spec.name, key=detector_key(result.instrument, result.group_id,
                                                                 result.detector).encode(),
                               value=value, partition=self._spec.partition_of(result))
        if await asyncio.to_thread(self._producer.flush, 30):
            log.warning("completion not yet acknowledged: librdkafka keeps sending it",
                        key=detector_key(result.instrument, result.group_id, result.detector))
