"""A worker's local tables are a cache of their changelogs: checked against them before being trusted.

Each table partition on disk knows the changelog position it reflects. A position the changelog
cannot have (past its end, because the topics were deleted or recreated while the data directory
was kept; or before its start, because records it lacks are gone) means the copy is not a prefix
of the changelog, so it is discarded and the partition restored from the changelog, as Kafka
Streams does with a corrupted task. A copy behind the changelog is simply caught up; an empty or
missing data directory is restored in full.
"""

from __future__ import annotations

import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streams.config import Settings

SETTLING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC)
"""Answers about a partition whose topic is being created or deleted: ask again."""


def invalid(position: int, low: int, high: int) -> str | None:
    """Why a local copy at `position` cannot be caught up from a changelog holding offsets [low, high)."""
    if position > high:
        return f"is ahead of its changelog (position {position}, changelog end {high}): the topic was recreated"
    if position < low:
        return f"is behind the start of its changelog (position {position}, start {low}): records it lacks are gone"
    return None


def watermarks(settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """(low, high) offsets of each changelog partition; (0, 0) for a changelog that does not exist."""
    found: dict[tuple[str, int], tuple[int, int]] = {}
    consumer = Consumer(settings.kafka_config() | {"group.id": f"{settings.app_id}-state-check"})
    try:
        existing = consumer.list_topics(timeout=30).topics
        for topic, partition in tps:
            if topic in existing and partition in existing[topic].partitions:
                found[(topic, partition)] = _watermarks(consumer, TopicPartition(topic, partition))
            else:
                found[(topic, partition)] = (0, 0)
    finally:
        consumer.close()
    return found


def _watermarks(consumer: Consumer, tp: TopicPartition, patience: float = 60.0) -> tuple[int, int]:
    """A partition's (low, high), waiting out a topic just created or deleted (no leader yet, or gone)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, 30)
            return low, high
        except KafkaException as error:
            code = error.args[0].code()
            if code == KafkaError.UNKNOWN_TOPIC_OR_PART and time.monotonic() > deadline:
                return 0, 0
            if code not in SETTLING or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
