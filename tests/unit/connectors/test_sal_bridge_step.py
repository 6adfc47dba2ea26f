"""The bridge's step, core and batch, without Kafka: what cannot be mapped is dead-lettered and passed, and
the clock is read only once the batch's topics and schemas exist.

The batch tests run the real `SalBridge._transform` with fakes for the registry, topic creation and the clock:
the fake topic creation takes 33.2 s of fake time, as it did on a real first batch full of new metrics.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connectors import sal_bridge
from connectors.sal_bridge import MESSAGE_LIMIT, Batch, SalBridge
from connectors.sal_bridge_step import BridgeConfig, step
from connectors.sal_events import SalMessage, Writer, stable_origin
from connectors.sasquatch import TOPIC_LIMIT, Unmapped
from streams.codec import Codec, parse, read_datum, unframe
from streams.config import Settings, SettingsError
from streams.errors import RegistryError
from streams.record import Record
from streams.records import DeadLetter, LogMessage, Metric, SalBridgeCheckpoint, VisitSummary
from streams.schemas import Schema
from topology.topics import TopicSpec

NOW = 1_800_000_000.0
SETUP_S = 33.2
"""What creating a first batch's topics took on a real cluster."""
WRITER = Writer(sal_index=1, subname="sal", origin=stable_origin("bridge"), tai_minus_utc=37.0)
CONFIG = BridgeConfig(WRITER, log_rate=1.0, log_burst=3, sasquatch_environment="dev")
METRIC = Metric(name="prep_butlerTotalTime", value=0.25, unit="s", instrument="LSSTCam", group_id="g", detector=94,
                survey="BLOCK-365", timestamp=NOW - 30, tags={"band": "r"})
LONG_NAME = "m" * (TOPIC_LIMIT - len("lsst.prompt.dev.") + 1)


# -- the core ------------------------------------------------------------------------------------
def test_a_metric_without_a_valid_topic_name_keeps_its_sal_event_and_says_why_it_has_no_sasquatch_record() -> None:
    """SAL has one topic for every metric: the event goes; the Sasquatch part is `Unmapped`, with the reason."""
    checkpoint, (sal, unmapped) = step(SalBridgeCheckpoint(), replace(METRIC, name=LONG_NAME), NOW, CONFIG)
    assert isinstance(sal, SalMessage) and sal.datum["name"] == LONG_NAME and sal.datum["private_seqNum"] == 1
    assert isinstance(unmapped, Unmapped) and "Kafka allows at most 249" in unmapped.reason
    assert checkpoint.seq_nums == {WRITER.topic(sal.event): 1}


# -- the batch, with fakes -------------------------------------------------------------------------
class FakeRegistry:
    """A registry in memory that refuses the subjects it is told to (HTTP 409) or is down for them."""

    def __init__(self) -> None:
        self.schemas: dict[int, Schema] = {}
        self.subjects: dict[tuple[str, str], int] = {}
        self.refuse: set[str] = set()
        self.down: set[str] = set()

    def register(self, subject: str, schema: Schema) -> int:
        """The schema's id under the subject, new on first use."""
        if subject in self.refuse:
            raise RegistryError(f"cannot register {subject}") from SchemaRegistryError(409, 409, "incompatible")
        if subject in self.down:
            raise RegistryError(f"cannot register {subject}") from OSError("connection refused")
        key = (subject, repr(schema))
        if key not in self.subjects:
            self.subjects[key] = len(self.subjects) + 1
            self.schemas[self.subjects[key]] = schema
        return self.subjects[key]

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The schema with this id."""
        return self.schemas.get(schema_id)


@dataclass
class FakeMessage:
    """What the bridge reads of a consumed message."""

    _topic: str
    _offset: int
    _value: bytes

    def topic(self) -> str:
        """Its topic."""
        return self._topic

    def partition(self) -> int:
        """Its partition."""
        return 0

    def offset(self) -> int:
        """Its offset."""
        return self._offset

    def key(self) -> bytes | None:
        """No key."""
        return None

    def value(self) -> bytes:
        """Its bytes."""
        return self._value


class Harness:
    """A bridge whose registry, topic creation and clock are fakes; feeds it source records."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bridge = SalBridge(Settings(chile_bootstrap="chile:9092", chile_registry_url="http://chile",
                                         sasquatch_environment="dev"))
        self.registry = FakeRegistry()
        self.bridge.registry, self.bridge.chile_codec = self.registry, Codec(self.registry)
        self.bridge.source_codec = Codec(FakeRegistry())
        self.clock = NOW
        self.created: list[list[str]] = []
        self.refused_topics: set[str] = set()
        monkeypatch.setattr(sal_bridge, "ensure_topics", self.ensure_topics)
        self.bridge.prepare()
        self.created.clear()
        self.clock = NOW
        self.offsets = itertools.count()

    def ensure_topics(self, _settings: Settings, specs: list[TopicSpec]) -> list[str]:
        """Takes SETUP_S of fake time; refuses, like Kafka, a name it was told collides with another."""
        self.clock += SETUP_S
        names = [spec.name for spec in specs]
        self.created.append(names)
        if refused := self.refused_topics.intersection(names):
            raise KafkaException(KafkaError(KafkaError.TOPIC_EXCEPTION, f"{min(refused)} collides"))
        return names

    def message(self, record: Record | bytes) -> FakeMessage:
        """A consumed message of the record's source topic (raw bytes: a metric's topic)."""
        kind = Metric if isinstance(record, bytes) else type(record)
        topic = next(name for name, spec in self.bridge.sources.items() if spec.record is kind)
        value = record if isinstance(record, bytes) else self.bridge.source_codec.encode(topic, record)
        return FakeMessage(topic, next(self.offsets), value)

    def batch(self, checkpoint: SalBridgeCheckpoint, *records: Record | bytes) -> Batch:
        """One batch of these records, through the bridge's real transform."""
        messages: list[Any] = [self.message(r) for r in records]
        return self.bridge._transform(checkpoint, messages, clock=lambda: self.clock)

    def decoded(self, batch: Batch, topic_part: str) -> list[dict[str, Any]]:
        """The batch's messages on topics containing `topic_part`, decoded with their writer schemas."""
        found = []
        for message in batch.messages:
            if topic_part in message.topic:
                schema_id, payload = unframe(message.value)
                parsed = parse(self.registry.schemas[schema_id])
                found.append(read_datum(payload, parsed, parsed))
        return found


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    """A fresh bridge with fakes."""
    return Harness(monkeypatch)


def test_the_first_batch_is_stamped_after_its_topics_are_created(harness: Harness) -> None:
    """Creating the new metrics' topics takes 33.2 s: sndStamp is read after, so it is the produce time (the SAL
    rule: sndStamp - Kafka timestamp = TAI - UTC), and all new topics are created in one request."""
    metrics = [replace(METRIC, name=name) for name in ("a", "b", "c")]
    summary = VisitSummary(instrument="LSSTCam", group_id="g", summary_time=NOW)
    batch = harness.batch(SalBridgeCheckpoint(), *metrics, summary)
    assert harness.created == [["lsst.prompt.dev.a", "lsst.prompt.dev.b", "lsst.prompt.dev.c"]]
    sal = harness.decoded(batch, "PromptProcessing")
    assert len(sal) == 4 and {d["private_sndStamp"] for d in sal} == {NOW + SETUP_S} == {harness.clock}
    assert len(harness.decoded(batch, "lsst.prompt.dev.")) == 3 and not batch.dead_letters
    again = harness.batch(batch.checkpoint, *metrics)
    assert len(harness.created) == 1, "known topics are not created again"
    assert {d["private_sndStamp"] for d in harness.decoded(again, "PromptProcessing")} == {NOW + SETUP_S}


def test_what_cannot_be_mapped_is_dead_lettered_and_the_checkpoint_moves_past_it(harness: Harness) -> None:
    """A name too long for a topic, a topic Kafka refuses, a schema the registry refuses and undecodable bytes:
    each is dead-lettered with its reason; every SAL event is still sent, seqNum without a gap."""
    harness.refused_topics.add("lsst.prompt.dev.collides")
    harness.registry.refuse.add("lsst.prompt.dev.refused-value")
    records: list[Record | bytes] = [replace(METRIC, name=LONG_NAME), METRIC, replace(METRIC, name="collides"),
                                     b"not avro", replace(METRIC, name="refused")]
    batch = harness.batch(SalBridgeCheckpoint(), *records)
    assert batch.records == 5 and batch.checkpoint.positions == {"prompt.metrics:0": 5}
    assert [d["private_seqNum"] for d in harness.decoded(batch, "logevent_metric")] == [1, 2, 3, 4]
    assert [d["prep_butlerTotalTime"] for d in harness.decoded(batch, "lsst.prompt.dev.")] == [0.25]
    letters: dict[int, DeadLetter] = {letter.offset: letter for letter in batch.dead_letters}
    assert sorted(letters) == [0, 2, 3, 4]
    assert letters[3].error_class == "WireFormatError" and letters[3].value == b"not avro"
    assert {letters[i].error_class for i in (0, 2, 4)} == {"UnmappableError"}
    assert "Kafka allows at most 249" in letters[0].reason and "its SAL event was written" in letters[0].reason
    assert "collides" in letters[2].reason and "the registry refused its schema" in letters[4].reason
    topics = ["lsst.prompt.dev.collides", "lsst.prompt.dev.prep_butlerTotalTime", "lsst.prompt.dev.refused"]
    assert harness.created == [topics, *([topic] for topic in topics)], "one request, then one a topic to find it"
    again = harness.batch(batch.checkpoint, replace(METRIC, name="collides"), replace(METRIC, name=LONG_NAME))
    assert len(again.dead_letters) == 2 and len(harness.created) == 4, "refusals are kept, not tried again"
    assert [d["private_seqNum"] for d in harness.decoded(again, "logevent_metric")] == [5, 6]


def test_a_registry_outage_is_not_a_dead_letter(harness: Harness) -> None:
    """An unreachable registry may come back: the batch fails (the process restarts) instead of losing metrics."""
    harness.registry.down.add("lsst.prompt.dev.prep_butlerTotalTime-value")
    with pytest.raises(RegistryError):
        harness.batch(SalBridgeCheckpoint(), METRIC)


def test_a_sal_event_too_large_for_chile_is_dead_lettered_without_using_a_seq_num(harness: Harness) -> None:
    """The producer would refuse it inside the transaction, on every retry: it is dead-lettered whole instead,
    and the next event on the topic takes the seqNum it would have had."""
    huge = LogMessage(name="streams.x", level=40, message="x" * MESSAGE_LIMIT, timestamp=NOW)
    batch = harness.batch(SalBridgeCheckpoint(), huge, replace(huge, message="calm"))
    [letter] = batch.dead_letters
    assert letter.error_class == "UnmappableError" and "logevent_logMessage event cannot be written" in letter.reason
    assert [d["private_seqNum"] for d in harness.decoded(batch, "logevent_logMessage")] == [1]


def test_an_environment_no_topic_can_be_named_in_stops_the_bridge_at_start() -> None:
    """Better a settings error than every metric dead-lettered."""
    with pytest.raises(SettingsError, match="Sasquatch environment"):
        SalBridge(Settings(chile_bootstrap="chile:9092", chile_registry_url="http://chile",
                           sasquatch_environment="dev/1"))
