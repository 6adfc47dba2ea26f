"""Sending records from tools (demo, command-line chores, the simulated night), not from agents."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message, Producer

from streams.config import Settings
from streams.errors import PromptStreamsError


class SendError(PromptStreamsError):
    """The broker did not acknowledge a record."""


def send_values(settings: Settings, topic: str, values: list[tuple[bytes | None, bytes]],
                partition: int | None = None) -> None:
    """Produce (key, value) pairs idempotently and wait until the broker acknowledged them all.

    Raises:
        SendError: a record was not acknowledged within 30 s.
    """
    producer = Producer(settings.kafka_config() | {"enable.idempotence": True, "linger.ms": 5})
    failures: list[str] = []

    def delivered(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(str(error))

    for key, value in values:
        if partition is None:
            producer.produce(topic, value=value, key=key, on_delivery=delivered)
        else:
            producer.produce(topic, value=value, key=key, partition=partition, on_delivery=delivered)
    if producer.flush(30) or failures:
        raise SendError(f"{topic}: not acknowledged: {failures or 'timed out'}")
