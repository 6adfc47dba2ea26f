"""A worker's local tables are a cache of their changelogs: checked against them before being trusted.

Each table partition on disk knows the changelog position it reflects. A position the changelog
cannot have (past its end, because the topics were deleted or recreated while the data directory
was kept; or before its start, because records it lacks are gone) means the copy is not a prefix
of the changelog, so it is discarded and the partition restored from the changelog, as Kafka
Streams does with a corrupted task. A copy behind the changelog is simply caught up; an empty or
missing data directory is restored in full.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from rocksdict import AccessType, Options, Rdict

from streams.config import Settings

log = logging.getLogger(__name__)
FAUST_OFFSET_KEY = b"__faust\0offset__"
"""Where faust's RocksDB store keeps the last changelog offset applied to a partition."""
SETTLING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC)
"""Answers about a partition whose topic is being created or deleted: ask again."""


@dataclass(frozen=True)
class LocalPartition:
    """One table partition on disk and the changelog position it reflects."""

    path: Path
    changelog: str
    partition: int
    position: int
    """The next changelog offset the local copy has not applied."""


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


def faust_partitions(table_dir: Path, changelogs: dict[str, str]) -> list[LocalPartition]:
    """The partitions of faust's RocksDB tables in `table_dir` (`<table>-<partition>.db`)."""
    found = []
    for table, changelog in changelogs.items():
        for path in sorted(table_dir.glob(f"{table}-*.db")):
            partition = path.name.removesuffix(".db").rpartition("-")[2]
            if not partition.isdigit():
                continue
            db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
            try:
                offset = db.get(FAUST_OFFSET_KEY)
            finally:
                db.close()
            position = int(offset) + 1 if offset is not None else 0
            found.append(LocalPartition(path, changelog, int(partition), position))
    return found


def discard_invalid(settings: Settings, partitions: list[LocalPartition]) -> list[LocalPartition]:
    """Delete the local partitions their changelogs cannot catch up; return them."""
    marks = watermarks(settings, [(p.changelog, p.partition) for p in partitions])
    discarded = []
    for local in partitions:
        reason = invalid(local.position, *marks[(local.changelog, local.partition)])
        if reason is not None:
            log.warning("local state %s %s: discarded, to be restored from %s[%d]", local.path, reason,
                        local.changelog, local.partition)
            shutil.rmtree(local.path)
            discarded.append(local)
    return discarded
