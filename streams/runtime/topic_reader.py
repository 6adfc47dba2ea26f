"""Reading topics from a start offset to their end, as the command-line tools and the replay do.

Reads are `read_committed` (the gather's outputs are transactional) and never join a consumer
group or commit offsets, so inspecting a deployment leaves no trace in it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streams.config import Settings
from streams.errors import NonRetriableError

TIMEOUT_S = 60.0
M = TypeVar("M")


class TopicNotFoundError(NonRetriableError):
    """The topic does not exist on the cluster."""


GROUP_PREFIX = "prompt-streams-reader-"
"""A reader's throw-away consumer group begins with this (it reads by assignment, but the coordinator is still
looked up for its group, which the ACLs must allow)."""
JOB_VIEW_GROUP_PREFIX = "uws-view-"
"""Each worker's OCPS job view (`streams.web.uws`) reads the job topic in a group of its own beginning with this."""


def reader(settings: Settings) -> Consumer:
    """A consumer that reads committed records, reports each partition's end, and never commits."""
    return Consumer(settings.kafka_config() | {
        "group.id": f"{GROUP_PREFIX}{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": "read_committed", "enable.partition.eof": True})


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    """The partition ids of `topic`."""
    found = consumer.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if found is None or found.error is not None or not found.partitions:
        raise TopicNotFoundError(f"topic {topic} does not exist on this cluster")
    return sorted(found.partitions)


def offsets(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(first, end) offsets of one partition."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=TIMEOUT_S)
    return int(low), int(high)


def read_range(settings: Settings, ranges: Iterable[tuple[str, int, int, int]],
               timeout: float = TIMEOUT_S) -> Iterator[Message]:
    """The committed records of each (topic, partition, start, end) range, partition by partition in order."""
    wanted = [item for item in ranges if item[3] > item[2]]
    if not wanted:
        return
    consumer = reader(settings)
    try:
        consumer.assign([TopicPartition(topic, partition, start) for topic, partition, start, _ in wanted])
        pending = {(topic, partition): end for topic, partition, _, end in wanted}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {sorted(pending)}: not at the end after {timeout} s")
            message = consumer.poll(0.2)
            if message is None:
                at = consumer.position([TopicPartition(topic, partition) for topic, partition in pending])
                for tp in at:
                    if tp.offset >= pending[(tp.topic, tp.partition)]:  # the end was a transaction marker
                        del pending[(tp.topic, tp.partition)]
                continue
            where = (message.topic(), message.partition())
            offset = message.offset() or 0
            if where not in pending:
                continue
            error = message.error()
            if error is not None and error.code() == KafkaError._PARTITION_EOF:
                if offset >= pending[where]:
                    del pending[where]
                continue
            if error is not None:
                raise KafkaException(error)
            deadline = time.monotonic() + timeout
            if offset < pending[where]:
                yield message
            if offset + 1 >= pending[where]:
                del pending[where]
    finally:
        consumer.close()


def last_of_each(read: Callable[[Mapping[int, int]], Mapping[int, list[M]]], bounds: Mapping[int, tuple[int, int]],
                 last: int) -> dict[int, list[M]]:
    """The last `last` records of each partition, given its (first, end) offsets and `read`, which reads each
    partition from a start offset to its end.

    Offsets are not records: a transactional topic's commit markers (and aborted records) take offsets too, so
    `last` offsets back may hold fewer records. A partition short of them is read again from twice as far
    back, until it gives `last` records or is read from its first offset.
    """
    if last < 1:
        return {}
    spans = dict.fromkeys(bounds, last)
    kept: dict[int, list[M]] = {}
    while spans:
        starts = {p: max(bounds[p][0], bounds[p][1] - span) for p, span in spans.items()}
        found = read(starts)
        for partition, start in starts.items():
            records = found.get(partition, [])
            if len(records) >= last or start <= bounds[partition][0]:
                kept[partition] = records[-last:]
                del spans[partition]
            else:
                spans[partition] *= 2
    return kept


def read_to_end(settings: Settings, topic: str, partitions: Iterable[int] | None = None,
                last: int | None = None) -> list[Message]:
    """Every committed record of `topic` (or of some partitions, or the `last` ones of each) up to its end now."""
    consumer = reader(settings)
    try:
        chosen = partitions_of(consumer, topic) if partitions is None else list(partitions)
        bounds = {partition: offsets(consumer, topic, partition) for partition in chosen}
    finally:
        consumer.close()

    def read(starts: Mapping[int, int]) -> dict[int, list[Message]]:
        found: dict[int, list[Message]] = {partition: [] for partition in starts}
        for message in read_range(settings, [(topic, p, start, bounds[p][1]) for p, start in starts.items()]):
            found[message.partition() or 0].append(message)
        return found

    if last is None:
        return [m for records in read({p: low for p, (low, _) in bounds.items()}).values() for m in records]
    return [m for records in last_of_each(read, bounds, last).values() for m in records]

