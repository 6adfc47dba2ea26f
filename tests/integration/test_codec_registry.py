"""The codec against the real registry, and the topics the app creates at start-up."""

from __future__ import annotations

import json

import pytest
from confluent_kafka.admin import AdminClient
from fastavro.schema import to_parsing_canonical_form

from streams.config import Settings
from streams.errors import UnknownSchemaIdError
from streams.runtime.admin import TopicMismatchError, ensure_topics, register_schemas
from streams.serde import alert_packets
from streams.serde.codec import Codec, frame, parse
from streams.serde.records import RECORD_TYPES
from streams.serde.registry import ConfluentRegistry
from streams.serde.schemas import load_schema
from tests.unit.test_codec import sample
from topology.topics import declare


def test_prepare_creates_declared_topics_and_registers_subjects(settings: Settings) -> None:
    """Every declared topic exists with its partitions; every schema is under <topic>-value."""
    topics = declare(settings).all()
    created = ensure_topics(settings, topics)
    assert sorted(created) == sorted(t.name for t in topics)
    assert ensure_topics(settings, topics) == [], "a second run creates nothing"
    metadata = AdminClient(settings.kafka_config()).list_topics(timeout=10).topics
    for spec in topics:
        assert len(metadata[spec.name].partitions) == spec.partitions, spec.name

    registry = ConfluentRegistry(settings.registry_config())
    ids = register_schemas(Codec(registry), topics)
    subjects = set(registry.subjects())
    avro_topics = [spec for spec in topics if spec.avro]
    assert {f"{t.name}-value" for t in avro_topics} <= subjects
    assert sorted(ids) == sorted(spec.name for spec in avro_topics)
    for spec in avro_topics:
        expected = load_schema(spec.schema) if spec.schema else json.loads(alert_packets.schema_json())
        registered = registry.schema_by_id(ids[spec.name])
        assert registered is not None and canonical(registered) == canonical(expected), spec.name
    assert declare(settings).alerts in avro_topics, "the alert stream's official schema is registered at start"


def canonical(schema: dict[str, object]) -> str:
    """The Avro parsing canonical form: what a registry may rewrite (names split into namespaces) compares equal."""
    return str(to_parsing_canonical_form(parse(schema)))


def test_a_topic_with_other_partitions_is_refused(settings: Settings) -> None:
    """A topic that exists with another partition count stops start-up with a clear reason."""
    spec = declare(settings).raw_image_available
    ensure_topics(settings, [spec])
    wider = declare(Settings(**{**settings.__dict__, "detector_partitions": spec.partitions + 1}))
    with pytest.raises(TopicMismatchError, match="partitions"):
        ensure_topics(settings, [wider.raw_image_available])


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_every_record_round_trips_through_the_registry(settings: Settings, name: str) -> None:
    """Encoded by one codec, decoded by another that only knows the registry: equal records."""
    registry = ConfluentRegistry(settings.registry_config())
    record = sample(name)
    data = Codec(registry).encode(settings.topic(f"roundtrip-{name}"), record)
    assert Codec(registry).decode(data, type(record)) == record


def test_unknown_schema_id_is_a_typed_error(settings: Settings) -> None:
    """An id the registry never issued is reported as such."""
    codec = Codec(ConfluentRegistry(settings.registry_config()))
    with pytest.raises(UnknownSchemaIdError, match="987654"):
        codec.decode(frame(987654, b"\x00"), RECORD_TYPES["next_visit"])
