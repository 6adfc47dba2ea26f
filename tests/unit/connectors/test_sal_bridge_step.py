"""The bridge's step, core and batches, without a broker: what cannot be mapped is dead-lettered and passed, the
clock is read only once the batch's topics and schemas exist, and the checkpoint commits with the messages.

The batch tests run the real `SalBridge` on the engine's own cycle through the test driver, the processing
cluster and Chile each an in-memory broker, Chile's registry and topic creation fakes: the fake topic creation
takes 33.2 s of the bridge's clock, as it did on a real first batch full of new metrics.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, Message
from confluent_kafka.schema_registry.error import SchemaRegistryError

from connectors import sal_bridge
from connectors.sal_bridge import MESSAGE_LIMIT, SalBridge
from connectors.sal_bridge_step import BridgeConfig, step
from connectors.sal_events import SalMessage, Writer, stable_origin
from connectors.sasquatch import TOPIC_LIMIT, Unmapped
from streams.config import Connection, Settings, SettingsError
from streams.errors import RegistryError
from streams.runtime.driver import Broker, MemoryRegistry, TopologyTestDriver
from streams.runtime.engine import IDLE_COMMIT_S
from streams.serde.base import Record
from streams.serde.codec import Codec, parse, read_datum, unframe
from streams.serde.records import DeadLetter, LogMessage, Metric, SalBridgeCheckpoint, VisitSummary
from streams.serde.schemas import Schema
from tests.unit.runtime.visits import driver_settings
from topology.graph import declare_graph
from topology.topics import TopicSpec

NOW = 1_800_000_000.0
SETUP_S = 33.2
"""What creating a first batch's topics took on a real cluster."""
CHILE = "chile:9092"
WRITER = Writer(sal_index=1, subname="sal", origin=stable_origin("bridge"), tai_minus_utc=37.0)
CONFIG = BridgeConfig(WRITER, log_rate=1.0, log_burst=3, sasquatch_environment="dev")
METRIC = Metric(name="prep_butlerTotalTime", value=0.25, unit="s", instrument="LSSTCam", group_id="g", detector=94,
                survey="BLOCK-365", timestamp=NOW - 30, tags={"band": "r"})
SUMMARY = VisitSummary(instrument="LSSTCam", group_id="g", summary_time=NOW)
LONG_NAME = "m" * (TOPIC_LIMIT - len("lsst.prompt.dev.") + 1)


# -- the core ------------------------------------------------------------------------------------
def test_a_metric_without_a_valid_topic_name_keeps_its_sal_event_and_says_why_it_has_no_sasquatch_record() -> None:
    """SAL has one topic for every metric: the event goes; the Sasquatch part is `Unmapped`, with the reason."""
    checkpoint, (sal, unmapped) = step(SalBridgeCheckpoint(), replace(METRIC, name=LONG_NAME), NOW, CONFIG)
    assert isinstance(sal, SalMessage) and sal.datum["name"] == LONG_NAME and sal.datum["private_seqNum"] == 1
    assert isinstance(unmapped, Unmapped) and "Kafka allows at most 249" in unmapped.reason
    assert checkpoint.seq_nums == {WRITER.topic(sal.event): 1}


# -- the batches, on the engine ------------------------------------------------------------------
class FakeRegistry(MemoryRegistry):
    """The driver's registry, refusing the subjects it is told to (HTTP 409) or down for them."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse: set[str] = set()
        self.down: set[str] = set()

    def register(self, subject: str, schema: Schema) -> int:
        """The schema's id, unless its subject is refused or down."""
        if subject in self.refuse:
            raise RegistryError(f"cannot register {subject}") from SchemaRegistryError(409, 409, "incompatible")
        if subject in self.down:
            raise RegistryError(f"cannot register {subject}") from OSError("connection refused")
        return super().register(subject, schema)


class Harness:
    """The bridge on the test driver, Chile a second in-memory broker with a fake registry; topic creation a fake
    that takes SETUP_S of the bridge's clock (`now`) and creates the topics on Chile."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
        self.settings = replace(driver_settings(data_dir), chile=Connection(bootstrap=CHILE, registry_url="http://chile"),
                                sasquatch_environment="dev")
        self.chile = Broker()
        self.registry = FakeRegistry()
        self.now = NOW
        self.created: list[list[str]] = []
        self.refused_topics: set[str] = set()
        self.chile_down = False
        monkeypatch.setattr(sal_bridge, "ensure_topics", self.ensure_topics)
        self.bridge = self.new_bridge()
        self.driver = TopologyTestDriver(self.bridge, now=NOW, clusters={CHILE: self.chile})
        self.bridge.clock = self.clock
        self.created.clear()
        self.now = NOW

    def new_bridge(self) -> SalBridge:
        """A bridge on the fake Chile registry."""
        bridge = SalBridge(self.settings)
        bridge.registry, bridge.output_codec = self.registry, Codec(self.registry)
        return bridge

    def restart(self) -> SalBridge:
        """A new instance takes over, as after a crash: it fences the old one and resumes at its checkpoint."""
        self.bridge = self.new_bridge()
        self.driver.restart(self.bridge)
        self.bridge.clock = self.clock
        return self.bridge

    def clock(self) -> float:
        """The bridge's clock."""
        return self.now

    def ensure_topics(self, _settings: Settings, specs: list[TopicSpec]) -> list[str]:
        """Takes SETUP_S of the clock; refuses, like Kafka, a name it was told collides with another."""
        self.now += SETUP_S
        names = [spec.name for spec in specs]
        self.created.append(names)
        if self.chile_down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "Chile is down"))
        if refused := self.refused_topics.intersection(names):
            raise KafkaException(KafkaError(KafkaError.TOPIC_EXCEPTION, f"{min(refused)} collides"))
        for spec in specs:
            self.chile.create(spec.name, spec.partitions)
        return names

    def pipe(self, *records: Record | bytes) -> None:
        """Source records to partition 0 of their topics (raw bytes: to the metrics topic)."""
        for record in records:
            kind = Metric if isinstance(record, bytes) else type(record)
            spec = next(spec for spec in self.bridge.inputs if spec.schema == kind.SCHEMA)
            self.driver.pipe(spec, None, record, partition=0)

    def committed(self, topic_part: str) -> list[Message]:
        """The committed messages of the Chile topics whose names contain `topic_part`, topic after topic."""
        return [message for topic in sorted(self.chile.logs) if topic_part in topic
                for message in self.chile.fetch(topic, 0, 0, sys.maxsize)[0]]

    def decoded(self, topic_part: str) -> list[dict[str, Any]]:
        """The committed messages on Chile topics containing `topic_part`, decoded with their writer schemas."""
        found = []
        for message in self.committed(topic_part):
            schema_id, payload = unframe(message.value())
            parsed = parse(self.registry.schema_by_id(schema_id) or {})
            found.append(read_datum(payload, parsed, parsed))
        return found

    def dead_letters(self) -> list[DeadLetter]:
        """The bridge's committed dead letters."""
        codec = Codec(self.registry)
        return [codec.decode(message.value(), DeadLetter) for message in self.committed(".sal-bridge.dead-letter")]

    def positions(self) -> dict[str, int]:
        """The committed checkpoint's positions, those of partitions not read from left out."""
        return {key: offset for key, offset in self.bridge.offsets.checkpoint.positions.items() if offset}


@pytest.fixture
def harness(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Harness]:
    """A fresh bridge with fakes."""
    harness = Harness(monkeypatch, tmp_path / "data")
    with harness.driver:
        yield harness


def test_the_first_batch_is_stamped_after_its_topics_are_created(harness: Harness) -> None:
    """Creating the new metrics' topics takes 33.2 s: sndStamp is read after, so it is the produce time (the SAL
    rule: sndStamp - Kafka timestamp = TAI - UTC), and all new topics are created in one request."""
    metrics = [replace(METRIC, name=name) for name in ("a", "b", "c")]
    harness.pipe(*metrics, SUMMARY)
    harness.driver.run_once()
    assert harness.created == [["lsst.prompt.dev.a", "lsst.prompt.dev.b", "lsst.prompt.dev.c"]]
    sal = harness.decoded("PromptProcessing")
    assert len(sal) == 4 and {d["private_sndStamp"] for d in sal} == {NOW + SETUP_S} == {harness.now}
    assert len(harness.decoded("lsst.prompt.dev.")) == 3 and not harness.dead_letters()
    harness.pipe(*metrics)
    harness.driver.run_once()
    assert len(harness.created) == 1, "known topics are not created again"
    assert {d["private_sndStamp"] for d in harness.decoded("PromptProcessing")} == {NOW + SETUP_S}


def test_what_cannot_be_mapped_is_dead_lettered_and_the_checkpoint_moves_past_it(harness: Harness) -> None:
    """A name too long for a topic, a topic Kafka refuses, a schema the registry refuses and undecodable bytes:
    each is dead-lettered with its reason; every SAL event is still sent, seqNum without a gap."""
    harness.refused_topics.add("lsst.prompt.dev.collides")
    harness.registry.refuse.add("lsst.prompt.dev.refused-value")
    harness.pipe(replace(METRIC, name=LONG_NAME), METRIC, replace(METRIC, name="collides"), b"not avro",
                 replace(METRIC, name="refused"))
    harness.driver.run_once()
    assert harness.bridge.records == 5 and harness.positions() == {"prompt.metrics:0": 5}
    assert [d["private_seqNum"] for d in harness.decoded("logevent_metric")] == [1, 2, 3, 4]
    assert [d["prep_butlerTotalTime"] for d in harness.decoded("lsst.prompt.dev.")] == [0.25]
    letters: dict[int, DeadLetter] = {letter.offset: letter for letter in harness.dead_letters()}
    assert sorted(letters) == [0, 2, 3, 4]
    assert letters[3].error_class == "WireFormatError" and letters[3].value == b"not avro"
    assert {letters[i].error_class for i in (0, 2, 4)} == {"UnmappableError"}
    assert "Kafka allows at most 249" in letters[0].reason and "its SAL event was written" in letters[0].reason
    assert "collides" in letters[2].reason and "the registry refused its schema" in letters[4].reason
    topics = ["lsst.prompt.dev.collides", "lsst.prompt.dev.prep_butlerTotalTime", "lsst.prompt.dev.refused"]
    assert harness.created == [topics, *([topic] for topic in topics)], "one request, then one a topic to find it"
    harness.pipe(replace(METRIC, name="collides"), replace(METRIC, name=LONG_NAME))
    harness.driver.run_once()
    assert len(harness.dead_letters()) == 6 and len(harness.created) == 4, "refusals are kept, not tried again"
    assert [d["private_seqNum"] for d in harness.decoded("logevent_metric")] == [1, 2, 3, 4, 5, 6]
    assert harness.positions() == {"prompt.metrics:0": 7}


@pytest.mark.parametrize("outage", ["registry", "chile"])
def test_an_outage_is_waited_out_not_dead_lettered(harness: Harness, outage: str) -> None:
    """An unreachable registry or Chile cluster may come back: nothing of the batch is written, the engine
    consumes it again later, and the metric is not lost."""
    if outage == "registry":
        harness.registry.down.add("lsst.prompt.dev.prep_butlerTotalTime-value")
    else:
        harness.chile_down = True
    harness.pipe(METRIC)
    harness.driver.run_once()
    assert harness.committed("PromptProcessing") == [] and harness.bridge.records == 0
    harness.registry.down.clear()
    harness.chile_down = False
    harness.driver.run_once()
    assert [d["private_seqNum"] for d in harness.decoded("logevent_metric")] == [1]
    assert len(harness.decoded("lsst.prompt.dev.")) == 1 and harness.dead_letters() == []


def test_a_sal_event_too_large_for_chile_is_dead_lettered_without_using_a_seq_num(harness: Harness) -> None:
    """The producer would refuse it inside the transaction, on every retry: it is dead-lettered whole instead,
    and the next event on the topic takes the seqNum it would have had."""
    huge = LogMessage(name="streams.x", level=40, message="x" * MESSAGE_LIMIT, timestamp=NOW)
    harness.pipe(huge, replace(huge, message="calm"))
    harness.driver.run_once()
    [letter] = harness.dead_letters()
    assert letter.error_class == "UnmappableError" and "logevent_logMessage event cannot be written" in letter.reason
    assert [d["private_seqNum"] for d in harness.decoded("logevent_logMessage")] == [1]


def test_an_aborted_transaction_is_sent_again_once_without_a_gap(harness: Harness) -> None:
    """A commit Chile aborts shows nothing; the batch is converted again from the committed checkpoint."""
    harness.chile.commit_failures.append(KafkaError(KafkaError._TIMED_OUT, "aborted (test)", txn_requires_abort=True))
    harness.pipe(METRIC, SUMMARY)
    harness.driver.run_once()
    assert harness.committed("PromptProcessing") == [] and harness.positions() == {}
    harness.driver.run_once()
    assert [d["private_seqNum"] for d in harness.decoded("PromptProcessing")] == [1, 1]
    assert harness.positions() == {"prompt.metrics:0": 1, "prompt.visit-summary:0": 1}


def test_a_restart_resumes_at_the_checkpoint_and_the_old_instance_is_fenced(harness: Harness) -> None:
    """A new instance reads the last committed checkpoint: seqNum runs on, nothing is sent twice, and the old
    instance can commit nothing more."""
    harness.pipe(METRIC)
    harness.driver.run_once()
    old = harness.bridge
    harness.pipe(replace(METRIC, name="after"))
    harness.restart()
    assert old._consumer is not None
    with pytest.raises(KafkaException, match="fenced"):
        old._cycle(old._consumer)
    harness.driver.run_once()
    assert [(d["name"], d["private_seqNum"]) for d in harness.decoded("logevent_metric")] == [
        (METRIC.name, 1), ("after", 2)]
    assert harness.positions() == {"prompt.metrics:0": 2}


def test_an_idle_bridge_commits_its_checkpoint_so_a_fenced_one_finds_out(harness: Harness) -> None:
    """With nothing to read, a checkpoint-only transaction every IDLE_COMMIT_S: an instance another one has fenced
    fails it and stops, instead of idling on unnoticed."""
    harness.driver.run_once()
    assert harness.committed(".sal-bridge.checkpoints") == []
    harness.now += IDLE_COMMIT_S
    harness.driver.run_once()
    assert len(harness.committed(".sal-bridge.checkpoints")) == 1
    old = harness.bridge
    harness.restart()
    harness.now += IDLE_COMMIT_S
    assert old._consumer is not None
    with pytest.raises(KafkaException, match="fenced"):
        old._cycle(old._consumer)


def test_the_bridge_may_write_its_own_topics_and_the_sal_and_sasquatch_names_only(tmp_path: Path) -> None:
    """`topology/graph.py` names what the engine lets it write: its checkpoint and dead-letter topics, and the
    SAL and Sasquatch topics by prefix; nothing of the processing cluster's."""
    settings = replace(driver_settings(tmp_path), sasquatch_environment="dev")
    spec = declare_graph(settings).sal_bridge
    assert all(spec.may_write(topic) for topic in (
        "prompt.sal-bridge.checkpoints", "prompt.sal-bridge.dead-letter",
        "lsst.sal.PromptProcessing.logevent_metric", "lsst.prompt.dev.prep_butlerTotalTime"))
    assert not any(spec.may_write(topic) for topic in (
        "prompt.dead-letter", "prompt.ccd-result", "lsst.sal.ScriptQueue.logevent_nextVisit", "lsst.prompt.prod.x"))


def test_an_environment_no_topic_can_be_named_in_stops_the_bridge_at_start() -> None:
    """Better a settings error than every metric dead-lettered."""
    with pytest.raises(SettingsError, match="Sasquatch environment"):
        SalBridge(Settings(chile=Connection(bootstrap="chile:9092", registry_url="http://chile"),
                           sasquatch_environment="dev/1"))
