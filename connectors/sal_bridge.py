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
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from connectors.sal_bridge_step import BridgeConfig, Output, consumed, position_key, step
from connectors.sal_events import Writer, stable_origin
from connectors.sal_interface import ALL_EVENTS, avro_schema
from connectors.sasquatch import SasquatchRecord
from streams.admin import ensure_topics
from streams.clock import tai_minus_utc, tai_now
from streams.codec import Codec, frame, parse, write_datum
from streams.config import Settings, SettingsError
from streams.dead_letters import dead_letter
from streams.errors import DecodeError
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


def chile_topic(name: str, doc: str, config: dict[str, str]) -> TopicSpec:
    """A single-partition topic on the Chile cluster."""
    return TopicSpec(name, name, None, 1, Partitioning.SINGLE, "", Role.OUTPUT, doc, config)


@dataclass
class Batch:
    """What one Chile transaction writes, and the checkpoint it commits."""

    checkpoint: SalBridgeCheckpoint
    outputs: list[Output]
    dead_letters: list[DeadLetter]


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
        self._writers: dict[str, tuple[int, Any]] = {}
        """Chile topic -> (registered schema id, parsed schema)."""

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Create the SAL topics (1 partition, compacted) and the bridge's own; register every schema."""
        sal = [chile_topic(self.config.writer.topic(event), event.description, COMPACT) for event in ALL_EVENTS]
        ensure_topics(self.chile, [*sal, self.checkpoints, self.dead_letters])
        for event in ALL_EVENTS:
            self._register(self.config.writer.topic(event), avro_schema(event))
        self.chile_codec.register(self.checkpoints.name, SalBridgeCheckpoint)
        self.chile_codec.register(self.dead_letters.name, DeadLetter)

    def _register(self, topic: str, schema: dict[str, Any]) -> None:
        if topic not in self._writers:
            self._writers[topic] = (self.registry.register(f"{topic}-value", schema), parse(schema))

    def _ensure_sasquatch(self, record: SasquatchRecord) -> None:
        """A metric's Sasquatch topic and subject, created the first time the metric is seen."""
        if record.topic not in self._writers:
            ensure_topics(self.chile, [chile_topic(record.topic, "Sasquatch metric", KEEP)])
            self._register(record.topic, record.schema)

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

    def _transform(self, checkpoint: SalBridgeCheckpoint, messages: list[Message]) -> Batch:
        now = tai_now()
        outputs: list[Output] = []
        dead: list[DeadLetter] = []
        for message in messages:
            topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
            spec = self.sources[topic]
            assert spec.record is not None, "every source topic is Avro"
            try:
                record = self.source_codec.decode(message.value(), spec.record)
            except DecodeError as error:
                dead.append(dead_letter(topic, partition, offset, message.key(), message.value(), error, "sal_bridge",
                                        now))
            else:
                checkpoint, converted = step(checkpoint, record, now, self.config)
                outputs += converted
            checkpoint = consumed(checkpoint, topic, partition, offset)
        return Batch(checkpoint, outputs, dead)

    def _encode(self, output: Output) -> bytes:
        schema_id, parsed = self._writers[output.topic]
        return frame(schema_id, write_datum(parsed, output.datum))

    def _commit(self, producer: Producer, batch: Batch) -> bool:
        """One transaction: messages, dead letters and checkpoint. False if it had to be aborted."""
        for output in batch.outputs:
            if isinstance(output, SasquatchRecord):
                self._ensure_sasquatch(output)
        try:
            producer.begin_transaction()
            for output in batch.outputs:
                key = None if isinstance(output, SasquatchRecord) else output.key
                producer.produce(output.topic, key=key, value=self._encode(output), partition=0)
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
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        bridge.run(stop)
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
