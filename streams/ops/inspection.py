"""Reading a deployment's state from its topics, for the operators' commands.

The gather's changelog holds each visit's progress (partitioned by visit), the detector table's
changelog each detector's phase; both are compacted, so reading them to the end gives the state
now. Nothing here joins a consumer group or writes anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

from confluent_kafka import Message

from streams.config import Settings
from streams.errors import DecodeError, NonRetriableError
from streams.runtime.topic_reader import read_to_end
from streams.serde.base import Record
from streams.serde.codec import Codec
from streams.serde.declared import record_of
from streams.serde.records import DeadLetter, DetectorProgress, VisitProgress
from streams.serde.registry import ConfluentRegistry
from topology.keys import SEPARATOR, visit_key, visit_partition
from topology.tables import changelogs, declare_tables, gather_changelog
from topology.topics import TopicSpec, declare

R = TypeVar("R", bound=Record)


class UnknownTopicError(NonRetriableError):
    """A topic the tools cannot decode (not one of this deployment's Avro topics)."""


class Inspector:
    """Reads one deployment (one set of settings): its tables' changelogs and its topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = declare(settings)
        self.codec = Codec(ConfluentRegistry(settings.registry_config()))

    def _latest(self, messages: list[Message], record_type: type[R]) -> dict[str, R]:
        """The last value of each key (a compacted topic's current state); tombstones remove the key."""
        rows: dict[str, bytes | None] = {}
        for message in messages:
            rows[(message.key() or b"").decode()] = message.value()
        return {key: self.codec.decode(value, record_type) for key, value in rows.items() if value is not None}

    def visits(self, instrument: str | None = None, group: str | None = None) -> list[VisitProgress]:
        """The gather's rows: every visit it knows, or one visit (read from its partition only)."""
        changelog = gather_changelog(self.settings)
        partitions = None
        if instrument is not None and group is not None:
            partitions = [visit_partition(instrument, group, changelog.partitions)]
        rows = self._latest(read_to_end(self.settings, changelog.name, partitions), VisitProgress)
        wanted = None if instrument is None or group is None else visit_key(instrument, group)
        return [row for key, row in rows.items() if wanted in (None, key)]

    def detectors(self, instrument: str, group: str) -> list[DetectorProgress]:
        """The detector table's rows of one visit."""
        name = declare_tables(self.settings).detectors.changelog(self.settings.app_id)
        prefix = visit_key(instrument, group) + SEPARATOR
        mine = [m for m in read_to_end(self.settings, name) if (m.key() or b"").decode().startswith(prefix)]
        return sorted(self._latest(mine, DetectorProgress).values(), key=lambda row: row.detector)

    def dead_letters(self, last: int) -> list[tuple[int, DeadLetter]]:
        """The last `last` dead letters with their offsets."""
        spec = self.topics.dead_letter
        return [(m.offset() or 0, self.codec.decode(m.value(), DeadLetter))
                for m in read_to_end(self.settings, spec.name, last=last)]

    def spec(self, topic: str) -> TopicSpec:
        """The declaration of one of this deployment's topics, by full name or short id (`ccd_result`)."""
        for spec in [*self.topics.all(), *changelogs(self.settings)]:
            if topic in (spec.name, spec.id) and spec.avro:
                return spec
        known = ", ".join(s.name for s in self.topics.all() if s.avro)
        raise UnknownTopicError(f"{topic!r} is not an Avro topic of this deployment (app {self.settings.app_id}, "
                                f"prefix {self.settings.topic_prefix}); known: {known}")

    def records(self, topic: str, last: int | None = None) \
            -> Iterator[tuple[Message, Record | dict[str, Any] | DecodeError]]:
        """Each committed record of a topic, decoded by its declared schema, or by its writer's for the alert
        packets (or the reason it cannot be)."""
        spec = self.spec(topic)
        for message in read_to_end(self.settings, spec.name, last=last):
            try:
                record = record_of(spec)
                if record is None:
                    yield message, self.codec.decode_any(message.value())
                else:
                    yield message, self.codec.decode(message.value(), record, accept_json=spec.accepts_json)
            except DecodeError as error:
                yield message, error
