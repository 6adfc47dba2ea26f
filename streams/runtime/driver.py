"""The broker-less test driver of the engine, in the spirit of Kafka Streams' `TopologyTestDriver`.

Tests put records on topics and run the real processors through the real engine cycle (consume a
batch, `apply` each message, produce outputs, changelog records and offsets in one transaction,
commit, then update the table): only the broker and the schema registry are faked, in memory.
The fake keeps what the engine's guarantees rest on: records of an open or aborted transaction
stay invisible to `read_committed` readers (each transaction ends with a marker that takes an
offset, as in Kafka), a group's offsets commit with the transaction, `init_transactions` fences
the previous producer of a transactional id and aborts what it left open, and a new processor on
the same broker restores its table from the changelog. A processor that writes to another cluster
(the SAL bridge) gets its producer there, on a broker of its own (`clusters`).
"""

from __future__ import annotations

import json
import sys
import threading
import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from streams.config import Settings
from streams.errors import RegistryError
from streams.runtime.clients import DeliveryCallback, RebalanceCallback
from streams.runtime.dead_letters import PRODUCER_LIMIT, RECORD_OVERHEAD
from streams.runtime.engine import Batch, TransactionalProcessor
from streams.serde.base import Record
from streams.serde.codec import Codec
from streams.serde.declared import record_of
from streams.serde.schemas import Schema
from topology.topics import TopicSpec

OFFSET_INVALID = -1001
"""librdkafka's "no offset"."""


class MemoryRegistry:
    """A schema registry in memory (`streams.serde.codec.SchemaRegistry`); `available = False` is an outage, and
    `lookups` counts the schemas asked for by id."""

    def __init__(self) -> None:
        self.available = True
        self.lookups = 0
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, Schema] = {}

    def register(self, subject: str, schema: Schema) -> int:
        """The schema's id: the same schema has the same id under every subject, as in Confluent's registry."""
        self._reachable(f"cannot register {subject}")
        schema_id = self._ids.setdefault(json.dumps(schema, sort_keys=True), len(self._ids) + 1)
        self._schemas[schema_id] = schema
        return schema_id

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The schema with this id, or None."""
        self._reachable(f"cannot fetch schema id {schema_id}")
        self.lookups += 1
        return self._schemas.get(schema_id)

    def _reachable(self, what: str) -> None:
        if not self.available:
            raise RegistryError(f"{what}: the schema registry is down (test driver)")


class State(Enum):
    """Where a transaction is."""

    OPEN = "open"
    COMMITTED = "committed"
    ABORTED = "aborted"


@dataclass
class Transaction:
    """One producer's transaction: the partitions it wrote and the group offsets it commits."""

    state: State = State.OPEN
    partitions: set[tuple[str, int]] = field(default_factory=set)
    offsets: dict[tuple[str, str, int], int] = field(default_factory=dict)
    """(group, topic, partition) -> offset."""


@dataclass(frozen=True)
class Entry:
    """One offset of a partition's log."""

    key: bytes | None
    value: bytes | None
    transaction: Transaction | None
    """None: written outside any transaction, visible at once."""
    marker: bool = False
    """A transaction's commit or abort marker: it takes an offset, and is never delivered."""


class Broker:
    """Topics, committed group offsets and transactions, in memory; also the engine's `Clients`."""

    def __init__(self) -> None:
        self.logs: dict[str, list[list[Entry]]] = {}
        """Topic -> partition -> entries, by offset."""
        self.group_offsets: dict[tuple[str, str, int], int] = {}
        self.epochs: dict[str, int] = {}
        """Transactional id -> the epoch of its one live producer."""
        self.open: dict[str, Transaction] = {}
        """Transactional id -> its open transaction."""
        self.commit_failures: list[KafkaError] = []
        """Raised, in turn, by the next `commit_transaction` calls (after their records were flushed)."""
        self.stuck: dict[str, int] = {}
        """Producer call -> how many of its next calls block until `unstuck` is set."""
        self.unstuck = threading.Event()
        self.producer_queue = 100_000
        """Records a producer holds before `poll` serves their reports (librdkafka's
        queue.buffering.max.messages); `produce` beyond it raises `BufferError`."""

    # -- the engine's Clients --------------------------------------------------------------------
    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        """A consumer of this broker."""
        return FakeConsumer(self, config)

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        """A transactional producer to this broker."""
        return FakeProducer(self, config)

    def watermarks(self, settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) of each partition; (0, 0) for one that does not exist."""
        return {(topic, p): (0, len(self.logs[topic][p])) if p < len(self.logs.get(topic, [])) else (0, 0)
                for topic, p in tps}

    # -- topics ----------------------------------------------------------------------------------
    def create(self, topic: str, partitions: int) -> None:
        """Create a topic (again: it must have the same partitions)."""
        existing = self.logs.setdefault(topic, [[] for _ in range(partitions)])
        if len(existing) != partitions:
            raise ValueError(f"topic {topic} has {len(existing)} partitions, not {partitions}")

    def partitions(self, topic: str) -> int:
        """How many partitions a topic has (raising KafkaException, as a client would, for an unknown one)."""
        if topic not in self.logs:
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC, f"unknown topic {topic}"))
        return len(self.logs[topic])

    def log(self, topic: str, partition: int) -> list[Entry]:
        """A partition's entries."""
        if not 0 <= partition < self.partitions(topic):
            raise KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION, f"{topic} has no partition {partition}"))
        return self.logs[topic][partition]

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """The partition of a record sent without one: CRC32 of the key, as librdkafka's default partitioner."""
        return zlib.crc32(key or b"") % self.partitions(topic)

    def append(self, topic: str, partition: int, key: bytes | None, value: bytes | None,
               transaction: Transaction | None = None) -> int:
        """Write a record; its offset."""
        log = self.log(topic, partition)
        log.append(Entry(key, value, transaction))
        if transaction is not None:
            transaction.partitions.add((topic, partition))
        return len(log) - 1

    def fetch(self, topic: str, partition: int, offset: int, limit: int) -> tuple[list[Message], int]:
        """Up to `limit` committed records from `offset`, and the offset to fetch next: as a `read_committed`
        reader, it stops at the first record of an open transaction and skips aborted records and markers."""
        log = self.log(topic, partition)
        messages: list[Message] = []
        while offset < len(log) and len(messages) < limit:
            entry = log[offset]
            if entry.transaction is not None and entry.transaction.state is State.OPEN:
                break
            if not entry.marker and (entry.transaction is None or entry.transaction.state is State.COMMITTED):
                messages.append(Message(topic=topic, partition=partition, offset=offset, key=entry.key,
                                        value=entry.value))
            offset += 1
        return messages, offset

    # -- transactions ----------------------------------------------------------------------------
    def fence(self, transactional_id: str) -> int:
        """A new producer takes the transactional id: the old one is fenced, its open transaction aborted."""
        if (left_open := self.open.get(transactional_id)) is not None:
            self.end(transactional_id, left_open, State.ABORTED)
        self.epochs[transactional_id] = self.epochs.get(transactional_id, 0) + 1
        return self.epochs[transactional_id]

    def end(self, transactional_id: str, transaction: Transaction, state: State) -> None:
        """Commit or abort: a marker in every partition written; a commit's offsets become the group's."""
        transaction.state = state
        for topic, partition in sorted(transaction.partitions):
            self.log(topic, partition).append(Entry(None, None, transaction, marker=True))
        if state is State.COMMITTED:
            self.group_offsets.update(transaction.offsets)
        del self.open[transactional_id]


class FakeConsumer:
    """`streams.runtime.clients.ConsumerApi` on a `Broker`: a group of one member, or assigned partitions."""

    def __init__(self, broker: Broker, config: dict[str, Any]) -> None:
        if config.get("isolation.level", "read_committed") != "read_committed":
            raise NotImplementedError("the test driver's consumers read committed records only")
        self._broker = broker
        self._group: str = config["group.id"]
        self._earliest = config.get("auto.offset.reset") == "earliest"
        self._eof = bool(config.get("enable.partition.eof", False))
        self._topics: list[str] = []
        self._on_assign: RebalanceCallback | None = None
        self._on_revoke: RebalanceCallback | None = None
        self._positions: dict[tuple[str, int], int] = {}
        """The assignment, in order, and the next offset to fetch of each partition."""
        self._at_end: set[tuple[str, int]] = set()
        """Partitions whose end was reported (enable.partition.eof) since they last moved."""
        self._closed = False
        self.consumed = 0
        """Messages handed out so far (for `TopologyTestDriver.run` to know when all is consumed)."""

    def subscribe(self, topics: list[str], on_assign: RebalanceCallback | None = None,
                  on_revoke: RebalanceCallback | None = None, on_lost: RebalanceCallback | None = None) -> None:
        """Join the group: it gets every partition of `topics` at the next `consume` (nobody else is in it)."""
        for topic in topics:
            self._broker.partitions(topic)
        self._topics, self._on_assign, self._on_revoke = topics, on_assign, on_revoke

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        """Up to `num_messages` committed messages, partition after partition (end-of-partition events, if
        asked for, once per time a partition's end is reached)."""
        self._usable()
        if self._topics and not self._positions:
            self._join()
        out: list[Message] = []
        for (topic, partition), offset in self._positions.items():
            messages, self._positions[(topic, partition)] = self._broker.fetch(topic, partition, offset,
                                                                               num_messages - len(out))
            if messages:
                self._at_end.discard((topic, partition))
            out += messages
            if len(out) < num_messages and self._eof and (topic, partition) not in self._at_end:
                self._at_end.add((topic, partition))
                end = self._positions[(topic, partition)]
                out.append(Message(topic=topic, partition=partition, offset=end,
                                   error=KafkaError(KafkaError._PARTITION_EOF, f"{topic} [{partition}] at {end}")))
        self.consumed += len(out)
        return out

    def poll(self, timeout: float = -1) -> Message | None:
        """One message, or None."""
        messages = self.consume(1, timeout)
        return messages[0] if messages else None

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read these partitions from their offsets (none given: see `_start`)."""
        self._usable()
        self._positions = {(tp.topic, tp.partition): self._start(tp) for tp in partitions}
        self._at_end.clear()

    def assignment(self) -> list[TopicPartition]:
        """The partitions being read."""
        return [TopicPartition(topic, partition) for topic, partition in self._positions]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The next offset to fetch of each partition."""
        return [TopicPartition(tp.topic, tp.partition, self._positions.get((tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        """The group's committed offsets (OFFSET_INVALID: none)."""
        return [TopicPartition(tp.topic, tp.partition,
                               self._broker.group_offsets.get((self._group, tp.topic, tp.partition), OFFSET_INVALID))
                for tp in partitions]

    def seek(self, partition: TopicPartition) -> None:
        """Fetch this partition from this offset next."""
        self._positions[(partition.topic, partition.partition)] = self._start(partition)
        self._at_end.discard((partition.topic, partition.partition))

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1,
                              cached: bool = False) -> tuple[int, int]:
        """(0, high): the fake never deletes records."""
        return 0, len(self._broker.log(partition.topic, partition.partition))

    def consumer_group_metadata(self) -> str:
        """The group, for `FakeProducer.send_offsets_to_transaction`."""
        return self._group

    def close(self) -> None:
        """Leave the group: its partitions are revoked first, as librdkafka does."""
        if self._topics and self._positions and self._on_revoke is not None:
            self._on_revoke(self, self.assignment())
        self._closed = True

    def _join(self) -> None:
        tps = [TopicPartition(topic, p) for topic in self._topics for p in range(self._broker.partitions(topic))]
        if self._on_assign is not None:
            self._on_assign(self, tps)
        self.assign(tps)

    def _start(self, tp: TopicPartition) -> int:
        """Where reading a partition begins: the offset given (OFFSET_BEGINNING: the start), else the group's
        committed one, else the start (auto.offset.reset=earliest) or the end."""
        if tp.offset >= 0:
            return tp.offset
        if tp.offset == OFFSET_BEGINNING:
            return 0
        committed = self._broker.group_offsets.get((self._group, tp.topic, tp.partition))
        if committed is not None:
            return committed
        return 0 if self._earliest else len(self._broker.log(tp.topic, tp.partition))

    def _usable(self) -> None:
        if self._closed:
            raise RuntimeError("Consumer closed")


class FakeProducer:
    """`streams.runtime.clients.ProducerApi` on a `Broker`: records go into the log at once, visible once their
    transaction commits; delivery reports are served by `poll` or when it is committed (librdkafka flushes
    then). Like librdkafka's, its queue of records not yet reported is bounded."""

    def __init__(self, broker: Broker, config: dict[str, Any]) -> None:
        self._broker = broker
        self._id: str = config["transactional.id"]
        self._queued = 0
        self._epoch = 0
        self._transaction: Transaction | None = None
        self._reports: list[tuple[DeliveryCallback, Message]] = []

    def init_transactions(self, timeout: float = -1) -> None:
        """Take the transactional id over."""
        self._epoch = self._broker.fence(self._id)

    def begin_transaction(self) -> None:
        """Start a transaction."""
        self._live()
        if self._transaction is not None:
            raise KafkaException(KafkaError(KafkaError._STATE, "a transaction is already open"))
        self._transaction = self._broker.open[self._id] = Transaction()

    def produce(self, topic: str, *, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                on_delivery: DeliveryCallback | None = None) -> None:
        """Write a record in the open transaction (a record over the producer's limit is refused, as librdkafka
        refuses it)."""
        transaction = self._current()
        if len(key or b"") + len(value or b"") + RECORD_OVERHEAD > PRODUCER_LIMIT:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "Broker: Message size too large"))
        if self._queued >= self._broker.producer_queue:
            raise BufferError("Local: Queue full")
        self._queued += 1
        if partition < 0:
            partition = self._broker.partition_for(topic, key)
        offset = self._broker.append(topic, partition, key, value, transaction)
        if on_delivery is not None:
            self._reports.append((on_delivery, Message(topic=topic, partition=partition, offset=offset, key=key,
                                                       value=value)))

    def poll(self, timeout: float = -1) -> int:
        """Serve the delivery reports so far, which empties the queue."""
        reports, self._reports, self._queued = self._reports, [], 0
        for callback, message in reports:
            callback(None, message)
        return len(reports)

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any,
                                    timeout: float = -1) -> None:
        """The group's offsets, committed with the transaction (after blocking, if a test asked for it)."""
        self._stick("send_offsets_to_transaction")
        transaction = self._current()
        transaction.offsets.update({(group_metadata, tp.topic, tp.partition): tp.offset for tp in positions})

    def commit_transaction(self, timeout: float = -1) -> None:
        """Serve the delivery reports, then commit (or raise the failure a test asked for, or block after the
        commit as a call whose answer is lost)."""
        transaction = self._current()
        self.poll()
        if self._broker.commit_failures:
            raise KafkaException(self._broker.commit_failures.pop(0))
        self._broker.end(self._id, transaction, State.COMMITTED)
        self._transaction = None
        self._stick("commit_transaction")

    def abort_transaction(self, timeout: float = -1) -> None:
        """Drop the transaction's records (they stay in the log, invisible) and offsets."""
        transaction = self._current()
        self._reports, self._queued = [], 0
        self._broker.end(self._id, transaction, State.ABORTED)
        self._transaction = None

    def _stick(self, call: str) -> None:
        if self._broker.stuck.get(call):
            self._broker.stuck[call] -= 1
            self._broker.unstuck.wait()

    def _live(self) -> None:
        if self._broker.epochs.get(self._id) != self._epoch:
            raise KafkaException(KafkaError(KafkaError._FENCED, f"producer {self._id} was fenced", fatal=True))

    def _current(self) -> Transaction:
        self._live()
        if self._transaction is None:
            raise KafkaException(KafkaError(KafkaError._STATE, "no transaction is open"))
        return self._transaction


class Clusters:
    """The engine's `Clients` over several brokers: each client on the one its bootstrap servers name, the
    default broker for any other."""

    def __init__(self, default: Broker, others: dict[str, Broker]) -> None:
        self.default, self.others = default, others

    def of(self, bootstrap: object) -> Broker:
        """The broker of these bootstrap servers."""
        return self.others.get(str(bootstrap), self.default)

    def consumer(self, config: dict[str, Any]) -> FakeConsumer:
        """A consumer of the broker its configuration names."""
        return self.of(config.get("bootstrap.servers")).consumer(config)

    def producer(self, config: dict[str, Any]) -> FakeProducer:
        """A transactional producer to the broker its configuration names."""
        return self.of(config.get("bootstrap.servers")).producer(config)

    def watermarks(self, settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) of each partition of the settings' broker."""
        return self.of(settings.cluster.bootstrap).watermarks(settings, tps)


class TopologyTestDriver:
    """Runs processors on an in-memory broker: put records in, run engine cycles, read what was committed."""

    def __init__(self, *processors: TransactionalProcessor[Any], now: float,
                 clusters: dict[str, Broker] | None = None) -> None:
        self.broker = Broker()
        self.clusters = Clusters(self.broker, clusters or {})
        """The broker, and the other clusters' brokers by bootstrap servers (the SAL bridge's Chile)."""
        self.registry = MemoryRegistry()
        self.codec = Codec(self.registry)
        """Encodes what `pipe` sends and decodes what `read` returns."""
        self.now = now
        """The time every processor sees (its `clock`): set it, or `advance` it."""
        self.processors: dict[str, TransactionalProcessor[Any]] = {}
        self._consumers: dict[str, FakeConsumer] = {}
        for processor in processors:
            self._attach(processor)

    def __enter__(self) -> TopologyTestDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _attach(self, processor: TransactionalProcessor[Any]) -> None:
        """Point the processor at the fake broker, registry and clock, and let it join its group."""
        for spec in processor.topics.all() + ([processor.changelog] if processor.changelog else []):
            self.broker.create(spec.name, spec.partitions)
        processor.clients, processor.codec, processor.clock = self.clusters, Codec(self.registry), lambda: self.now
        consumer = processor._start_clients()
        assert isinstance(consumer, FakeConsumer)
        self.processors[processor.name], self._consumers[processor.name] = processor, consumer

    # -- input, time, cycles ---------------------------------------------------------------------
    def pipe(self, spec: TopicSpec, key: str | bytes | None, value: Record | bytes | None,
             partition: int | None = None) -> TopicPartition:
        """Send a record (encoded by the codec, to its partition) or raw bytes (to `partition`, or by key),
        outside any transaction, as the observatory or a user would; where it landed."""
        raw_key = key.encode() if isinstance(key, str) else key
        if isinstance(value, Record):
            partition = spec.partition_of(value) if partition is None else partition
            value = self.codec.encode(spec.name, value)
        elif partition is None:
            partition = self.broker.partition_for(spec.name, raw_key)
        return TopicPartition(spec.name, partition, self.broker.append(spec.name, partition, raw_key, value))

    def advance(self, seconds: float) -> float:
        """Let time pass (the next cycle ticks if it passed `TICK_SECONDS`); the new time."""
        self.now += seconds
        return self.now

    def run_once(self, *names: str) -> None:
        """One engine cycle of each named processor (default: every one, in the order given)."""
        for name in names or list(self.processors):
            self.processors[name]._cycle(self._consumers[name])

    def run(self, max_cycles: int = 20) -> None:
        """Cycle every processor until a round consumes nothing (outputs of one may be another's inputs)."""
        for _ in range(max_cycles):
            before = sum(consumer.consumed for consumer in self._consumers.values())
            self.run_once()
            if sum(consumer.consumed for consumer in self._consumers.values()) == before:
                return
        raise RuntimeError(f"still consuming after {max_cycles} rounds (a batch retried forever?)")

    def restart(self, processor: TransactionalProcessor[Any]) -> None:
        """Replace the processor of the same name, as after a crash: the old one stops without leaving its group
        or finishing anything (only its databases are closed, as its process's exit would), and the new one
        joins, fences the old producer if it has the same transactional id, and restores its table."""
        old = self.processors.pop(processor.name)
        del self._consumers[processor.name]
        for store in old.stores.values():
            store.close()
        self._attach(processor)

    def close(self) -> None:
        """Stop every processor as the engine does (leave the group, close the tables' databases), and let the
        calls left stuck return."""
        self.broker.unstuck.set()
        for name, processor in self.processors.items():
            processor._stop_clients(self._consumers[name])
        self.processors.clear()
        self._consumers.clear()

    # -- failures --------------------------------------------------------------------------------
    def fail_next_commit(self, *, retriable: bool = False) -> None:
        """The next `commit_transaction` fails: abortably (the engine aborts and consumes the batch again), or
        retriably (the engine calls it again)."""
        self.broker.commit_failures.append(KafkaError(KafkaError._TIMED_OUT, "commit failed (test driver)",
                                                      retriable=retriable, txn_requires_abort=not retriable))

    def stick_next(self, call: str) -> None:
        """The next `call` of a producer blocks until the driver closes, past its timeout, as librdkafka's
        send_offsets_to_transaction does once the coordinator it cached is gone (confluentinc/librdkafka#5456,
        #5511); a stuck `commit_transaction` blocks once its transaction has committed (its answer lost)."""
        self.broker.stuck[call] = self.broker.stuck.get(call, 0) + 1

    def fail_apply(self, name: str, error: Exception, times: int = 1) -> None:
        """The processor's next `times` messages raise `error` instead of being applied (a RetriableError: an
        outage of storage; anything else: a bug)."""
        processor = self.processors[name]
        left = times

        def failing(batch: Batch[Any], message: Message, now: float) -> None:
            nonlocal left
            left -= 1
            if left == 0:
                del processor.apply  # the class's own again
            raise error

        processor.apply = failing  # type: ignore[method-assign]

    # -- output ----------------------------------------------------------------------------------
    def messages(self, spec: TopicSpec) -> list[Message]:
        """The committed messages of a topic, partition after partition, as a `read_committed` reader sees them."""
        return [message for partition in range(self.broker.partitions(spec.name))
                for message in self.broker.fetch(spec.name, partition, 0, sys.maxsize)[0]]

    def read(self, spec: TopicSpec) -> list[Any]:
        """The committed records of a topic, decoded (raw values for a topic of no record of ours)."""
        record = record_of(spec)
        if record is None:
            return [message.value() for message in self.messages(spec)]
        return [self.codec.decode(message.value(), record) for message in self.messages(spec)]

    def rows(self, name: str) -> dict[str, Any]:
        """A processor's table as committed (in memory or not), every partition's rows together."""
        processor = self.processors[name]
        return {key.decode(): processor.codec.decode(value, processor.row_type)
                for store in processor.stores.values() for key, value in store.items()}

