"""Plain confluent-kafka producing and consuming for tests: independent of the app's agents."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from streams.config import Settings


def produce(settings: Settings, topic: str, values: list[bytes], key: bytes | None = None,
            partition: int | None = None) -> None:
    """Produce `values` and wait until the broker acknowledged each one."""
    producer = Producer(settings.kafka_config() | {"enable.idempotence": True})
    errors: list[object] = []
    for value in values:
        extra = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, key=key,
                         on_delivery=lambda err, _msg: errors.append(err) if err else None, **extra)
    assert producer.flush(30) == 0 and not errors, errors


def consume(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list[Message]:
    """Read `topic` from the start of every partition until `count` records came (or fail)."""
    consumer = Consumer(settings.kafka_config() | {
        "group.id": f"test-reader-{uuid.uuid4().hex}", "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])  # 0 = from the start
        found: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(found) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                found.append(message)
        assert len(found) >= count, f"{topic}: {len(found)} of {count} records after {timeout} s"
        return found
    finally:
        consumer.close()
