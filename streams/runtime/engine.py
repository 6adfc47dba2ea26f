"""The engine: exactly-once consume-transform-produce on librdkafka transactions, with a table of its own.

Every processor runs on it (the SAL bridge in a process of its own). A processor is declared in
`topology/graph.py` (its inputs, its outputs, its table); the engine takes its inputs and table from
that declaration and refuses to produce to a topic the declaration does not name. A
`TransactionalProcessor` consumes its input topics with `read_committed`, hands each message to its
subclass (which stages records to produce and table rows to change, calling a pure core), and in one
transaction produces the records, the table's changelog records and the consumed offsets
(`send_offsets_to_transaction`). Either all of a batch's effects become visible or none do, so a
crash, a restart or a rebalance can neither lose an input nor emit an output twice. The local
RocksDB copy of the table is written only after a commit (`streams.runtime.store`), and restored
from the changelog when a partition is assigned.

Why not Faust's agents: faust-streaming's `Stream` skips the events a consumer fetched
before a rebalance (stale generation id, or flow control paused) *and acks them*, so their offsets
are committed unprocessed: events sent just after a worker died were lost by the long chaos run.
Why not Faust's exactly-once mode: it picks the transactional producer from the *destination*
partition (`{app}-{group}-{partition}`), which breaks for records sent to partitions another worker
owns, and its EOS has open bugs (#177 sends outside the transaction, #323 ProducerFenced on
rebalance, #517 duplicates). librdkafka's transactions are system-tested.

Each processor runs in a thread of every worker (`ProcessorService`), as a member of its own
consumer group `<app id>-<name>`; the range assignor gives each member the same partitions of all
its input topics, and table partition p goes with input partition p. Faust stays the host: it starts
the worker, serves the web pages and runs the commands; no processor uses its agents or tables.

Where the consumed positions commit is the processor's offset sink. By default (`GroupOffsets`) they
are its group's offsets, sent with each transaction. A processor that writes to another cluster (the
SAL bridge, to Chile) cannot commit the source cluster's offsets in that cluster's transaction: it
reads every partition without a group and commits a checkpoint record in the same transaction
instead (`CheckpointOffsets`); its state that must survive a restart goes in that record too.

No record larger than the producer takes is ever produced: librdkafka would refuse it at commit, with an error
no abort recovers from, and the batch would be consumed again and again. An input whose outputs (records or
table rows) are too large becomes a dead letter saying so, and the batch is transformed again without it; an
output of no input (a tick's, a checkpoint) that is too large becomes a dead letter itself.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Generic, TypedDict, TypeVar

import mode
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from streams.clock import tai_now
from streams.config import Settings
from streams.errors import (
    DecodeError,
    IgnorableEvent,
    InvalidEventError,
    NonRetriableError,
    OutputTooLargeError,
    RegistryError,
    RetriableError,
)
from streams.observability import logs, metrics
from streams.runtime import local_state
from streams.runtime.clients import Clients, ConsumerApi, KafkaClients, ProducerApi
from streams.runtime.dead_letters import PRODUCER_LIMIT, RECORD_OVERHEAD, dead_letter
from streams.runtime.standby import Standby
from streams.runtime.store import PartitionStore
from streams.serde.base import Record
from streams.serde.codec import Codec
from streams.serde.declared import record_of
from streams.serde.records import DeadLetter
from streams.serde.registry import ConfluentRegistry
from topology.graph import ProcessorSpec
from topology.tables import changelog_topic
from topology.topics import Topics, TopicSpec, declare

log = logs.events(__name__)
BATCH = 5000
POLL_SECONDS = 0.05
TICK_SECONDS = 0.5
SWEEP_SECONDS = 30.0
SWEEP_ROWS = 3000
"""A sweep reads SWEEP_ROWS cold rows every SWEEP_SECONDS: a table of 100,000 rows is gone through in under
20 minutes, a small delay past an hour's retention. Sweeping every tick cost a third of the gather's CPU
(a summarised visit row is ~11 kB, ~0.3 ms to decode) and, on a loaded machine, the pipelines' share."""
TRANSACTION_TIMEOUT_MS = 10_000
CALL_TIMEOUT_S = TRANSACTION_TIMEOUT_MS / 1000  # waiting longer is pointless: the broker aborts the transaction
STUCK_CALL_S = CALL_TIMEOUT_S + 5.0
"""A transactional call still running this long after it was made has outlived its own timeout (`_until_done`)."""
STUCK_OFFSETS_S = 5.0
"""librdkafka's send_offsets_to_transaction can block for good once the coordinator it cached is gone
(confluentinc/librdkafka#5456, #5511): after a broker bounce, every producer's first call after the broker is back
did (chaos, ba8b984). It answers in milliseconds otherwise, and nothing is committed before commit_transaction, so
one still running after this long is left behind and a new producer takes its transactional id over."""
COMMIT_STALL_S = 3 * CALL_TIMEOUT_S
RESTORE_TIMEOUT_S = 60.0
RETRY_PAUSE_S = 0.5
MAX_RETRY_PAUSE_S = 30.0
"""After a transient failure (registry, storage, APDB), the batch is consumed again after a pause that
starts at RETRY_PAUSE_S and doubles up to MAX_RETRY_PAUSE_S while the failure lasts."""
IDLE_COMMIT_S = 5.0
"""A checkpoint is committed at least this often, even with nothing consumed: the transaction of an instance
that another one has fenced fails, so it finds out and stops (no group would tell it)."""

Row = TypeVar("Row", bound=Record)
Coordinates = tuple[str, int, int]
"""(topic, partition, offset) of a consumed message."""


@dataclass
class Batch(Generic[Row]):
    """What one transaction will produce, and the table changes it will make."""

    records: list[tuple[TopicSpec, bytes | None, Record | bytes | None]] = field(default_factory=list)
    """(topic, key, record or value already encoded; None: a tombstone)."""
    changes: dict[int, dict[str, Row | None]] = field(default_factory=dict)
    consumed: int = 0
    ticked: bool = False
    notes: list[Any] = field(default_factory=list)
    """What the subclass wants to know in `committed` (not produced)."""
    retry: RetriableError | RegistryError | None = None
    """A message met a transient failure: nothing of this batch is committed, it is consumed again."""
    checkpoint: Any = None
    """With `CheckpointOffsets`: the processor's state as this batch leaves it, committed with it."""
    applying: Message | None = None
    """The input being applied, to which the rows staged now are owed."""
    origins: list[tuple[int, int, Message]] = field(default_factory=list)
    """(first, end) indexes of the records each applied input staged, and the input."""
    changed_by: dict[tuple[int, str], Message] = field(default_factory=dict)
    """(partition, row key) -> the input that last changed the row."""

    def __bool__(self) -> bool:
        return bool(self.records or self.changes or self.consumed)

    def origin_of(self, index: int) -> Message | None:
        """The input that staged record `index`; None for a tick's or a checkpoint's."""
        return next((message for first, end, message in self.origins if first <= index < end), None)


@dataclass
class Outgoing:
    """A batch encoded: (topic, key, value, partition or -1 for the key's) and changelog rows by partition."""

    records: list[tuple[str, bytes | None, bytes | None, int]]
    changelog: dict[int, dict[bytes, bytes | None]]


class UndeclaredOutputError(NonRetriableError, RuntimeError):
    """A processor tried to write a topic its declaration in `topology/graph.py` does not name (a bug)."""


class _Stuck(Exception):  # noqa: N818 (a signal between `_until_done` and `_commit`)
    """A transactional call that outlived its bound."""


def within(seconds: float, what: str, call: Callable[[], None]) -> None:
    """Make `call` on a thread of its own and wait for it at most `seconds`: what it raises is raised here; if it
    is still running then, `_Stuck` is, and the call is left to finish (or not) on its daemon thread."""
    outcome: list[BaseException | None] = []

    def body() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as error:  # handed to the caller
            outcome.append(error)

    thread = threading.Thread(target=body, name="transactional-call", daemon=True)
    thread.start()
    thread.join(seconds)
    if not outcome:
        raise _Stuck(f"{what} still running after {seconds:.0f} s")
    if (error := outcome[0]) is not None:
        raise error


class _TooLarge(Exception):  # noqa: N818 (a signal between `_encode` and `_settle`)
    """Inputs of the batch whose outputs are too large to produce, and why."""

    def __init__(self, inputs: dict[Coordinates, OutputTooLargeError]) -> None:
        super().__init__(f"{len(inputs)} inputs make outputs too large to produce")
        self.inputs = inputs


def too_large(topic: str, key: bytes | None, value: bytes) -> OutputTooLargeError | None:
    """Why a record is larger than the producer takes, or None."""
    size = len(key or b"") + len(value)
    if size <= PRODUCER_LIMIT - RECORD_OVERHEAD:
        return None
    return OutputTooLargeError(f"its record for {topic} would be {size} bytes (key and value), over the "
                               f"producer's limit of {PRODUCER_LIMIT - RECORD_OVERHEAD}")


def _produce(producer: ProducerApi, topic: str, **record: Any) -> None:
    """Send, waiting for room while librdkafka's local queue is full (a batch bigger than
    queue.buffering.max.messages, as when a fresh application catches up a long backlog): a full queue only
    means deliveries are still on their way."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(0.1)


class Source(TypedDict):
    """Where a consumed message is, as log fields."""

    topic: str
    partition: int
    offset: int


def _source(message: Message) -> Source:
    """Where a consumed message is, as log fields."""
    topic, partition, offset = coordinates(message)
    return {"topic": topic, "partition": partition, "offset": offset}


def coordinates(message: Message) -> Coordinates:
    """Where a consumed message is."""
    return message.topic() or "", message_partition(message), message_offset(message)


class OffsetSink:
    """Where a processor's consumed positions commit, with each of its transactions, and where it resumes from."""

    checkpoint: Any = None
    """The processor's state as last committed, which each batch starts from (a checkpoint's; None for a group)."""

    def transactional_id(self, group: str, worker: str) -> str:
        """The producer's transactional id: a new producer with the same id fences the old one."""
        raise NotImplementedError

    def start(self, processor: TransactionalProcessor[Any], consumer: ConsumerApi) -> None:
        """Start reading the inputs where the last committed transaction left them."""
        raise NotImplementedError

    def due(self, now: float) -> bool:
        """Whether a transaction should commit even with nothing consumed; never by default."""
        return False

    def stage(self, consumer: ConsumerApi, batch: Batch[Any]) -> None:
        """Add what the batch must produce for its positions (before it is encoded); nothing by default."""

    def send(self, consumer: ConsumerApi, producer: ProducerApi, batch: Batch[Any]) -> None:
        """Commit the positions within the open transaction, besides its records; nothing by default."""

    def committed(self, batch: Batch[Any], now: float) -> None:
        """The batch's transaction committed; nothing by default."""

    def rewind(self, consumer: ConsumerApi) -> None:
        """Go back to the last committed positions, so an aborted or failed batch is consumed again."""
        raise NotImplementedError


class GroupOffsets(OffsetSink):
    """The processor's consumer group shares the partitions out among the workers and holds the offsets, which
    each transaction commits (`send_offsets_to_transaction`); each worker has its own transactional id."""

    def transactional_id(self, group: str, worker: str) -> str:
        """One per worker: the group, not the id, fences a worker whose partitions moved on."""
        return f"{group}-{worker}"

    def start(self, processor: TransactionalProcessor[Any], consumer: ConsumerApi) -> None:
        """Join the group (partitions are assigned during the first `consume`)."""
        consumer.subscribe([spec.name for spec in processor.inputs], on_assign=processor._on_assign,
                           on_revoke=processor._on_revoke, on_lost=processor._on_revoke)

    def send(self, consumer: ConsumerApi, producer: ProducerApi, batch: Batch[Any]) -> None:
        """The consumed offsets, committed by the transaction."""
        if batch.consumed:
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), CALL_TIMEOUT_S)

    def rewind(self, consumer: ConsumerApi) -> None:
        """Seek back to the group's committed offsets."""
        for tp in consumer.committed(consumer.assignment(), 30):
            consumer.seek(TopicPartition(tp.topic, tp.partition, max(tp.offset, 0)))


class CheckpointOffsets(OffsetSink):
    """No group: one instance reads every partition of the inputs, and each transaction produces a checkpoint to a
    compacted topic of the producer's cluster, keyed by the processor's group id, which is also its transactional
    id: a second instance fences the first, and resumes where its last commit left off. The checkpoint is the
    processor's state (`Batch.checkpoint`, which its `apply` may change): a record of `topic`, its fields' defaults
    the state before any input, with the next offset of each input partition in `positions` (by `position_key`)."""

    def __init__(self, topic: TopicSpec) -> None:
        record = record_of(topic)
        assert record is not None, "a checkpoint is a record"
        self.topic, self.record = topic, record
        self.checkpoint = record()
        self.key = b""
        self._committed_at = 0.0

    def transactional_id(self, group: str, worker: str) -> str:
        """One for every instance, wherever it runs."""
        return group

    def start(self, processor: TransactionalProcessor[Any], consumer: ConsumerApi) -> None:
        """Read the last committed checkpoint (after `init_transactions`: none can follow), then assign every
        partition of the inputs at its positions (from the beginning for a partition it has none of)."""
        assert processor.spec.table is None, "a table needs a group: its partitions go with the inputs'"
        self.key = processor.group.encode()
        reader = processor.clients.consumer(processor.output.kafka_config() | {
            "group.id": f"{processor.group}-restore", "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
        })
        latest = None
        for message in read_to_end(reader, [TopicPartition(self.topic.name, 0, OFFSET_BEGINNING)],
                                   f"checkpoint topic {self.topic.name}"):
            if message.key() == self.key:
                latest = message.value()
        if latest is not None:
            self.checkpoint = processor.codec_for_output().decode(latest, self.record)
        consumer.assign([TopicPartition(spec.name, p, self._position(spec.name, p))
                         for spec in processor.inputs for p in range(spec.partitions)])
        self._committed_at = processor.clock()
        processor.assigned = True
        processor.restored(list(range(processor.inputs[0].partitions)))

    def due(self, now: float) -> bool:
        """While idle, every `IDLE_COMMIT_S`."""
        return now - self._committed_at >= IDLE_COMMIT_S

    def stage(self, consumer: ConsumerApi, batch: Batch[Any]) -> None:
        """The batch's checkpoint, at the positions it has consumed to, as one more record of the transaction."""
        moved = {position_key(tp.topic, tp.partition): tp.offset
                 for tp in consumer.position(consumer.assignment()) if tp.offset >= 0}
        batch.checkpoint = replace(batch.checkpoint, positions=batch.checkpoint.positions | moved)
        batch.records.append((self.topic, self.key, batch.checkpoint))

    def committed(self, batch: Batch[Any], now: float) -> None:
        """The batch's checkpoint is the one to resume from."""
        self.checkpoint, self._committed_at = batch.checkpoint, now

    def rewind(self, consumer: ConsumerApi) -> None:
        """Seek back to the last committed checkpoint."""
        for tp in consumer.assignment():
            consumer.seek(TopicPartition(tp.topic, tp.partition, self._position(tp.topic, tp.partition)))

    def _position(self, topic: str, partition: int) -> int:
        return int(self.checkpoint.positions.get(position_key(topic, partition), OFFSET_BEGINNING))


class TransactionalProcessor(Generic[Row]):
    """The loop, the transaction and the table; subclasses say what a message and a tick do."""

    row_type: type[Row]

    def __init__(self, settings: Settings, spec: ProcessorSpec, *, output: Settings | None = None,
                 offsets: OffsetSink | None = None, dead_letters: TopicSpec | None = None) -> None:
        self.settings = settings
        self.spec = spec
        self.name = spec.name
        """Names the consumer group, the transactional id, the dead letters' agent and the local folder."""
        self.topics: Topics = declare(settings)
        self.inputs = list(spec.inputs)
        self.changelog: TopicSpec | None = changelog_topic(settings, spec.table) if spec.table else None
        self.codec = Codec(ConfluentRegistry(settings.registry_config()))
        self.output = settings if output is None else output
        """The cluster the producer writes to: the inputs' own, or another one (which needs `CheckpointOffsets`:
        the inputs' offsets cannot commit in another cluster's transaction)."""
        self.output_codec: Codec | None = None if output is None else Codec(ConfluentRegistry(output.registry_config()))
        """The codec of the other cluster's registry; None: `codec`."""
        self.offsets: OffsetSink = GroupOffsets() if offsets is None else offsets
        self.dead_letters = self.topics.dead_letter if dead_letters is None else dead_letters
        """Where the inputs that cannot be used go."""
        self.clients: Clients = KafkaClients()
        """Where its consumers and producers come from (a test driver puts an in-memory broker's here)."""
        self.clock: Callable[[], float] = tai_now
        """The time a batch is processed at (a test driver sets it)."""
        self.policy = settings.policy()
        self.rows: dict[int, dict[str, Row]] = {}
        """The table: partition -> key -> row, as committed."""
        self.stores: dict[int, PartitionStore] = {}
        self._consumer: ConsumerApi | None = None
        self._producer: ProducerApi | None = None
        self._last_tick = 0.0
        self._sweep_from: dict[int, bytes] = {}
        """Where each partition's next sweep starts (absent: at its first row)."""
        self._sweep_partition = 0
        """The partition the next sweep starts with."""
        self._swept = 0.0
        self.assigned = False
        """Whether the group gave this processor its partitions at least once (readiness)."""
        self.lags: dict[tuple[str, str, int], int] = {}
        """(group, topic, partition) -> messages not yet consumed, refreshed every tick (read by /metrics)."""
        self.pause = RETRY_PAUSE_S
        """How long the next transient failure waits before the batch is consumed again."""
        self.standby: Standby | None = None
        """Warm copies of the table partitions this worker does not own (with standby replicas)."""
        self.committing_since = 0.0
        """When the transaction being committed began (monotonic; 0: none), for `ProcessorService`'s watchdog."""

    @property
    def group(self) -> str:
        """The processor's consumer group (with `CheckpointOffsets`, its transactional id and checkpoint key)."""
        return f"{self.settings.app_id}-{self.name}"

    def codec_for_output(self) -> Codec:
        """The codec of the cluster the producer writes to."""
        return self.codec if self.output_codec is None else self.output_codec

    # -- what subclasses define -------------------------------------------------------------------
    def apply(self, batch: Batch[Row], message: Message, now: float) -> None:
        """Stage what one input message produces and changes (may raise the `streams.errors` types)."""
        raise NotImplementedError

    def tick(self, batch: Batch[Row], now: float) -> None:
        """Stage what the passing of time produces (every `TICK_SECONDS`); nothing by default."""

    def committed(self, batch: Batch[Row], now: float) -> None:
        """A batch committed (for counting, and for effects outside Kafka); nothing by default."""

    def restored(self, partitions: list[int]) -> None:
        """These partitions were assigned and their rows restored; nothing by default."""

    def setup(self) -> None:
        """Make what the processor needs before its clients start (topics of its own); nothing by default."""

    def prepare(self, messages: list[Message]) -> None:
        """Get ready for a batch before the clock is read for it (create the topics it needs, register their
        schemas): nothing by default. A transient failure (`RetriableError`, `RegistryError`) consumes the batch
        again later."""

    # -- set-up ----------------------------------------------------------------------------------
    def _clients(self) -> tuple[ConsumerApi, ProducerApi]:
        base = self.settings.kafka_config()
        consumer = self.clients.consumer(base | {
            "group.id": self.group, "isolation.level": "read_committed",
            "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "range", "session.timeout.ms": 10_000,
            "max.poll.interval.ms": 120_000,
        })
        return consumer, self._transactional_producer()

    def _transactional_producer(self) -> ProducerApi:
        """A producer that has taken the transactional id over: the broker has aborted what an earlier producer
        of this id (a previous run of this worker, or a stuck one of this run) left open."""
        producer = self.clients.producer(self.output.kafka_config() | {
            "transactional.id": self.offsets.transactional_id(self.group, self.settings.worker),
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS, "linger.ms": 2,
        })
        self._until_done("init_transactions", lambda: producer.init_transactions(CALL_TIMEOUT_S),
                         STUCK_CALL_S)
        return producer

    def run(self, stop: threading.Event) -> None:
        """Process until `stop` is set; a fatal Kafka error propagates (the worker then stops)."""
        consumer = self._start_clients()
        try:
            while not stop.is_set():
                if not self._cycle(consumer):
                    stop.wait(self.pause)
                    self.pause = min(2 * self.pause, MAX_RETRY_PAUSE_S)
        finally:
            self._stop_clients(consumer)

    def _start_clients(self) -> ConsumerApi:
        """Make the clients, take the transactional id over and start reading where the last commit left off."""
        self.setup()
        consumer, producer = self._clients()
        self._consumer, self._producer = consumer, producer
        if self.changelog is not None and self.settings.standby_replicas > 0:
            self.standby = Standby(self.settings, self.clients, self.group, self.changelog.name, self.store_path)
        self.offsets.start(self, consumer)
        return consumer

    def _cycle(self, consumer: ConsumerApi) -> bool:
        """Consume a batch, transform it, commit it; False after a transient failure (consume it again later)."""
        messages = consumer.consume(BATCH, POLL_SECONDS)
        batch: Batch[Row] = Batch()
        outgoing = None
        try:
            self.prepare(messages)  # it may take a while: the batch's time is read after it
            now = self.clock()
            batch, outgoing = self._settle(consumer, messages, now)
        except (RetriableError, RegistryError) as transient:
            batch.retry = transient
        if batch.retry is not None:
            log.warning("transient failure: batch consumed again", processor=self.name, reason=batch.retry,
                        pause_s=round(self.pause, 1))
            self.offsets.rewind(consumer)
            return False
        self.pause = RETRY_PAUSE_S
        if outgoing is not None:
            self._commit(batch, outgoing)
        elif batch.notes:  # nothing to commit, only effects outside Kafka (a re-dispatch)
            self.committed(batch, self.clock())
        if self.standby is not None:
            self.standby.poll()
        if batch.ticked:
            self.lags = self._lags(consumer)
        return True

    def _stop_clients(self, consumer: ConsumerApi) -> None:
        """Leave the group (its partitions are revoked) and close the tables' databases."""
        consumer.close()
        for store in self.stores.values():
            store.close()
        if self.standby is not None:
            self.standby.close()

    # -- rebalance -------------------------------------------------------------------------------
    def _partitions(self, tps: list[TopicPartition]) -> set[int]:
        return {tp.partition for tp in tps if tp.topic == self.inputs[0].name}

    def _on_assign(self, consumer: ConsumerApi, tps: list[TopicPartition]) -> None:
        partitions = sorted(self._partitions(tps))
        if self.standby is not None:
            self.standby.release(set(partitions))
        self._restore(partitions)
        self._follow_the_rest()
        self.assigned = True
        self.restored(partitions)
        log.info("assigned partitions", processor=self.name, partitions=sorted(self.rows),
                 rows=sum(len(rows) for rows in self.rows.values()))

    def _on_revoke(self, consumer: ConsumerApi, tps: list[TopicPartition]) -> None:
        for partition in self._partitions(tps):
            self.rows.pop(partition, None)
            store = self.stores.pop(partition, None)
            if store is not None:
                store.close()
        self._follow_the_rest()

    def _follow_the_rest(self) -> None:
        """Keep a standby copy of every table partition this worker does not own."""
        if self.standby is not None and self.spec.table is not None:
            self.standby.follow(set(range(self.spec.table.partitions)) - set(self.stores))

    def _restore(self, partitions: list[int]) -> None:
        """Load each partition's rows from RocksDB, then replay its changelog from the checkpoint."""
        if not partitions or self.changelog is None:
            return
        changelog = self.changelog
        stores = {p: PartitionStore(self.store_path(p)) for p in partitions}
        offsets = self._restore_points(stores)
        rows = {p: self._hot_rows(store.items()) for p, store in stores.items()}
        changes: dict[int, dict[bytes, bytes | None]] = {p: {} for p in partitions}
        reader = self.clients.consumer(self.settings.kafka_config() | {
            "group.id": f"{self.group}-restore", "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True,
        })
        for message in read_to_end(reader, [TopicPartition(changelog.name, p, offsets[p]) for p in partitions],
                                   f"{self.name} changelog"):
            partition = message_partition(message)
            key, value = message.key() or b"", message.value()
            changes[partition][key] = value
            offsets[partition] = message_offset(message) + 1
            row = None if value is None else self.codec.decode(value, self.row_type)
            if row is not None and self.hot(row):
                rows[partition][key.decode()] = row
            else:
                rows[partition].pop(key.decode(), None)
        for p, store in stores.items():
            if changes[p]:
                store.apply(changes[p], offsets[p])
            self.stores[p], self.rows[p] = store, rows[p]
        log.info("restored partitions", processor=self.name, partitions=partitions,
                 rows_in_memory=sum(len(rows[p]) for p in stores),
                 from_changelog=sum(len(c) for c in changes.values()))

    def _hot_rows(self, items: Iterable[tuple[bytes, bytes]]) -> dict[str, Row]:
        """The rows among `items` that are kept in memory."""
        rows = {}
        for key, value in items:
            row = self.codec.decode(value, self.row_type)
            if self.hot(row):
                rows[key.decode()] = row
        return rows

    def _restore_points(self, stores: dict[int, PartitionStore]) -> dict[int, int]:
        """Where each partition's changelog replay starts; a copy the changelog cannot continue is cleared."""
        assert self.changelog is not None
        changelog = self.changelog.name
        marks = self.clients.watermarks(self.settings, [(changelog, p) for p in stores])
        points = {}
        for p, store in stores.items():
            low, high = marks[(changelog, p)]
            if (reason := local_state.invalid(store.checkpoint, low, high)) is not None:
                if store.checkpoint:
                    log.warning("local state cleared, restoring from the changelog", processor=self.name,
                                partition=p, reason=reason)
                store.clear()
            points[p] = max(store.checkpoint, low)
        return points

    def store_path(self, partition: int) -> Path:
        """Where a table partition's RocksDB lives."""
        return self.settings.worker_dir() / self.name / str(partition)

    # -- transform -------------------------------------------------------------------------------
    def state(self, batch: Batch[Row], partition: int, key: str) -> Row | None:
        """A row as this batch leaves it so far (a cold one is read from the partition's RocksDB)."""
        staged = batch.changes.get(partition, {})
        if key in staged:
            return staged[key]
        if (row := self.rows.get(partition, {}).get(key)) is not None:
            return row
        return self.cold(partition, key)

    def cold(self, partition: int, key: str) -> Row | None:
        """A committed row that is not kept in memory (None: no such row, or the partition is not here)."""
        store = self.stores.get(partition)
        value = store.get(key.encode()) if store is not None else None
        return self.codec.decode(value, self.row_type) if value is not None else None

    def hot(self, row: Row) -> bool:
        """Whether a committed row stays in memory (`rows`) as well as in RocksDB: rows still in play. The
        others are read back when an event needs them, so memory holds what is in flight, not what the
        retention time keeps; by default every row is hot."""
        return True

    def sweep(self, batch: Batch[Row], visit: Callable[[int, str, Row], None]) -> None:
        """Show `visit` the next SWEEP_ROWS cold rows every SWEEP_SECONDS, going on where the last sweep
        stopped (partition after partition), so a processor can expire rows without holding them in memory
        or reading its whole table at once."""
        now = self.clock()
        partitions = sorted(self.stores)
        if not partitions or now - self._swept < SWEEP_SECONDS:
            return
        self._swept = now
        first = next((i for i, p in enumerate(partitions) if p >= self._sweep_partition), 0)
        budget = SWEEP_ROWS
        for partition in partitions[first:] + partitions[:first]:
            store, hot, staged = self.stores[partition], self.rows.get(partition, {}), batch.changes.get(partition, {})
            for key, value in store.items(self._sweep_from.get(partition)):
                if budget == 0:
                    self._sweep_partition, self._sweep_from[partition] = partition, key
                    return
                budget -= 1
                name = key.decode()
                if name not in hot and name not in staged:
                    visit(partition, name, self.codec.decode(value, self.row_type))
            self._sweep_from.pop(partition, None)
        self._sweep_partition = 0

    def stage(self, batch: Batch[Row], partition: int, key: str, row: Row | None) -> None:
        """Change a row when the batch commits (None deletes it)."""
        batch.changes.setdefault(partition, {})[key] = row
        if batch.applying is not None:
            batch.changed_by[(partition, key)] = batch.applying

    def decode(self, spec: TopicSpec, message: Message, record_type: type[Any]) -> Any:
        """The record in a message read from `spec`'s topic."""
        return self.codec.decode(message.value(), record_type, accept_json=spec.accepts_json)

    def _settle(self, consumer: ConsumerApi, messages: list[Message], now: float) -> tuple[Batch[Row], Outgoing | None]:
        """The batch transformed, and encoded if there is anything to commit (before the transaction: a registry
        that does not answer is transient). Inputs whose outputs are too large to produce become dead letters,
        and the batch is transformed again without them (at most once per input: each round refuses more)."""
        refused: dict[Coordinates, OutputTooLargeError] = {}
        last_tick = self._last_tick
        while True:
            batch = self._transform(messages, now, refused)
            if batch.retry is not None or not (batch or self.offsets.due(now)):
                return batch, None
            self.offsets.stage(consumer, batch)
            try:
                return batch, self._encode(batch)
            except _TooLarge as too_large_inputs:
                refused |= too_large_inputs.inputs
                self._last_tick = last_tick  # the tick's outputs are made again

    def _transform(self, messages: list[Message], now: float,
                   refused: Mapping[Coordinates, OutputTooLargeError] | None = None) -> Batch[Row]:
        """Apply each message (a `refused` one is a dead letter with its reason instead), then tick if due."""
        batch: Batch[Row] = Batch(checkpoint=self.offsets.checkpoint)
        for message in messages:
            if message.error():
                log.warning("consumer error", processor=self.name, error=message.error())
                continue
            batch.consumed += 1
            if refused and (why := refused.get(coordinates(message))) is not None:
                log.warning("dead letter", processor=self.name, **_source(message), reason=why)
                self.reject(batch, message, why, now)
                continue
            first, batch.applying = len(batch.records), message
            try:
                self._guarded(batch, message, now)
            except (RetriableError, RegistryError) as transient:
                batch.retry = transient
                return batch
            finally:
                batch.applying = None
            if len(batch.records) > first:
                batch.origins.append((first, len(batch.records), message))
        if now - self._last_tick >= TICK_SECONDS:
            self._last_tick, batch.ticked = now, True
            self.tick(batch, now)
        return batch

    def _guarded(self, batch: Batch[Row], message: Message, now: float) -> None:
        """Apply one message; its failure becomes the outcome its type calls for."""
        with logs.labelled():
            try:
                self.apply(batch, message, now)
            except (RetriableError, RegistryError):  # transient (storage, the registry): the batch again, later
                raise
            except IgnorableEvent as why:
                log.info("ignored", processor=self.name, **_source(message), reason=why)
            except (DecodeError, InvalidEventError) as error:
                log.warning("dead letter", processor=self.name, **_source(message), error=type(error).__name__,
                            reason=error)
                self.reject(batch, message, error, now)
            except Exception as error:
                log.exception("unexpected error: dead letter", processor=self.name, **_source(message))
                self.reject(batch, message, error, now)

    def reject(self, batch: Batch[Row], message: Message, error: BaseException, now: float) -> None:
        """Stage the message's dead letter, with why it cannot be used."""
        letter = dead_letter(message.topic() or "", message_partition(message), message_offset(message),
                             message.key(), message.value(), error, self.name, now)
        batch.records.append((self.dead_letters, letter.key, letter))

    # -- commit ----------------------------------------------------------------------------------
    def _encode(self, batch: Batch[Row]) -> Outgoing:
        """Every record and changelog row of the batch as bytes, checked against the processor's declaration and
        the producer's limit.

        Raises:
            _TooLarge: the inputs whose records or rows are too large (a tick's too large record or row becomes a
                dead letter itself, and a row is then left unchanged).
        """
        records: list[tuple[str, bytes | None, bytes | None, int]] = []
        codec = self.codec_for_output()
        refused: dict[Coordinates, OutputTooLargeError] = {}
        orphans: list[tuple[str, bytes | None, bytes, OutputTooLargeError]] = []
        for index, (spec, record_key, record) in enumerate(batch.records):
            if not self.spec.may_write(spec.name):
                raise UndeclaredOutputError(f"{self.name} may not write {spec.name}: topology/graph.py does not "
                                            "declare it")
            value: bytes | None
            if record is None or isinstance(record, bytes):  # a tombstone, or encoded by the processor: by key
                value, partition = record, -1
            else:
                value, partition = codec.encode(spec.name, record), spec.partition_of(record)
            if value is None or (error := too_large(spec.name, record_key, value)) is None:
                records.append((spec.name, record_key, value, partition))
            elif (origin := batch.origin_of(index)) is not None:
                refused.setdefault(coordinates(origin), error)
            else:
                orphans.append((spec.name, record_key, value, error))
        changelog: dict[int, dict[bytes, bytes | None]] = {}
        for partition, changes in batch.changes.items():
            assert self.changelog is not None, f"{self.name} has no table to change"
            rows: dict[bytes, bytes | None] = {}
            changelog[partition] = rows
            for row, state in list(changes.items()):
                encoded = None if state is None else self.codec.encode(self.changelog.name, state)
                if encoded is None or (error := too_large(self.changelog.name, row.encode(), encoded)) is None:
                    rows[row.encode()] = encoded
                elif (origin := batch.changed_by.get((partition, row))) is not None:
                    refused.setdefault(coordinates(origin), error)
                else:
                    del changes[row]
                    orphans.append((self.changelog.name, row.encode(), encoded, error))
        if refused:
            raise _TooLarge(refused)
        for topic, record_key, value, error in orphans:
            log.error("output made by no input too large: dead letter", processor=self.name, topic=topic,
                      reason=error)
            letter = dead_letter(topic, -1, -1, record_key, value, error, self.name, self.clock())
            records.append((self.dead_letters.name, letter.key, codec.encode(self.dead_letters.name, letter),
                            self.dead_letters.partition_of(letter)))
        return Outgoing(records, changelog)

    def _commit(self, batch: Batch[Row], outgoing: Outgoing) -> None:
        consumer, producer = self._consumer, self._producer
        assert consumer is not None and producer is not None
        delivered: dict[int, int] = {}  # changelog partition -> its end once delivered (`_record_delivery`)
        self.committing_since = time.monotonic()
        encoded = outgoing.changelog
        try:
            producer.begin_transaction()
            for topic, record_key, value, partition in outgoing.records:
                _produce(producer, topic, key=record_key, value=value, partition=partition)
            on_delivery = functools.partial(_record_delivery, delivered)
            for partition, rows in encoded.items():
                assert self.changelog is not None
                for key, row in rows.items():
                    _produce(producer, self.changelog.name, key=key, value=row, partition=partition,
                             on_delivery=on_delivery)
            try:
                self._until_done("send_offsets_to_transaction", lambda: self.offsets.send(consumer, producer, batch),
                                 STUCK_OFFSETS_S)
            except _Stuck as stuck:  # nothing is committed before commit_transaction: a new producer aborts it all
                log.warning("transactional call stuck: producer replaced, batch processed again",
                            processor=self.name, reason=stuck)
                self._producer = self._transactional_producer()
                self.offsets.rewind(consumer)
                return
            self._until_done("commit_transaction", lambda: producer.commit_transaction(CALL_TIMEOUT_S),
                             STUCK_CALL_S)
        except KafkaException as exception:
            error = exception.args[0]
            if not error.txn_requires_abort():
                raise
            log.warning("transaction aborted: batch processed again", processor=self.name, reason=error)
            producer.abort_transaction(CALL_TIMEOUT_S)
            self.offsets.rewind(consumer)
            return
        finally:
            self.committing_since = 0.0
        self._apply(batch, encoded, delivered)

    def _until_done(self, what: str, call: Callable[[], None], stuck_after: float) -> None:
        """Call again while librdkafka says the error is retriable ("retry call to resume", as during a broker
        bounce); anything else goes up, and so does `_Stuck` for a call that outlives `stuck_after`: a stuck
        commit_transaction may have committed or not, so it stops the processor (its worker restarts and restores
        its table from the changelog), where a stuck send_offsets_to_transaction only replaces the producer."""
        while True:
            try:
                within(stuck_after, what, call)
                return
            except KafkaException as exception:
                if not exception.args[0].retriable():
                    raise
                log.warning("retriable Kafka error: calling again", processor=self.name, call=what,
                            reason=exception.args[0])

    def _apply(self, batch: Batch[Row], encoded: dict[int, dict[bytes, bytes | None]],
               delivered: dict[int, int]) -> None:
        """The transaction committed: now the table may change, in memory and on disk (its rows exactly as
        the changelog has them, encoded once), and be counted."""
        for _spec, _key, record in batch.records:
            if isinstance(record, DeadLetter):
                metrics.DEAD_LETTERS.labels(self.name).inc()
        metrics.PROCESSED.labels(self.name).inc(batch.consumed)
        now = self.clock()
        self.offsets.committed(batch, now)
        self.committed(batch, now)
        for partition, changes in batch.changes.items():
            rows = self.rows.setdefault(partition, {})
            for key, state in changes.items():
                if state is not None and self.hot(state):
                    rows[key] = state
                else:
                    rows.pop(key, None)
            store = self.stores.get(partition)
            if store is not None:
                store.apply(encoded[partition], delivered.get(partition, store.checkpoint))

    def _lags(self, consumer: ConsumerApi) -> dict[tuple[str, str, int], int]:
        lags = {}
        for tp in consumer.position(consumer.assignment()):
            _low, high = consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                lags[(self.group, tp.topic, tp.partition)] = max(high - max(tp.offset, 0), 0)
        return lags


class ProcessorService(mode.Service):
    """Runs a processor's thread alongside a Faust worker, and stops it with the worker."""

    def __init__(self, processor: TransactionalProcessor[Any], on_crash: Callable[[BaseException], Any],
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.processor = processor
        self._on_crash = on_crash
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled = False

    async def on_start(self) -> None:
        """Start the processor's thread."""
        loop = asyncio.get_running_loop()

        def body() -> None:
            try:
                self.processor.run(self._stop_event)
            except BaseException as error:  # a fatal error: the worker must not go on without it
                log.critical("processor stopped", processor=self.processor.name, reason=repr(error))
                loop.call_soon_threadsafe(self._on_crash, error)

        self._thread = threading.Thread(target=body, name=self.processor.name, daemon=True)
        self._thread.start()

    @mode.Service.timer(COMMIT_STALL_S / 3)
    async def _watchdog(self) -> None:
        """A commit stuck past every timeout stops the worker, to be restarted. The one stall seen (librdkafka's
        send_offsets_to_transaction after a broker bounce) is ended sooner by replacing the producer
        (`STUCK_OFFSETS_S`); this is the last resort for any other, as the group would otherwise wait for
        max.poll.interval.ms (2 minutes) before handing the partitions on."""
        since = self.processor.committing_since
        if since and time.monotonic() - since > COMMIT_STALL_S and not self._stalled:
            self._stalled = True
            error = TimeoutError(f"{self.processor.name}: a transaction has been committing for more than "
                                 f"{COMMIT_STALL_S:.0f} s (librdkafka#5456): stopping the worker")
            log.critical("commit stuck: stopping the worker", processor=self.processor.name, reason=error)
            self._on_crash(error)

    async def on_stop(self) -> None:
        """Ask the thread to finish its batch and leave the group (a stalled one cannot: it is left behind)."""
        self._stop_event.set()
        if self._thread is not None and not self._stalled:
            await asyncio.to_thread(self._thread.join, 30)


def _record_delivery(delivered: dict[int, int], error: KafkaError | None, message: Message) -> None:
    """A changelog record delivered: its partition's end, for the store's checkpoint. Each commit has its own
    `delivered`, so a late report from a replaced producer changes nothing that is read."""
    if error is None:
        partition = message_partition(message)
        delivered[partition] = max(delivered.get(partition, 0), message_offset(message) + 1)


def position_key(topic: str, partition: int) -> str:
    """A checkpoint's key for one input partition."""
    return f"{topic}:{partition}"


def read_to_end(reader: ConsumerApi, partitions: list[TopicPartition], what: str) -> Iterator[Message]:
    """The committed messages of these partitions, from the offsets given to their ends as they are now; the
    reader (with `enable.partition.eof`) is closed after."""
    try:
        reader.assign(partitions)
        pending = {(tp.topic, tp.partition) for tp in partitions}
        deadline = time.monotonic() + RESTORE_TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: partitions {sorted(pending)} not read to their end in "
                                   f"{RESTORE_TIMEOUT_S} s")
            message = reader.poll(0.1)
            if message is None:
                continue
            if (problem := message.error()) is not None:
                if problem.code() != KafkaError._PARTITION_EOF:
                    raise KafkaException(problem)
                pending.discard((message.topic() or "", message_partition(message)))
                continue
            yield message
    finally:
        reader.close()


def message_partition(message: Message) -> int:
    partition = message.partition()
    assert partition is not None, "a consumed or delivered message has a partition"
    return partition


def message_offset(message: Message) -> int:
    offset = message.offset()
    assert offset is not None, "a consumed or delivered message has an offset"
    return offset
