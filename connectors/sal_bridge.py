"""The SAL bridge: Prompt Streams' outputs -> `PromptProcessing` SAL events on the Chile cluster.

`python -m connectors.sal_bridge` runs it as a process of its own, on the engine every processor
runs on (`streams.runtime.engine`). It reads the processing cluster's visit summaries, per-CCD
results, metrics and worker log messages (`read_committed`, every partition, without a consumer
group) and writes, to a different cluster with its own registry and credentials
(`PROMPT_STREAMS_CHILE_*`):

- `lsst.sal.PromptProcessing.logevent_{visitSummary,ccdResult,metric,logMessage}`: one partition,
  `cleanup.policy=compact`, the salobj key string, Confluent-framed Avro registered under
  `<topic>-value` exactly as ts_xml generates it (`connectors/sal_interface.py`);
- `lsst.prompt.<environment>.<metric>`: the metrics again, in Sasquatch's layout;
- its checkpoint, on a compacted topic of its own, and its dead letters.

`topology/graph.py` declares these (the SAL and Sasquatch topics by the beginning of their names,
known at run time only); the engine refuses to write anything else.

**Exactly once from source to Chile.** Each batch is one Chile transaction holding the SAL
messages, the Sasquatch records, any dead letters and the checkpoint (source positions, seqNum
and sndStamp per topic, the log rate limit): the source cluster's offsets cannot commit in a
Chile transaction, so the engine commits this checkpoint instead (`CheckpointOffsets`). On start
the bridge fences any previous instance (same `transactional.id`, which also aborts what it left
open), reads its last committed checkpoint and resumes the source exactly there: a SIGKILL, a
restart or a second instance can neither lose nor repeat a SAL message, and seqNum runs on
without a gap. While idle it still commits its checkpoint every few seconds, so that an instance
another one has fenced finds out and stops.

**No record stops it.** A record the bridge cannot write (undecodable, a metric whose Sasquatch
topic Kafka would refuse, a message too large for Chile) is dead-lettered with the reason in the
same transaction, and the checkpoint moves past it; a refusal raised on every retry would make
the bridge exit, restart and meet the same record forever. An outage (of Chile or its registry)
is no record's fault: the engine consumes the batch again after a pause.

**sndStamp is the send time.** Before the engine reads the clock for a batch (`prepare`), the
bridge creates the topics and registers the schemas its metrics need (slow on a first batch full
of new metrics); then it stamps and produces: sndStamp (TAI) - Kafka timestamp (UTC) stays
TAI - UTC, as SAL's readers expect.
"""

from __future__ import annotations

import json
import logging
import signal
import struct
import sys
import threading
from types import FrameType
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connectors.sal_bridge_step import BridgeConfig, UnmappableError, sasquatch_of, step
from connectors.sal_events import SalMessage, Writer, stable_origin
from connectors.sal_interface import ALL_EVENTS, avro_schema
from connectors.sasquatch import SasquatchRecord, Unmapped, environment_problem, quoted
from streams.clock import tai_minus_utc
from streams.config import Settings, SettingsError
from streams.errors import DecodeError, RegistryError, RetriableError
from streams.observability import logs
from streams.runtime.admin import ensure_topics
from streams.runtime.engine import Batch, CheckpointOffsets, TransactionalProcessor, message_offset, message_partition
from streams.serde.base import Record
from streams.serde.codec import frame, parse, write_datum
from streams.serde.declared import record_of
from streams.serde.records import DeadLetter, Metric, SalBridgeCheckpoint
from streams.serde.registry import ConfluentRegistry
from topology.graph import COMPACT, declare_graph, sal_bridge_topics
from topology.topics import KEEP, Partitioning, Role, TopicSpec

log = logs.events("connectors.sal_bridge")
MESSAGE_LIMIT = 990_000
"""Bytes of key and value a Chile message may have: the producer refuses a record over 1,000,000 bytes with its
overhead, and that refusal, raised inside the transaction, would stop every retry of the batch."""
REFUSED_TOPIC = {KafkaError.TOPIC_EXCEPTION, KafkaError.POLICY_VIOLATION}
"""Kafka's answers to creating a topic that retrying cannot change (an invalid or colliding name, a policy)."""
REFUSED_SCHEMA = {409, 422}
"""The registry's answers to a schema that retrying cannot change (incompatible, invalid)."""


def chile_topic(name: str, doc: str, config: dict[str, str]) -> TopicSpec:
    """A single-partition topic on the Chile cluster."""
    return TopicSpec(name, name, None, 1, Partitioning.SINGLE, "", Role.OUTPUT, doc, config)


def sasquatch_topic(name: str) -> TopicSpec:
    """A metric's Sasquatch topic."""
    return chile_topic(name, "Sasquatch metric", KEEP)


WriterKey = tuple[str, str]
"""(Chile topic, schema): a SAL topic has one schema (""), a Sasquatch topic may have two (per CCD, per visit)."""
ChileMessage = tuple[TopicSpec, bytes | None, bytes]
"""A message for Chile, encoded: (topic, key, value)."""


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


class SalBridge(TransactionalProcessor[Record]):
    """Converts the processing cluster's outputs into SAL events and Sasquatch records on the Chile cluster."""

    row_type = Record

    def __init__(self, settings: Settings) -> None:
        checkpoints, dead_letters = sal_bridge_topics(settings)
        super().__init__(settings, declare_graph(settings).sal_bridge, output=settings.on_chile(),
                         offsets=CheckpointOffsets(checkpoints), dead_letters=dead_letters)
        if settings.sasquatch_environment and (problem := environment_problem(settings.sasquatch_environment)):
            raise SettingsError(problem)
        self.sources = {spec.name: spec for spec in self.inputs}
        self.registry = ConfluentRegistry(self.output.registry_config())
        """Chile's registry, for the SAL and Sasquatch schemas (the engine's `output_codec` registers the rest)."""
        self.config = BridgeConfig(
            writer=Writer(settings.chile_sal_index, settings.chile_sal_subname, stable_origin(self.group),
                          tai_minus_utc()),
            log_rate=settings.chile_log_rate, log_burst=settings.chile_log_burst,
            sasquatch_environment=settings.sasquatch_environment)
        self._topics: dict[str, TopicSpec] = {}
        """The SAL topics and the Sasquatch topics known to exist, by name."""
        self._writers: dict[WriterKey, tuple[int, Any]] = {}
        """(Chile topic, schema) -> (registered schema id, parsed schema)."""
        self._refused: dict[WriterKey, str] = {}
        """Sasquatch topics and schemas Kafka or the registry refused for good, and why: their records are
        dead-lettered (until a restart tries again)."""
        self.records = self.messages = self.dead_lettered = 0
        """Committed since start: source records accounted for, Chile messages, dead letters."""

    # -- the engine's hooks ----------------------------------------------------------------------
    def setup(self) -> None:
        """Create the SAL topics (1 partition, compacted) and the bridge's own on Chile; register the SAL schemas."""
        sal = [chile_topic(self.config.writer.topic(event), event.description, COMPACT) for event in ALL_EVENTS]
        ensure_topics(self.output, [*sal, *self.spec.outputs])
        for spec, event in zip(sal, ALL_EVENTS, strict=True):
            schema = avro_schema(event)
            self._writers[spec.name, ""] = (self.registry.register(f"{spec.name}-value", schema), parse(schema))
            self._topics[spec.name] = spec

    def restored(self, partitions: list[int]) -> None:
        """Started: any previous instance is fenced, the last checkpoint read."""
        checkpoint: SalBridgeCheckpoint = self.offsets.checkpoint
        log.info("SAL bridge running", group=self.group, written_before=sum(checkpoint.seq_nums.values()),
                 resuming_at=dict(sorted(checkpoint.positions.items())))

    def prepare(self, messages: list[Message]) -> None:
        """Create the Sasquatch topics and register the schemas the batch's metrics need, before the engine reads
        the clock for the batch: sndStamp is then the time of sending."""
        if not self.config.sasquatch_environment:
            return
        records = []
        for message in messages:
            if message.error() is None and message.topic() == self.topics.metrics.name:
                try:
                    found = sasquatch_of(self.codec.decode(message.value(), Metric), self.config)
                except DecodeError:
                    continue  # `apply` dead-letters it
                if isinstance(found, SasquatchRecord):
                    records.append(found)
        self._prepare_sasquatch(records)

    def apply(self, batch: Batch[Record], message: Message, now: float) -> None:
        """Stage a source record's Chile messages and move the checkpoint on; dead-letter what cannot be written
        (the engine dead-letters what cannot be decoded)."""
        spec = self.sources[message.topic() or ""]
        record_type = record_of(spec)
        assert record_type is not None, "every source topic is Avro"
        record = self.decode(spec, message, record_type)
        logs.bind(record)
        batch.checkpoint, messages, reason = self._convert(batch.checkpoint, record, now)
        batch.records += messages
        if reason is not None:
            log.warning("SAL bridge: dead letter", topic=spec.name, partition=message_partition(message),
                        offset=message_offset(message), reason=reason)
            self.reject(batch, message, UnmappableError(reason), now)

    def committed(self, batch: Batch[Record], now: float) -> None:
        """Count what the transaction wrote."""
        self.records += batch.consumed
        for _spec, _key, record in batch.records:
            if isinstance(record, DeadLetter):
                self.dead_lettered += 1
            elif isinstance(record, bytes):
                self.messages += 1

    # -- Sasquatch topics and schemas ------------------------------------------------------------
    def _prepare_sasquatch(self, records: list[SasquatchRecord]) -> None:
        """Create the new Sasquatch topics of a batch (one request) and register their schemas, noting what Kafka
        or the registry refuses for good. An outage raises (`RetriableError`, `RegistryError`): the batch waits."""
        new: dict[WriterKey, SasquatchRecord] = {}
        for record in records:
            if (key := writer_key(record)) not in self._writers and key not in self._refused:
                new.setdefault(key, record)
        refusals = self._create(sorted({record.topic for record in new.values()} - set(self._topics)))
        for key, record in new.items():
            if record.topic in refusals:
                self._refused[key] = refusals[record.topic]
                continue
            self._topics.setdefault(record.topic, sasquatch_topic(record.topic))
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
            ensure_topics(self.output, [sasquatch_topic(topic) for topic in topics])
        except KafkaException as error:
            if not refused_topic(error):
                raise RetriableError(f"cannot create Sasquatch topics on Chile: {error.args[0]}") from error
            if len(topics) == 1:
                return {topics[0]: f"Kafka refused topic {quoted(topics[0])}: {error.args[0].str()}"}
            return {topic: reason for one in topics for topic, reason in self._create([one]).items()}
        return {}

    # -- conversion ------------------------------------------------------------------------------
    def _convert(self, checkpoint: SalBridgeCheckpoint, record: Record,
                 now: float) -> tuple[SalBridgeCheckpoint, list[ChileMessage], str | None]:
        """One record's Chile messages, encoded, and why a part of it cannot be written (None: all can). If its
        SAL event cannot be, nothing of it is written and the checkpoint's counters stay: seqNum has no gap."""
        after, outputs = step(checkpoint, record, now, self.config)
        messages: list[ChileMessage] = []
        reasons: list[str] = []
        for output in outputs:
            if isinstance(output, Unmapped):
                reasons.append(output.reason)
            elif isinstance(encoded := self._chile_message(output), tuple):
                messages.append(encoded)
            elif isinstance(output, SalMessage):
                return checkpoint, [], f"its {output.event.sal_name} event cannot be written: {encoded}"
            else:
                reasons.append(f"its Sasquatch record cannot be written to {quoted(output.topic)}: {encoded}")
        return after, messages, f"{'; '.join(reasons)} (its SAL event was written)" if reasons else None

    def _chile_message(self, output: SalMessage | SasquatchRecord) -> ChileMessage | str:
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
        return self._topics[output.topic], message_key, value


def main() -> int:
    """Run the bridge until SIGTERM or SIGINT."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.logger.setLevel(logging.INFO)  # the libraries' INFO (one line per registry request) stays quiet
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
        log.info("SAL bridge stopping", group=bridge.group, on=received[0] if received else "request",
                 records=bridge.records, messages=bridge.messages, dead_letters=bridge.dead_lettered)
    except KafkaException as exception:
        problem = exception.args[0]
        if problem.fatal() or problem.code() == KafkaError._FATAL:
            log.critical("SAL bridge stops on a fatal Kafka error (fenced by a newer instance with the same "
                         "transactional.id?)", reason=problem)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
