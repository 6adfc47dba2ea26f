"""What every agent is given: settings, the codec, the topics, and sending records.

Agents decode with `context.decode`, call the pure core, and send with `context.send`; no
agent touches bytes or the registry itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, TypeVar

import faust

from streams import admin
from streams.codec import Codec
from streams.config import Settings
from streams.records import Record
from streams.registry import ConfluentRegistry
from topology.topics import Topics, TopicSpec, declare

R = TypeVar("R", bound=Record)
log = logging.getLogger(__name__)


@dataclass
class Context:
    """The shared, per-process wiring of a worker."""

    settings: Settings
    codec: Codec
    topics: Topics
    channels: dict[str, faust.TopicT]

    @classmethod
    def build(cls, settings: Settings, app: faust.App) -> Context:
        """Declare the topics on `app` (raw bytes in and out: the codec does the rest)."""
        topics = declare(settings)
        channels = {
            spec.id: app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                               value_serializer="raw", partitions=spec.partitions)
            for spec in topics.all()
        }
        return cls(settings, Codec(ConfluentRegistry(settings.registry_config())), topics, channels)

    def prepare(self) -> None:
        """Create the topics and register the schemas (blocking: run before consuming)."""
        created = admin.ensure_topics(self.settings, self.topics.all())
        ids = admin.register_schemas(self.codec, self.topics.all())
        log.info("topics ready (created: %s); schema ids: %s", created or "none", ids)

    def decode(self, spec: TopicSpec, value: bytes | None, record_type: type[R]) -> R:
        """The record in a value read from `spec`'s topic."""
        return self.codec.decode(value, record_type, accept_json=spec.accepts_json)

    async def send(self, spec: TopicSpec, key: str | bytes | None, record: Record,
                   partition: int | None = None) -> Any:
        """Encode `record` and send it to `spec`'s topic (to `partition` if given)."""
        raw_key = key.encode() if isinstance(key, str) else key
        return await self.channels[spec.id].send(
            key=raw_key, value=self.codec.encode(spec.name, record), partition=partition
        )
