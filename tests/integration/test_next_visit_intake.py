"""nextVisit as the summit sends it, as a user types it into kcat, and through a real worker."""

from __future__ import annotations

import json
import subprocess

from confluent_kafka import SerializingProducer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer

from streams.clock import tai_now
from streams.config import Settings
from streams.ops.workers import WorkerPool
from streams.runtime.admin import ensure_topics
from streams.serde.codec import Codec
from streams.serde.records import NextVisit
from streams.serde.registry import ConfluentRegistry
from streams.serde.schemas import load_schema
from streams.simulate.visits import Visits
from topology.topics import declare

SUMMIT_VISIT = {
    "salIndex": 1, "private_sndStamp": 1795600000.25, "private_rcvStamp": 0.0,
    "private_efdStamp": 1795599963.25, "private_kafkaStamp": 1795600000.25, "private_seqNum": 17,
    "private_revCode": "ceeb2cd0", "private_identity": "ScriptQueue:1", "private_origin": 4242,
    "scriptSalIndex": 100017, "groupId": "2026-11-25T03:14:15.926", "coordinateSystem": 2,
    "position": [150.1, -2.2], "startTime": 1795600030.0, "rotationSystem": 2, "cameraAngle": 45.0,
    "filters": "r_57", "dome": 2, "duration": 32.0, "nimages": 2, "instrument": "LSSTCam",
    "survey": "BLOCK-365", "totalCheckpoints": 0,
}


def summit_producer(settings: Settings) -> SerializingProducer:
    """A producer framing values like ts_salobj does: Confluent's own Avro serializer."""
    serializer = AvroSerializer(SchemaRegistryClient(settings.registry_config()), json.dumps(load_schema("next_visit")),
                                conf={"subject.name.strategy.type": "TOPIC"})  # `<topic>-value`, as ts_salobj's
    return SerializingProducer(settings.kafka_config() | {"value.serializer": serializer})


def test_sal_framed_next_visit_is_decoded_unchanged(settings: Settings) -> None:
    """A nextVisit framed by confluent-kafka's serializer decodes to the same values."""
    spec = declare(settings).next_visit
    ensure_topics(settings, [spec])
    producer = summit_producer(settings)
    producer.produce(spec.name, key='{"name":"ScriptQueue","index":1,"topic":"logevent_nextVisit"}',
                     value=SUMMIT_VISIT)
    assert producer.flush(30) == 0
    [value] = Visits(settings).read(spec.name, 1)
    visit = Codec(ConfluentRegistry(settings.registry_config())).decode(value, NextVisit)
    assert visit.to_dict() == SUMMIT_VISIT


def test_kcat_json_line_is_decoded_the_same_way(settings: Settings) -> None:
    """`kcat -P` with one JSON line gives the same record as the summit's Avro."""
    spec = declare(settings).next_visit
    ensure_topics(settings, [spec])
    subprocess.run(["kcat", "-P", "-b", settings.cluster.bootstrap, "-t", spec.name],
                   input=json.dumps(SUMMIT_VISIT).encode() + b"\n", check=True, timeout=30)
    [value] = Visits(settings).read(spec.name, 1)
    codec = Codec(ConfluentRegistry(settings.registry_config()))
    assert codec.decode(value, NextVisit, accept_json=spec.accepts_json).to_dict() == SUMMIT_VISIT


def test_worker_takes_a_kcat_next_visit_and_dead_letters_garbage(settings: Settings, workers: WorkerPool) -> None:
    """A worker started with the faust CLI acts on a JSON nextVisit typed into kcat; garbage is a dead letter."""
    workers.start()
    topics = declare(settings)
    visit = SUMMIT_VISIT | {"instrument": "LATISS", "survey": "BLOCK-T454", "private_sndStamp": tai_now()}
    visits = Visits(settings)
    visits.send_bytes(topics.next_visit.name, [b"\x07not avro"])
    subprocess.run(["kcat", "-P", "-b", settings.cluster.bootstrap, "-t", topics.next_visit.name],
                   input=json.dumps(visit).encode() + b"\n", check=True, timeout=30)
    [summary] = visits.summaries(1)
    assert (summary.instrument, summary.group_id) == ("LATISS", SUMMIT_VISIT["groupId"])
    assert summary.counts["ignored"] == 1, "LATISS has one detector; BLOCK-T454 has no pipeline"
    [letter] = visits.dead_letters(1)
    assert letter.value == b"\x07not avro"
    assert (letter.topic, letter.partition, letter.offset) == (topics.next_visit.name, 0, 0)
    assert letter.error_class == "WireFormatError" and "magic byte" in letter.reason
