"""Worker log records reach the log-messages topic, and a storm is cut down to the rate limit."""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.config import Settings
from streams.observability import log_forwarding
from streams.runtime.admin import ensure_topics
from streams.serde.codec import Codec
from streams.serde.records import LogMessage
from streams.serde.registry import ConfluentRegistry
from topology.topics import declare


def read_all(settings: Settings, topic: str, codec: Codec) -> list[LogMessage]:
    """Every record on the one-partition topic."""
    consumer = Consumer(settings.kafka_config() | {"group.id": "log-reader", "enable.partition.eof": True})
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    found = []
    try:
        while (message := consumer.poll(10)) is not None:
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF
                break
            found.append(codec.decode(message.value(), LogMessage))
    finally:
        consumer.close()
    return found


def test_an_error_storm_is_rate_limited_and_reported(settings: Settings) -> None:
    """1000 errors at once: the burst of 5 goes out, then the rate; the next one says how many were dropped."""
    settings = replace(settings, log_forward_burst=5, log_forward_rate=4.0, worker_name="w7")
    spec = declare(settings).log_messages
    ensure_topics(settings, [spec])
    codec = Codec(ConfluentRegistry(settings.registry_config()))
    forwarder = log_forwarding.install(settings, spec, codec)
    log = logging.getLogger("streams.processors.detector")
    started = time.monotonic()
    try:
        log.info("not forwarded: below WARNING")
        for i in range(1000):
            log.error("pipeline failed on detector %d", i)
        time.sleep(0.5)
        try:
            raise ValueError("bad raw")
        except ValueError:
            log.exception("after the storm")
        elapsed = time.monotonic() - started
    finally:
        log_forwarding.uninstall(forwarder)
    records = read_all(settings, spec.name, codec)
    assert [r.message for r in records[:5]] == [f"pipeline failed on detector {i}" for i in range(5)]
    last = records[-1]
    assert len(records) <= 5 + 4.0 * elapsed + 1, "at most the burst plus the rate over the time taken"
    assert last.message == "after the storm" and "ValueError: bad raw" in last.traceback
    # every error is either forwarded or counted as suppressed by the next one forwarded (on a busy machine a
    # token may come back during the storm, so the count can be split over two records)
    assert sum(r.suppressed for r in records) + len(records) == 1001 and last.suppressed > 0
    assert last.worker == "w7" and last.level == logging.ERROR
    assert last.function_name == "test_an_error_storm_is_rate_limited_and_reported"
    assert abs(last.timestamp - (time.time() + 37)) < 60, "TAI"
