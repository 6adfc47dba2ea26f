"""Preparing a cluster for the topology: create the declared topics, register their schemas.

Runs before any consumer subscribes (a worker subscribed to a missing topic ignores it), and
refuses a topic whose partition count differs from the declaration, since the partitioner
and the tables rely on it.
"""

from __future__ import annotations

import json

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.config import Settings
from streams.errors import NonRetriableError
from streams.serde import alert_packets
from streams.serde.codec import Codec
from streams.serde.declared import record_of
from topology.tables import changelogs
from topology.topics import ALERT_PACKET, TopicSpec, declare

TIMEOUT_S = 30.0


class TopicMismatchError(NonRetriableError):
    """An existing topic does not have the partition count the topology declares."""


def ensure_topics(settings: Settings, specs: list[TopicSpec]) -> list[str]:
    """Create every missing topic; return the names created.

    Raises:
        TopicMismatchError: an existing topic has another partition count.
    """
    admin = AdminClient(settings.kafka_config())
    existing = admin.list_topics(timeout=TIMEOUT_S).topics
    for spec in specs:
        if spec.name in existing and len(existing[spec.name].partitions) != spec.partitions:
            raise TopicMismatchError(
                f"topic {spec.name} has {len(existing[spec.name].partitions)} partitions, "
                f"the topology declares {spec.partitions}: recreate it or change the setting"
            )
    missing = [spec for spec in specs if spec.name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(spec.name, spec.partitions, settings.cluster.replication_factor, config=spec.config)
         for spec in missing],
        request_timeout=TIMEOUT_S,
    )
    for future in futures.values():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another worker was faster
                raise
    return [spec.name for spec in missing]


def prepare(settings: Settings, codec: Codec) -> list[str]:
    """Create every topic the settings declare (the tables' changelogs too) and register their schemas."""
    specs = [*declare(settings).all(), *changelogs(settings)]
    created = ensure_topics(settings, specs)
    register_schemas(codec, specs)
    return created


def register_schemas(codec: Codec, specs: list[TopicSpec]) -> dict[str, int]:
    """Register each topic's value schema under `<topic>-value` (the alert stream's: Rubin's official alert
    schema, so brokers find it before the first alert); return the ids by topic."""
    ids = {spec.name: codec.register(spec.name, record) for spec in specs if (record := record_of(spec)) is not None}
    return ids | {spec.name: codec.register_schema(f"{spec.name}-value", json.loads(alert_packets.schema_json()))
                  for spec in specs if spec.foreign == ALERT_PACKET}
