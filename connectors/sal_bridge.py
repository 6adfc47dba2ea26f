"""The SAL bridge: Prompt Streams' outputs -> `PromptProcessing` SAL events on the Chile cluster.

`python -m connectors.sal_bridge` runs it as a process of its own. It reads the processing
cluster's visit summaries, per-CCD results, metrics and worker log messages (`read_committed`,
partitions assigned by hand: there is no consumer group to rebalance) and writes, to a different
cluster with its own registry and credentials (`PROMPT_STREAMS_CHILE_*`):

- `lsst.sal.PromptProcessing.logevent_{visitSummary,ccdResult,metric,logMessage}`: one partition,
  `cleanup.policy=compact`, the salobj key string, Confluent-framed Avro registered under
  `<topic>-value` exactly as ts_xml generates it (`connectors/sal_interface.py`);
- `lsst.prompt.<environment>.<metric>`: the metrics again, in Sasquatch's layout;
- its checkpoint, on a compacted topic of its own.

**Exactly once from source to Chile.** Each batch is one Chile transaction holding the SAL
messages, the Sasquatch records, any dead letters and the checkpoint (source positions, seqNum
and sndStamp per topic, the log rate limit). On start the bridge fences any previous instance
(same `transactional.id`, which also aborts what it left open), reads its last committed
checkpoint and resumes the source exactly there: a SIGKILL, a restart or a second instance can
neither lose nor repeat a SAL message, and seqNum runs on without a gap.

**No record stops it.** A record the bridge cannot write (undecodable, a metric whose Sasquatch
topic Kafka would refuse, a message too large for Chile) is dead-lettered with the reason in the
same transaction, and the checkpoint moves past it; a refusal raised on every retry would make
the bridge exit, restart and meet the same record forever.

**sndStamp is the send time.** Each batch first creates the topics and registers the schemas its
messages need (slow on a first batch full of new metrics), then reads the clock, stamps and
produces: sndStamp (TAI) - Kafka timestamp (UTC) stays TAI - UTC, as SAL's readers expect.
"""

from __future__ import annotations

import json
import logging
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connectors.sal_bridge_step import BridgeConfig, UnmappableError, consumed, position_key, sasquatch_of, step
from connectors.sal_events import SalMessage, Writer, stable_origin
from connectors.sal_interface import ALL_EVENTS, avro_schema
from connectors.sasquatch import SasquatchRecord, Unmapped, environment_problem, quoted
from streams.admin import ensure_topics
from streams.clock import tai_minus_utc, tai_now
from streams.codec import Codec, frame, parse, write_datum
from streams.config import Settings, SettingsError
from streams.dead_letters import dead_letter
from streams.errors import DecodeError, RegistryError
from streams.record import Record
from streams.records import DeadLetter, SalBridgeCheckpoint
from streams.registry import ConfluentRegistry
from topology.topics import KEEP, KEEP_LONG, Partitioning, Role, TopicSpec, declare

log = logging.getLogger("connectors.sal_bridge")
BATCH = 500
POLL_SECONDS = 0.2
TIMEOUT_S = 60.0
TRANSACTION_TIMEOUT_MS = 60_000
COMMIT_ATTEMPTS = 5
IDLE_COMMIT_S = 5.0
COMPACT = {"cleanup.policy": "compact"}
MESSAGE_LIMIT = 990_000
"""Bytes of key and value a Chile message may have: the producer refuses a record over 1,000,000 bytes with its
overhead, and that refusal, raised inside the transaction, would stop every retry of the batch."""
REFUSED_TOPIC = {KafkaError.TOPIC_EXCEPTION, KafkaError.POLICY_VIOLATION}
"""Kafka's answers to creating a topic that retrying cannot change (an invalid or colliding name, a policy)."""
REFUSED_SCHEMA = {409, 422}
"""The registry's answers to a schema that retrying cannot change (incompatible, invalid)."""
AGENT = "sal_bridge"


def chile_topic(name: str, doc: str, config: dict[str, str]) -> TopicSpec:
    """A single-partition topic on the Chile cluster."""
    return TopicSpec(name, name, None, 1, Partitioning.SINGLE, "", Role.OUTPUT, doc, config)


def sasquatch_topic(name: str) -> TopicSpec:
    """A metric's Sasquatch topic."""
    return chile_topic(name, "Sasquatch metric", KEEP)


WriterKey = tuple[str, str]
"""(Chile topic, schema): a SAL topic has one schema (""), a Sasquatch topic may have two (per CCD, per visit)."""


def writer_key(output: SalMessage | SasquatchRecord) -> WriterKey:
    """The key of an output's registered writer schema."""
    if isinstance(output, SalMessage):
        return output.topic, ""
    return output.topic, json.dumps(output.schema, sort_keys=True)


def refused_topic(error: KafkaException) -> bool:
    """Whether Kafka refused a topic for good (retrying would meet the same answer)."""
    return isinstance(problem := error.args[0], KafkaError) and problem.code() in REFUSED_TOPIC


def refused_schema(error: RegistryError) -> bool:
    """Whether the registry refused a schema for good (not an outage)."""
    cause = error.__cause__
    return isinstance(cause, SchemaRegistryError) and cause.http_status_code in REFUSED_SCHEMA


@dataclass(frozen=True)
class Outgoing:
    """One encoded Chile message."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass
class Batch:
    """What one Chile transaction writes, and the checkpoint it commits."""

    checkpoint: SalBridgeCheckpoint
    messages: list[Outgoing]
    dead_letters: list[DeadLetter]
    records: int
    """Source records the batch accounts for (converted, dead-lettered or rate-limited away)."""


class SalBridge:
    """The consume-convert-produce loop between the two clusters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.chile = settings.chile()
        topics = declare(settings)
        self.sources = {spec.name: spec for spec in
                        (topics.visit_summary, topics.ccd_result, topics.metrics, topics.log_messages)}
        self.source_codec = Codec(ConfluentRegistry(settings.registry_config()))
        self.registry = ConfluentRegistry(self.chile.registry_config())
        self.chile_codec = Codec(self.registry)
        self.name = f"{settings.app_id}-sal-bridge"
        self.checkpoints = chile_topic(f"{settings.topic_prefix}.sal-bridge.checkpoints",
                                       "The SAL bridge's committed checkpoints.", COMPACT)
        self.dead_letters = chile_topic(f"{settings.topic_prefix}.sal-bridge.dead-letter",
                                        "Source records the SAL bridge could not convert.", KEEP_LONG)
        self.config = BridgeConfig(
            writer=Writer(settings.chile_sal_index, settings.chile_sal_subname, stable_origin(self.name),
                          tai_minus_utc()),
            log_rate=settings.chile_log_rate, log_burst=settings.chile_log_burst,
            sasquatch_environment=settings.sasquatch_environment)
        if settings.sasquatch_environment and (problem := environment_problem(settings.sasquatch_environment)):
            raise SettingsError(problem)
        self._writers: dict[WriterKey, tuple[int, Any]] = {}
        """(Chile topic, schema) -> (registered schema id, parsed schema)."""
        self._topics: set[str] = set()
        """Sasquatch topics known to exist."""
        self._refused: dict[WriterKey, str] = {}
        """Sasquatch topics and schemas Kafka or the registry refused for good, and why: their records are
        dead-lettered (until a restart tries again)."""
        self.records = self.messages = self.dead_lettered = 0
        """Committed since start: source records accounted for, Chile messages, dead letters."""

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the SAL topics (1 partition, compacted) and the bridge's own; register every schema."""
        sal = [chile_topic(self.config.writer.topic(event), event.description, COMPACT) for event in ALL_EVENTS]
        ensure_topics(self.chile, [*sal, self.checkpoints, self.dead_letters])
        for event in ALL_EVENTS:
            topic, schema = self.config.writer.topic(event), avro_schema(event)
            self._writers[topic, ""] = (self.registry.register(f"{topic}-value", schema), parse(schema))
        self.chile_codec.register(self.checkpoints.name, SalBridgeCheckpoint)
        self.chile_codec.register(self.dead_letters.name, DeadLetter)

    def _prepare_sasquatch(self, records: list[SasquatchRecord]) -> None:
        """Create the new Sasquatch topics of a batch (one request) and register their schemas, noting what
        Kafka or the registry refuses for good. An outage still raises: the process restarts and retries."""
        new: dict[WriterKey, SasquatchRecord] = {}
        for record in records:
            if (key := writer_key(record)) not in self._writers and key not in self._refused:
                new.setdefault(key, record)
        refusals = self._create(sorted({record.topic for record in new.values()} - self._topics))
        for key, record in new.items():
            if record.topic in refusals:
                self._refused[key] = refusals[record.topic]
                continue
            self._topics.add(record.topic)
            try:
                schema_id = self.registry.register(f"{record.topic}-value", record.schema)
            except RegistryError as error:
                if not refused_schema(error):
                    raise
                self._refused[key] = f"the registry refused its schema: {error}"
            else:
                self._writers[key] = (schema_id, parse(record.schema))

    def _create(self, topics: list[str]) -> dict[str, str]:
        """Create Sasquatch topics; return those Kafka refused for good, with its reason (one at a time to
        find them, if the request for all of them was refused)."""
        if not topics:
            return {}
        try:
            ensure_topics(self.chile, [sasquatch_topic(topic) for topic in topics])
        except KafkaException as error:
            if not refused_topic(error):
                raise
            if len(topics) == 1:
                return {topics[0]: f"Kafka refused topic {quoted(topics[0])}: {error.args[0].str()}"}
            return {topic: reason for one in topics for topic, reason in self._create([one]).items()}
        return {}

    def restore(self) -> SalBridgeCheckpoint:
        """The last committed checkpoint of this bridge (empty on its first start)."""
        reader = Consumer(self.chile.kafka_config() | {
            "group.id": f"{self.name}-restore", "isolation.level": "read_committed",
            "enable.auto.commit": False, "enable.partition.eof": True})
        latest: bytes | None = None
        try:
            reader.assign([TopicPartition(self.checkpoints.name, 0, OFFSET_BEGINNING)])
            deadline = time.monotonic() + TIMEOUT_S
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"checkpoint topic {self.checkpoints.name} not read in {TIMEOUT_S} s")
                message = reader.poll(0.2)
                if message is None:
                    continue
                if (problem := message.error()) is not None:
                    if problem.code() == KafkaError._PARTITION_EOF:
                        break
                    raise KafkaException(problem)
                if message.key() == self.name.encode():
                    latest = message.value()
        finally:
            reader.close()
        if latest is None:
            return SalBridgeCheckpoint()
        return self.chile_codec.decode(latest, SalBridgeCheckpoint)

    # -- the loop --------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Bridge until `stop` is set. A fatal Kafka error (such as being fenced by a newer
        instance) propagates: the process exits and nothing half-done is visible."""
        self.prepare()
        producer = Producer(self.chile.kafka_config() | {
            "transactional.id": self.name, "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS, "linger.ms": 5})
        producer.init_transactions(TIMEOUT_S)  # fences an older instance and aborts what it left open
        checkpoint = self.restore()
        consumer = Consumer(self.settings.kafka_config() | {
            "group.id": self.name, "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest"})
        try:
            self._seek(consumer, checkpoint, assign=True)
            log.info("SAL bridge %s running: %d messages written before, resuming at %s", self.name,
                     sum(checkpoint.seq_nums.values()), dict(sorted(checkpoint.positions.items())))
            last_commit = time.monotonic()
            while not stop.is_set():
                messages = [m for m in consumer.consume(BATCH, POLL_SECONDS) if self._usable(m)]
                if not messages and time.monotonic() - last_commit < IDLE_COMMIT_S:
                    continue
                # While idle, a checkpoint-only transaction now and then: a fenced instance finds out and stops.
                batch = self._transform(checkpoint, messages)
                if self._commit(producer, batch):
                    checkpoint = batch.checkpoint
                    self.records += batch.records
                    self.messages += len(batch.messages)
                    self.dead_lettered += len(batch.dead_letters)
                else:
                    self._seek(consumer, checkpoint)
                last_commit = time.monotonic()
        finally:
            consumer.close()

    def _seek(self, consumer: Consumer, checkpoint: SalBridgeCheckpoint, *, assign: bool = False) -> None:
        """Put every source partition at the checkpoint's position (the beginning if it has none)."""
        positions = []
        for topic in self.sources:
            metadata = consumer.list_topics(topic, timeout=TIMEOUT_S).topics[topic]
            if metadata.error is not None:
                raise KafkaException(metadata.error)
            positions += [TopicPartition(topic, p, checkpoint.positions.get(position_key(topic, p), OFFSET_BEGINNING))
                          for p in sorted(metadata.partitions)]
        if assign:
            consumer.assign(positions)
        else:
            for tp in positions:
                consumer.seek(tp)

    @staticmethod
    def _usable(message: Message) -> bool:
        if (problem := message.error()) is not None:
            log.warning("SAL bridge: consumer error %s", problem)
            return False
        return True

    def _transform(self, checkpoint: SalBridgeCheckpoint, messages: list[Message],
                   clock: Callable[[], float] = tai_now) -> Batch:
        """Decode; create the topics and register the schemas the batch needs; only then read the clock,
        so that sndStamp is the time of sending; convert, encode, and dead-letter what cannot be written."""
        decoded: list[tuple[Message, Record | DecodeError]] = []
        for message in messages:
            spec = self.sources[message.topic() or ""]
            assert spec.record is not None, "every source topic is Avro"
            try:
                decoded.append((message, self.source_codec.decode(message.value(), spec.record)))
            except DecodeError as error:
                decoded.append((message, error))
        self._prepare_sasquatch([found for _, record in decoded if isinstance(record, Record)
                                 and isinstance(found := sasquatch_of(record, self.config), SasquatchRecord)])
        now = clock()
        batch = Batch(checkpoint, [], [], len(messages))
        for message, record in decoded:
            topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
            problem: Exception | None = record if isinstance(record, DecodeError) else None
            if isinstance(record, Record):
                checkpoint, outgoing, reason = self._convert(checkpoint, record, now)
                batch.messages += outgoing
                problem = None if reason is None else UnmappableError(reason)
            if problem is not None:
                batch.dead_letters.append(dead_letter(topic, partition, offset, message.key(), message.value(),
                                                      problem, AGENT, now))
            checkpoint = consumed(checkpoint, topic, partition, offset)
        batch.checkpoint = checkpoint
        return batch

    def _convert(self, checkpoint: SalBridgeCheckpoint, record: Record,
                 now: float) -> tuple[SalBridgeCheckpoint, list[Outgoing], str | None]:
        """One record's Chile messages, encoded, and why a part of it cannot be written (None: all can). If its
        SAL event cannot be, nothing of it is written and the checkpoint's counters stay: seqNum has no gap."""
        after, outputs = step(checkpoint, record, now, self.config)
        outgoing: list[Outgoing] = []
        reasons: list[str] = []
        for output in outputs:
            if isinstance(output, Unmapped):
                reasons.append(output.reason)
            elif isinstance(encoded := self._encode(output), Outgoing):
                outgoing.append(encoded)
            elif isinstance(output, SalMessage):
                return checkpoint, [], f"its {output.event.sal_name} event cannot be written: {encoded}"
            else:
                reasons.append(f"its Sasquatch record cannot be written to {quoted(output.topic)}: {encoded}")
        return after, outgoing, f"{'; '.join(reasons)} (its SAL event was written)" if reasons else None

    def _encode(self, output: SalMessage | SasquatchRecord) -> Outgoing | str:
        """The output as a Chile message, or why it cannot be one."""
        key = writer_key(output)
        if (refusal := self._refused.get(key)) is not None:
            return refusal
        schema_id, parsed = self._writers[key]
        message_key = output.key if isinstance(output, SalMessage) else None
        try:
            value = frame(schema_id, write_datum(parsed, output.datum))
        except (ValueError, TypeError, OverflowError, struct.error) as error:
            return f"it does not fit its schema: {error}"
        if (size := len(value) + len(message_key or b"")) > MESSAGE_LIMIT:
            return f"it is {size} bytes, a Chile message may have {MESSAGE_LIMIT}"
        return Outgoing(output.topic, message_key, value)

    def _commit(self, producer: Producer, batch: Batch) -> bool:
        """One transaction: messages, dead letters and checkpoint. False if it had to be aborted."""
        try:
            producer.begin_transaction()
            for message in batch.messages:
                producer.produce(message.topic, key=message.key, value=message.value, partition=0)
            for letter in batch.dead_letters:
                producer.produce(self.dead_letters.name, key=letter.key, partition=0,
                                 value=self.chile_codec.encode(self.dead_letters.name, letter))
                log.warning("SAL bridge: dead letter from %s[%d]@%d: %s", letter.topic, letter.partition,
                            letter.offset, letter.reason)
            producer.produce(self.checkpoints.name, key=self.name.encode(), partition=0,
                             value=self.chile_codec.encode(self.checkpoints.name, batch.checkpoint))
            commit(producer)
        except KafkaException as exception:
            if not exception.args[0].txn_requires_abort():
                raise
            log.warning("SAL bridge: transaction aborted (%s); the batch will be sent again", exception)
            producer.abort_transaction(TIMEOUT_S)
            return False
        return True


def commit(producer: Producer) -> None:
    """Commit the open transaction, trying again while the error says that may work (a slow broker)."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            producer.commit_transaction(TIMEOUT_S)
            return
        except KafkaException as exception:
            if not exception.args[0].retriable() or attempt == COMMIT_ATTEMPTS:
                raise
            log.warning("SAL bridge: commit failed (%s), trying again (%d/%d)", exception, attempt, COMMIT_ATTEMPTS)


def main() -> int:
    """Run the bridge until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # the libraries' INFO (one line per registry request) stays quiet
    try:
        bridge = SalBridge(Settings.from_env())
    except SettingsError as error:
        print(f"sal_bridge: {error}", file=sys.stderr)
        return 2
    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signal.Signals(signum).name)  # logged once the loop is out: not from a signal handler
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        bridge.run(stop)
        log.info("SAL bridge %s stopping on %s after %d records (%d messages and %d dead letters written) since "
                 "start", bridge.name, received[0] if received else "request", bridge.records, bridge.messages,
                 bridge.dead_lettered)
    except KafkaException as exception:
        problem = exception.args[0]
        if problem.fatal() or problem.code() == KafkaError._FATAL:
            log.critical("SAL bridge stops on a fatal Kafka error (fenced by a newer instance with the same "
                         "transactional.id?): %s", problem)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
