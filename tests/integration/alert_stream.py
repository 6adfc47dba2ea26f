"""Reading the alert stream as a community broker does: confluent-kafka and Rubin's lsst-alert-packet only.

Nothing of the topology is used: a `read_committed` consumer reads every partition of the alert topic
to its end, checks each value's Confluent framing against the id the registry holds for the subject,
and decodes it with the official schema that `lsst-alert-packet` ships.
"""

from __future__ import annotations

import io
import struct
import time
import uuid
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from lsst.alert.packet import Schema

from streams.config import Settings


def latest_schema() -> Any:
    """The newest official alert schema the package ships."""
    return Schema.from_uri()


def read_alerts(settings: Settings, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every committed alert on the settings' alert topic, decoded."""
    registry = SchemaRegistryClient({"url": settings.cluster.registry_url})
    registered = registry.get_latest_version(f"{settings.alert_topic}-value").schema_id
    schema = latest_schema()
    consumer = Consumer({"bootstrap.servers": settings.cluster.bootstrap, "group.id": f"broker-{uuid.uuid4().hex[:8]}",
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(settings.alert_topic, timeout=10).topics[settings.alert_topic].partitions
        consumer.assign([TopicPartition(settings.alert_topic, p, 0) for p in partitions])
        pending, alerts = set(partitions), []
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                pending.discard(message.partition())
                continue
            magic, schema_id = struct.unpack(">bI", message.value()[:5])
            assert (magic, schema_id) == (0, registered), "Confluent framing with the registered schema id"
            alerts.append(fastavro.schemaless_reader(io.BytesIO(message.value()[5:]), schema.definition))
        assert not pending, f"partitions {pending} not read to their end"
        return alerts
    finally:
        consumer.close()
