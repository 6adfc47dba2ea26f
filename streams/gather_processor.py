"""The gather step as an exactly-once processor: Kafka transactions around the pure gather core.

It consumes the visit-keyed topics (VisitExpected and detector outcomes) with `read_committed`,
applies `streams.core.gather`, and in one transaction produces the per-CCD results, the visit
summaries, the metrics, its table's changelog records and the consumed offsets
(`send_offsets_to_transaction`). Either all of a batch's effects become visible or none do, so a
crash, a restart or a rebalance can neither lose a result nor emit a summary twice. The local
RocksDB copy of the table is written only after a commit (`streams.store`), and restored from the
changelog when a partition is assigned.

Why not Faust's own exactly-once mode: faust-streaming picks the transactional producer from the
*destination* partition (`{app}-{group}-{partition}`), which breaks for records sent to
partitions another worker owns, and its EOS has open bugs (#177 sends outside the transaction,
#323 ProducerFenced on rebalance, #517 duplicates). librdkafka's transactions are system-tested.

It runs in a thread of every worker (`GatherService`), as a member of its own consumer group
`<app id>-gather`; the range assignor gives each member the same partitions of both input topics.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mode
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from streams import local_state, logs
from streams.clock import tai_now
from streams.codec import Codec
from streams.config import Settings
from streams.core import gather
from streams.errors import DecodeError
from streams.record import Record
from streams.records import CcdResult, DeadLetter, VisitExpected, VisitProgress, VisitSummary
from streams.registry import ConfluentRegistry
from streams.store import PartitionStore
from streams.web import metrics
from topology.keys import detector_key, visit_key
from topology.tables import gather_changelog
from topology.topics import Topics, TopicSpec, declare

log = logging.getLogger(__name__)
BATCH = 500
POLL_SECONDS = 0.05
TICK_SECONDS = 0.5
TRANSACTION_TIMEOUT_MS = 10_000
RESTORE_TIMEOUT_S = 60.0


@dataclass
class Batch:
    """What one transaction will produce, and the table changes it will make."""

    records: list[tuple[TopicSpec, bytes | None, Record]] = field(default_factory=list)
    changes: dict[int, dict[str, VisitProgress | None]] = field(default_factory=dict)
    consumed: int = 0
    ticked: bool = False

    def __bool__(self) -> bool:
        return bool(self.records or self.changes or self.consumed)


class GatherProcessor:
    """The consume-transform-produce loop of the gather step (one per worker, in its own thread)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics: Topics = declare(settings)
        self.changelog = gather_changelog(settings)
        self.codec = Codec(ConfluentRegistry(settings.registry_config()))
        self.policy = settings.policy()
        self.visits: dict[int, dict[str, VisitProgress]] = {}
        self.stores: dict[int, PartitionStore] = {}
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._last_tick = 0.0
        self._delivered: dict[int, int] = {}
        self.assigned = False
        """Whether the group gave this processor its partitions at least once (readiness)."""
        self.lags: dict[tuple[str, str, int], int] = {}
        """(group, topic, partition) -> messages not yet consumed, refreshed every tick (read by /metrics)."""

    # -- set-up ----------------------------------------------------------------------------------
    def _clients(self) -> tuple[Consumer, Producer]:
        base = self.settings.kafka_config()
        consumer = Consumer(base | {
            "group.id": f"{self.settings.app_id}-gather", "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range", "session.timeout.ms": 10_000,
            "max.poll.interval.ms": 120_000,
        })
        producer = Producer(base | {
            "transactional.id": f"{self.settings.app_id}-gather-{self.settings.worker}",
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS, "linger.ms": 2,
        })
        return consumer, producer

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set; a fatal Kafka error propagates (the worker then stops)."""
        consumer, producer = self._consumer, self._producer = self._clients()
        producer.init_transactions(30)  # also aborts what a previous run of this worker left open
        consumer.subscribe([self.topics.visit_expected.name, self.topics.ccd_outcome.name],
                           on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke)
        try:
            while not stop.is_set():
                messages = consumer.consume(BATCH, POLL_SECONDS)
                batch = self._transform(messages, tai_now())
                if batch:
                    self._commit(batch)
                if batch.ticked:
                    self.lags = self._lags(consumer)
        finally:
            consumer.close()
            for store in self.stores.values():
                store.close()

    # -- rebalance -------------------------------------------------------------------------------
    def _partitions(self, tps: list[TopicPartition]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.topics.visit_expected.name}

    def _on_assign(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        self._restore(sorted(self._partitions(tps)))
        self.assigned = True
        log.info("gather: assigned partitions %s (%d visits in flight)", sorted(self.visits),
                 sum(1 for rows in self.visits.values() for v in rows.values() if not v.summary_time))

    def _on_revoke(self, consumer: Consumer, tps: list[TopicPartition]) -> None:
        for partition in self._partitions(tps):
            self.visits.pop(partition, None)
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()

    def _restore(self, partitions: list[int]) -> None:
        """Load each partition's rows from RocksDB, then replay its changelog from the checkpoint."""
        if not partitions:
            return
        stores = {p: PartitionStore(store_path(self.settings, p)) for p in partitions}
        offsets = self._restore_points(stores)
        rows = {p: {key.decode(): self.codec.decode(value, VisitProgress) for key, value in store.items()}
                for p, store in stores.items()}
        changes: dict[int, dict[bytes, bytes | None]] = {p: {} for p in partitions}
        reader = Consumer(self.settings.kafka_config() | {
            "group.id": f"{self.settings.app_id}-gather-restore", "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True,
        })
        try:
            reader.assign([TopicPartition(self.changelog.name, p, offsets[p]) for p in partitions])
            pending = set(partitions)
            deadline = tai_now() + RESTORE_TIMEOUT_S
            while pending:
                if tai_now() > deadline:
                    raise TimeoutError(f"gather partitions {sorted(pending)}: changelog not restored "
                                       f"in {RESTORE_TIMEOUT_S} s")
                message = reader.poll(0.1)
                if message is None:
                    continue
                partition = _partition(message)
                if (problem := message.error()) is not None:
                    if problem.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(problem)
                    pending.discard(partition)
                    continue
                key, value = message.key() or b"", message.value()
                changes[partition][key] = value
                offsets[partition] = _offset(message) + 1
                if value is None:
                    rows[partition].pop(key.decode(), None)
                else:
                    rows[partition][key.decode()] = self.codec.decode(value, VisitProgress)
        finally:
            reader.close()
        for p, store in stores.items():
            if changes[p]:
                store.apply(changes[p], offsets[p])
            self.stores[p], self.visits[p] = store, rows[p]
        log.info("gather restored partitions %s: %d rows (%d from the changelog)", partitions,
                 sum(len(r) for r in rows.values()), sum(len(c) for c in changes.values()))

    def _restore_points(self, stores: dict[int, PartitionStore]) -> dict[int, int]:
        """Where each partition's changelog replay starts; a copy the changelog cannot continue is cleared."""
        marks = local_state.watermarks(self.settings, [(self.changelog.name, p) for p in stores])
        points = {}
        for p, store in stores.items():
            low, high = marks[(self.changelog.name, p)]
            if (reason := local_state.invalid(store.checkpoint, low, high)) is not None:
                if store.checkpoint:
                    log.warning("gather partition %d: local state %s: cleared, restoring from the changelog",
                                p, reason)
                store.clear()
            points[p] = max(store.checkpoint, low)
        return points

    # -- transform -------------------------------------------------------------------------------
    def _state(self, batch: Batch, partition: int, key: str) -> VisitProgress | None:
        staged = batch.changes.get(partition, {})
        return staged[key] if key in staged else self.visits.get(partition, {}).get(key)

    def _transform(self, messages: list[Message], now: float) -> Batch:
        batch = Batch()
        for message in messages:
            if message.error():
                log.warning("gather: consumer error %s", message.error())
                continue
            batch.consumed += 1
            try:
                with logs.labelled():
                    self._apply_message(batch, message, now)
            except DecodeError as error:
                batch.records.append((self.topics.dead_letter, message.key(), DeadLetter(
                    topic=message.topic() or "", partition=_partition(message), offset=_offset(message),
                    key=message.key(), value=message.value(), error_class=type(error).__name__,
                    reason=str(error), agent="gather", dead_letter_time=now)))
        if now - self._last_tick >= TICK_SECONDS:
            self._last_tick, batch.ticked = now, True
            for partition, rows in self.visits.items():
                for key in list(rows):
                    state = self._state(batch, partition, key)
                    if state is not None:
                        self._stage(batch, partition, key, state, gather.on_tick(state, now, self.policy.retention))
        return batch

    def _apply_message(self, batch: Batch, message: Message, now: float) -> None:
        partition = _partition(message)
        if message.topic() == self.topics.visit_expected.name:
            expected = self.codec.decode(message.value(), VisitExpected)
            logs.label_record(expected)
            key = visit_key(expected.instrument, expected.group_id)
            step = gather.on_expected(self._state(batch, partition, key), expected, now)
        else:
            outcome = self.codec.decode(message.value(), CcdResult)
            logs.label_record(outcome)
            key = visit_key(outcome.instrument, outcome.group_id)
            step = gather.on_outcome(self._state(batch, partition, key), outcome, now)
        self._stage(batch, partition, key, self._state(batch, partition, key), step)

    def _stage(self, batch: Batch, partition: int, key: str, before: VisitProgress | None, step: gather.Step) -> None:
        state, outputs = step
        if state is not before:
            batch.changes.setdefault(partition, {})[key] = state
        topics = self.topics
        for output in outputs:
            if isinstance(output, gather.EmitResult):
                r = output.result
                row = detector_key(r.instrument, r.group_id, r.detector)
                batch.records.append((topics.ccd_result, row.encode(), r))
            elif isinstance(output, gather.EmitSummary):
                batch.records.append((topics.visit_summary, key.encode(), output.summary))
                log.info("visit summary %s: %s (%s)", key, output.summary.counts, output.summary.reason)
            elif isinstance(output, gather.EmitMetric):
                batch.records.append((topics.metrics, key.encode(), output.metric))
            elif isinstance(output, gather.EmitCalibration):
                batch.records.append((topics.calibration_products, key.encode(), output.product))
                log.info("calibration product %s: %s", key, output.product.uri)

    # -- commit ----------------------------------------------------------------------------------
    def _commit(self, batch: Batch) -> None:
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        self._delivered = {}
        try:
            producer.begin_transaction()
            for spec, record_key, record in batch.records:
                producer.produce(spec.name, key=record_key, value=self.codec.encode(spec.name, record),
                                 partition=spec.partition_of(record))
            encoded: dict[int, dict[bytes, bytes | None]] = {}
            for partition, changes in batch.changes.items():
                rows = encoded[partition] = {}
                for row, state in changes.items():
                    value = rows[row.encode()] = None if state is None else self.codec.encode(self.changelog.name,
                                                                                               state)
                    producer.produce(self.changelog.name, key=row.encode(), value=value, partition=partition,
                                     on_delivery=self._on_changelog_delivery)
            if batch.consumed:
                positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
                producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), 30)
            producer.commit_transaction(30)
        except KafkaException as exception:
            error = exception.args[0]
            if not error.txn_requires_abort():
                raise
            log.warning("gather: transaction aborted (%s); the batch will be processed again", error)
            producer.abort_transaction(30)
            self._rewind(consumer)
            return
        self._apply(batch, encoded)

    def _on_changelog_delivery(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            partition = _partition(message)
            self._delivered[partition] = max(self._delivered.get(partition, 0), _offset(message) + 1)

    def _apply(self, batch: Batch, encoded: dict[int, dict[bytes, bytes | None]]) -> None:
        """The transaction committed: now the table may change, in memory and on disk (its rows exactly as
        the changelog has them, encoded once), and be counted."""
        count(batch.records, tai_now())
        for partition, changes in batch.changes.items():
            rows = self.visits.setdefault(partition, {})
            for key, state in changes.items():
                if state is None:
                    rows.pop(key, None)
                else:
                    rows[key] = state
            store = self.stores.get(partition)
            if store is not None:
                store.apply(encoded[partition], self._delivered.get(partition, store.checkpoint))

    def _rewind(self, consumer: Consumer) -> None:
        """Seek back to the committed offsets, so an aborted batch is consumed again."""
        for tp in consumer.committed(consumer.assignment(), 30):
            consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))


    def _lags(self, consumer: Consumer) -> dict[tuple[str, str, int], int]:
        group = f"{self.settings.app_id}-gather"
        lags = {}
        for tp in consumer.position(consumer.assignment()):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                lags[(group, tp.topic, tp.partition)] = max(high - max(tp.offset, 0), 0)
        return lags

    def in_flight(self) -> int:
        """How many of this worker's visits have no summary yet (safe from any thread)."""
        return sum(1 for rows in list(self.visits.values()) for v in list(rows.values()) if not v.summary_time)


def count(records: list[tuple[TopicSpec, bytes | None, Record]], now: float) -> None:
    """Count what a committed transaction produced (results by status, summaries, dead letters, latencies)."""
    for _spec, _key, record in records:
        if isinstance(record, CcdResult):
            metrics.RESULTS.labels(record.instrument, record.status).inc()
            if record.result_time > 0:
                metrics.GATHER_LATENCY.observe(max(now - record.result_time, 0.0))
            if record.first_raw_time > 0:
                metrics.RAW_TO_RESULT.observe(max(record.result_time - record.first_raw_time, 0.0))
        elif isinstance(record, VisitSummary):
            metrics.SUMMARIES.labels(record.instrument, record.reason).inc()
        elif isinstance(record, DeadLetter):
            metrics.DEAD_LETTERS.labels(record.agent).inc()


class GatherService(mode.Service):
    """Runs the gather processor's thread alongside a Faust worker, and stops it with the worker."""

    def __init__(self, settings: Settings, on_crash: Callable[[BaseException], Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.processor = GatherProcessor(settings)
        self._on_crash = on_crash
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    async def on_start(self) -> None:
        """Start the processor's thread."""
        loop = asyncio.get_running_loop()

        def body() -> None:
            try:
                self.processor.run(self._stop_event)
            except BaseException as error:  # a fatal error: the worker must not go on without its gather
                log.critical("gather processor stopped: %r", error)
                loop.call_soon_threadsafe(self._on_crash, error)

        self._thread = threading.Thread(target=body, name="gather", daemon=True)
        self._thread.start()

    async def on_stop(self) -> None:
        """Ask the thread to finish its batch and leave the group."""
        self._stop_event.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)


def _partition(message: Message) -> int:
    partition = message.partition()
    assert partition is not None, "a consumed or delivered message has a partition"
    return partition


def _offset(message: Message) -> int:
    offset = message.offset()
    assert offset is not None, "a consumed or delivered message has an offset"
    return offset


def store_path(settings: Settings, partition: int) -> Path:
    """Where a gather partition's RocksDB lives."""
    return settings.worker_dir() / "gather" / str(partition)
