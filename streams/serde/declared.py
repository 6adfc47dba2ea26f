"""The record types of the declared topics: the topology names each topic's record by its schema, and this
maps the name to the Python type generated from that schema."""

from __future__ import annotations

from streams.serde.base import Record
from streams.serde.records import RECORD_TYPES
from topology.topics import TopicSpec


def record_of(spec: TopicSpec) -> type[Record] | None:
    """The record type of a topic's values; None for a foreign format (S3 JSON, Rubin's alert packet)."""
    return None if spec.schema is None else RECORD_TYPES[spec.schema]
