"""The SAL bridge between two real clusters, judged by a reader written from the SAL rules.

The processing cluster is the session's; the Chile side is a second cluster (SASL_SSL + SCRAM)
with its own registry. The bridge runs as its own process and is SIGKILLed mid-stream and
restarted. The reader below knows nothing of the bridge's code: it unframes the bytes itself,
fetches the writer schema from the Chile registry by id over HTTP and resolves it against its own
reader schema, derived from the shipped ts_xml files by ts_xml's rules (`tests/sal_rules.py`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from connectors import sal_interface
from stack.cluster import ClusterState
from streams.config import Settings
from streams.observability.log_forwarding import LogForwarder
from streams.runtime.admin import ensure_topics
from streams.serde.base import Record
from streams.serde.codec import Codec
from streams.serde.records import CcdResult, Metric, VisitSummary
from streams.serde.registry import ConfluentRegistry
from tests import sal_rules
from tests.integration.conftest import CHILE_PASSWORD, CHILE_USER
from tests.integration.settings import isolated_settings
from topology.topics import declare

COMPONENT = "PromptProcessing"
EVENTS = ("logevent_visitSummary", "logevent_ccdResult", "logevent_metric", "logevent_logMessage")
METRICS = ("prep_butlerTotalTime", "pipelineRunTime", "diaSourceCount", "brokenMetric")
DEADLINE_S = 180.0
TAI_MINUS_UTC, TIME_RULE_S = 37.0, 2.0
"""SAL's time rule (sal_kafka.md): sndStamp (TAI) - Kafka timestamp (UTC) = TAI - UTC, within 2 s."""


# -- the reader: SAL rules only -----------------------------------------------------------------
def chile_client(chile: ClusterState) -> dict[str, Any]:
    """librdkafka settings for the Chile cluster, written out by hand."""
    return {"bootstrap.servers": chile.bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": chile.ca_file,
            "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": CHILE_USER, "sasl.password": CHILE_PASSWORD}


def reader_schemas() -> dict[str, dict[str, Any]]:
    """The reader's own schemas: ts_xml's rules applied to the shipped XML."""
    schemas = sal_rules.schemas_from_xml(sal_interface.EVENTS_XML, COMPONENT)
    return schemas | sal_rules.schemas_from_xml(sal_interface.GENERICS_XML, COMPONENT)


@dataclass
class Received:
    """One message as the reader decoded it."""

    key: bytes | None
    schema_id: int
    datum: dict[str, Any]
    timestamp: float
    """The Kafka timestamp (the producer's CreateTime), UTC seconds."""


@dataclass
class ChileReader:
    """Reads committed messages from Chile topics, one consumer per topic, accumulating."""

    chile: ClusterState
    messages: dict[str, list[Received]] = field(default_factory=dict)
    _consumers: dict[str, Consumer] = field(default_factory=dict)
    _writers: dict[int, Any] = field(default_factory=dict)

    def writer_schema(self, schema_id: int) -> dict[str, Any]:
        """The writer schema with this id, straight from the registry's REST API."""
        with urllib.request.urlopen(f"{self.chile.registry_url}/schemas/ids/{schema_id}", timeout=10) as response:
            schema: dict[str, Any] = json.loads(json.loads(response.read())["schema"])
        return schema

    def latest_schema(self, subject: str) -> dict[str, Any]:
        """The latest schema registered under a subject."""
        with urllib.request.urlopen(f"{self.chile.registry_url}/subjects/{subject}/versions/latest",
                                    timeout=10) as response:
            schema: dict[str, Any] = json.loads(json.loads(response.read())["schema"])
        return schema

    def drain(self, topic: str, reader: dict[str, Any] | None) -> list[Received]:
        """Everything committed on `topic` so far, decoded against `reader` (or the writer schema)."""
        if topic not in self._consumers:
            consumer = Consumer(chile_client(self.chile) | {
                "group.id": f"reader-{uuid.uuid4().hex[:6]}", "isolation.level": "read_committed",
                "enable.partition.eof": True, "enable.auto.commit": False})
            consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
            self._consumers[topic], self.messages[topic] = consumer, []
        consumer = self._consumers[topic]
        while True:
            message = consumer.poll(5)
            if message is None:
                break
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                break
            value = message.value()
            assert value is not None and value[0] == 0, "Confluent framing: magic byte 0"
            schema_id = struct.unpack(">I", value[1:5])[0]
            if schema_id not in self._writers:
                self._writers[schema_id] = fastavro.parse_schema(self.writer_schema(schema_id), named_schemas={})
            parsed_reader = fastavro.parse_schema(reader, named_schemas={}) if reader else self._writers[schema_id]
            datum = fastavro.schemaless_reader(io.BytesIO(value[5:]), self._writers[schema_id], parsed_reader)
            assert isinstance(datum, dict)
            self.messages[topic].append(Received(message.key(), schema_id, datum, message.timestamp()[1] / 1000))
        return self.messages[topic]

    def close(self) -> None:
        """Close every consumer."""
        for consumer in self._consumers.values():
            consumer.close()


# -- the source side and the bridge process ------------------------------------------------------
class Source:
    """Writes the gather's kinds of records (and worker log records) to the processing cluster."""

    def __init__(self, settings: Settings) -> None:
        self.topics = declare(settings)
        ensure_topics(settings, [self.topics.visit_summary, self.topics.ccd_result, self.topics.metrics,
                                 self.topics.log_messages])
        self.codec = Codec(ConfluentRegistry(settings.registry_config()))
        self.producer = Producer(settings.kafka_config())
        self.log = logging.getLogger(f"tests.bridge.{uuid.uuid4().hex[:6]}")
        self.log.propagate = False
        self.forwarder = LogForwarder(settings, self.topics.log_messages, self.codec)
        self.log.addHandler(self.forwarder)

    def send(self, record: Record, partition: int) -> None:
        """One record to its topic."""
        spec = {VisitSummary: self.topics.visit_summary, CcdResult: self.topics.ccd_result,
                Metric: self.topics.metrics}[type(record)]
        self.producer.produce(spec.name, value=self.codec.encode(spec.name, record), partition=partition)

    def visit(self, i: int) -> None:
        """A visit's summary, three results, metrics (one NaN), and a worker error."""
        group, now = f"2026-11-25T05:{i // 60:02d}:{i % 60:02d}.000", time.time() + 37
        for detector in range(3):
            self.send(CcdResult(instrument="LSSTCam", group_id=group, detector=detector, status="success",
                                result_time=now), detector % 4)
            for name in METRICS:
                value = math.nan if name == "brokenMetric" else float(detector + i)
                self.send(Metric(name=name, value=value, unit="s", instrument="LSSTCam", group_id=group,
                                 detector=detector, timestamp=now, tags={"band": "r"}), i % 4)
        self.send(VisitSummary(instrument="LSSTCam", group_id=group, counts={"success": 3}, summary_time=now), i % 4)
        self.log.error("visit %s: detector %d had a problem", group, i)
        self.producer.flush(10)

    def close(self) -> None:
        """Deliver everything."""
        self.producer.flush(10)
        self.forwarder.close()


class Bridge:
    """`python -m connectors.sal_bridge` as a separate process."""

    def __init__(self, settings: Settings, log: Path) -> None:
        self.settings, self.log = settings, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the bridge process."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "connectors.sal_bridge"],
                                            env=os.environ | self.settings.to_env(), stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop it (SIGKILL: a crash)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(30)

    def wait_running(self, starts: int) -> None:
        """Until the log shows `starts` starts completed (transactional id taken, checkpoint read)."""
        deadline = time.monotonic() + DEADLINE_S
        while self.log.read_text(errors="replace").count("SAL bridge running ") < starts:
            self.alive()
            assert time.monotonic() < deadline, f"the bridge did not start in {DEADLINE_S} s"
            time.sleep(0.2)

    def alive(self) -> None:
        """Fail with its log if the process died."""
        assert self.process is not None and self.process.poll() is None, self.log.read_text()[-3000:]


@pytest.fixture
def bridge_settings(cluster: ClusterState, chile: ClusterState, tmp_path: Path) -> Settings:
    """Settings of one test: its own source topics, SAL sub-namespace and Sasquatch environment."""
    tag = uuid.uuid4().hex[:8]
    return isolated_settings(
        cluster, tmp_path, chile=replace(chile.client(), security_protocol="SASL_SSL", sasl_username=CHILE_USER,
                                         sasl_password=CHILE_PASSWORD, ssl_cafile=chile.ca_file),
        chile_sal_subname=f"test_{tag}", sasquatch_environment=f"test{tag}",
        log_forward_burst=10_000, chile_log_burst=10_000)


@pytest.fixture
def reader(chile: ClusterState) -> Iterator[ChileReader]:
    """The independent reader of the Chile cluster."""
    found = ChileReader(chile)
    yield found
    found.close()


def sal_topic(settings: Settings, sal_name: str) -> str:
    """The SAL topic of an event, by the naming rule."""
    return f"lsst.{settings.chile_sal_subname}.{COMPONENT}.{sal_name}"


def wait_for(reader: ChileReader, topics: dict[str, int], schemas: dict[str, Any], bridge: Bridge) -> None:
    """Until each topic holds at least its count of committed messages."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        counts = {topic: len(reader.drain(topic, schemas.get(topic))) for topic in topics}
        if all(counts[topic] >= n for topic, n in topics.items()):
            return
        bridge.alive()
        assert time.monotonic() < deadline, f"after {DEADLINE_S} s: {counts}, expected {topics}"
        time.sleep(0.5)


# -- the test -----------------------------------------------------------------------------------
def test_sigkilled_bridge_delivers_every_sal_message_once(bridge_settings: Settings, reader: ChileReader,
                                                          chile: ClusterState, tmp_path: Path) -> None:
    """Visits stream through the bridge while it is SIGKILLed, restarted, and a second instance fences
    the first; Chile gets each SAL message exactly once, with SAL's private fields, keys, schemas and
    topic configuration, each stamped at send time (the SAL time rule holds on the first batch after
    every start, which creates the metrics' topics); SIGTERM stops the last instance with a log line."""
    settings = bridge_settings
    schemas = {sal_topic(settings, name): schema for name, schema in reader_schemas().items()}
    source = Source(settings)
    garbage: list[int] = []
    source.producer.produce(source.topics.metrics.name, value=b"not avro", partition=0,
                            on_delivery=lambda _error, message: garbage.append(message.offset()))
    # A metric whose Sasquatch topic name Kafka would refuse (over 249 characters): its SAL event goes, the rest
    # is dead-lettered, and the bridge goes on (it used to exit on it, restart and meet it again, forever).
    unmappable = Metric(name="m" * 300, value=1.0, unit="s", instrument="LSSTCam", group_id="unmappable", detector=0,
                        timestamp=time.time() + 37)
    source.producer.produce(source.topics.metrics.name, partition=0,
                            value=source.codec.encode(source.topics.metrics.name, unmappable),
                            on_delivery=lambda _error, message: garbage.append(message.offset()))
    bridge = successor = Bridge(settings, tmp_path / "bridge.log")
    first, second, total = 10, 40, 50
    try:
        for i in range(first):
            source.visit(i)
        bridge.start()
        metric_topic = sal_topic(settings, "logevent_metric")
        wait_for(reader, {metric_topic: 1}, schemas, bridge)

        def stream() -> None:
            for i in range(first, first + second):
                source.visit(i)
                time.sleep(0.05)

        streaming = threading.Thread(target=stream)
        streaming.start()
        time.sleep(1.0)
        bridge.kill(signal.SIGKILL)
        at_kill = len(reader.drain(metric_topic, schemas[metric_topic]))
        bridge.start()
        bridge.wait_running(2)
        successor = Bridge(settings, tmp_path / "successor.log")  # a second instance: it fences the first
        successor.start()
        streaming.join()
        source.close()
        expected = {sal_topic(settings, "logevent_visitSummary"): total,
                    sal_topic(settings, "logevent_ccdResult"): 3 * total,
                    metric_topic: 3 * len(METRICS) * total + 1, sal_topic(settings, "logevent_logMessage"): total}
        assert 0 < at_kill < expected[metric_topic], "the bridge must be killed mid-stream"
        wait_for(reader, expected, schemas, successor)
        time.sleep(2)  # anything extra (a duplicate) would show up now
        assert bridge.process is not None and bridge.process.wait(30) != 0, "the fenced instance stops"
        assert "fenced" in bridge.log.read_text().lower()
        successor.kill(signal.SIGTERM)
        assert successor.process is not None and successor.process.returncode == 0, "SIGTERM is a clean stop"
        assert re.search(r"INFO .*SAL bridge stopping .*on=SIGTERM records=\d+", successor.log.read_text()), \
            successor.log.read_text()[-3000:]
    finally:
        for instance in (bridge, successor):
            instance.kill()
        source.close()

    check_sal_topics(settings, reader, schemas, expected, chile)
    check_sasquatch(settings, reader, total)
    dead = reader.drain(f"{settings.topic_prefix}.sal-bridge.dead-letter", None)
    assert [(d.datum["topic"], d.datum["offset"], d.datum["error_class"]) for d in dead] == [
        (source.topics.metrics.name, garbage[0], "WireFormatError"),
        (source.topics.metrics.name, garbage[1], "UnmappableError")]
    assert dead[0].datum["value"] == b"not avro" and "Kafka allows at most 249" in dead[1].datum["reason"]
    assert [m.datum["name"] for m in reader.messages[metric_topic]].count(unmappable.name) == 1
    assert "written_before=" in (tmp_path / "bridge.log").read_text()


def check_sal_topics(settings: Settings, reader: ChileReader, schemas: dict[str, Any], expected: dict[str, int],
                     chile: ClusterState) -> None:
    """Exactly the expected messages; SAL private fields, keys, schemas and topic configuration."""
    admin = AdminClient(chile_client(chile))
    metadata = admin.list_topics(timeout=10).topics
    resources = [ConfigResource(ConfigResource.Type.TOPIC, topic) for topic in expected]
    configs = {r.name: f.result() for r, f in admin.describe_configs(resources).items()}
    origins = set()
    for topic, count in expected.items():
        sal_name = topic.rsplit(".", 1)[1]
        messages = reader.messages[topic]
        assert len(messages) == count, f"{topic}: {len(messages)} messages, expected {count} (duplicates?)"
        assert len(metadata[topic].partitions) == 1 and configs[topic]["cleanup.policy"].value == "compact"
        assert reader.latest_schema(f"{topic}-value") == schemas[topic], "registered schema = ts_xml's from XML"
        data = [m.datum for m in messages]
        assert [d["private_seqNum"] for d in data] == list(range(1, count + 1)), f"{topic}: seqNum gaps or repeats"
        stamps = [d["private_sndStamp"] for d in data]
        assert stamps == sorted(stamps), f"{topic}: sndStamp decreased"
        late = [(i, round(m.datum["private_sndStamp"] - m.timestamp, 3)) for i, m in enumerate(messages)
                if abs(m.datum["private_sndStamp"] - m.timestamp - TAI_MINUS_UTC) > TIME_RULE_S]
        assert not late, f"{topic}: sndStamp - Kafka timestamp is not TAI - UTC (index, difference): {late[:5]}"
        assert abs(stamps[-1] - (time.time() + 37)) < 600, "sndStamp is TAI now"
        for message, d in zip(messages, data, strict=True):
            assert message.key == sal_rules.key(COMPONENT, 1, sal_name)
            assert d["salIndex"] == 1 and d["private_identity"] == "PromptProcessing:1"
            assert d["private_kafkaStamp"] == d["private_sndStamp"]
            assert d["private_efdStamp"] == pytest.approx(d["private_sndStamp"] - 37, abs=1e-6)
            assert d["private_revCode"] == sal_rules.rev_code(schemas[topic])
            origins.add(d["private_origin"])
    assert len(origins) == 1, "private_origin is stable across restarts"
    metrics = reader.messages[sal_topic(settings, "logevent_metric")]
    keys = {(m.datum["groupId"], m.datum["detector"], m.datum["name"]) for m in metrics}
    assert len(keys) == len(metrics), "each metric once"
    broken = [m.datum["value"] for m in metrics if m.datum["name"] == "brokenMetric"]
    assert broken and all(math.isnan(v) for v in broken), "missing values travel as NaN"
    logs = reader.messages[sal_topic(settings, "logevent_logMessage")]
    assert {m.datum["level"] for m in logs} == {logging.ERROR}
    assert all("had a problem" in m.datum["message"] and m.datum["functionName"] == "visit" for m in logs)


def check_sasquatch(settings: Settings, reader: ChileReader, total: int) -> None:
    """Each non-NaN metric once in lsst.prompt.<env>.<metric>, in the dispatcher's layout."""
    for name in METRICS[:-1]:
        records = reader.drain(f"lsst.prompt.{settings.sasquatch_environment}.{name}", None)
        assert len(records) == 3 * total, name
        assert len({r.datum["id"] for r in records}) == 3 * total, "one record per measurement"
        first = records[0].datum
        assert first["dataset_tag"] == "Live" and first["instrument"] == "LSSTCam" and first["band"] == "r"
        assert abs(first["timestamp"] - time.time()) < 600, "timestamp is UTC"
        assert isinstance(first[name], float)
    topics = AdminClient(chile_client(reader.chile)).list_topics(timeout=10).topics
    assert f"lsst.prompt.{settings.sasquatch_environment}.brokenMetric" not in topics, "NaN is not sent"
