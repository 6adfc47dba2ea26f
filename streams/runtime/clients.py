"""Where the engine's Kafka clients come from: confluent-kafka's on a real broker, or a test driver's fakes.

The engine asks its `Clients` for every consumer and producer it makes (the group's consumer, the
transactional producer, the changelog reader) and for the changelog watermarks. `KafkaClients` gives
confluent-kafka's own; `streams.runtime.driver` gives clients of an in-memory broker. The two
protocols name just the calls the engine makes, which is all a fake has to implement.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from streams.config import Settings
from streams.runtime import local_state

RebalanceCallback = Callable[[Any, list[TopicPartition]], None]
DeliveryCallback = Callable[[KafkaError | None, Message], None]


class ConsumerApi(Protocol):
    """The consumer calls the engine makes (`confluent_kafka.Consumer` has them all)."""

    def subscribe(self, topics: list[str], on_assign: RebalanceCallback | None = None,
                  on_revoke: RebalanceCallback | None = None, on_lost: RebalanceCallback | None = None) -> None:
        """Join the group; partitions come through `on_assign` during a later `consume` or `poll`."""

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        """Up to `num_messages` messages (or errors) of the assigned partitions."""

    def poll(self, timeout: float = -1) -> Message | None:
        """One message (or error), or None."""

    def assign(self, partitions: list[TopicPartition]) -> None:
        """Read these partitions from these offsets, outside any group."""

    def assignment(self) -> list[TopicPartition]:
        """The partitions being read."""

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The next offset to be consumed of each partition (negative: none yet)."""

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        """The group's committed offset of each partition (negative: none)."""

    def seek(self, partition: TopicPartition) -> None:
        """Consume this partition from this offset next."""

    def get_watermark_offsets(self, partition: TopicPartition, timeout: float = -1,
                              cached: bool = False) -> tuple[int, int]:
        """The partition's (low, high) offsets."""

    def consumer_group_metadata(self) -> Any:
        """What `send_offsets_to_transaction` needs to commit offsets for this consumer's group."""

    def close(self) -> None:
        """Leave the group (revoking the partitions)."""


class ProducerApi(Protocol):
    """The transactional producer calls the engine makes (`confluent_kafka.Producer` has them all)."""

    def init_transactions(self, timeout: float = -1) -> None:
        """Take over the transactional id: fence its previous producer and abort what it left open."""

    def begin_transaction(self) -> None:
        """Start a transaction."""

    def produce(self, topic: str, *, value: bytes | None = None, key: bytes | None = None, partition: int = -1,
                on_delivery: DeliveryCallback | None = None) -> None:
        """Send a record within the transaction (partition -1: by the partitioner, from the key); `BufferError`
        when the local queue is full."""

    def poll(self, timeout: float = -1) -> int:
        """Serve delivery reports, which frees room in the local queue."""

    def send_offsets_to_transaction(self, positions: list[TopicPartition], group_metadata: Any,
                                    timeout: float = -1) -> None:
        """Commit the group's consumed offsets with the transaction."""

    def commit_transaction(self, timeout: float = -1) -> None:
        """Make everything the transaction produced visible, at once."""

    def abort_transaction(self, timeout: float = -1) -> None:
        """Drop everything the transaction produced."""


class Clients(Protocol):
    """Makes the engine's clients and answers its one metadata question."""

    def consumer(self, config: dict[str, Any]) -> ConsumerApi:
        """A consumer with this librdkafka configuration."""

    def producer(self, config: dict[str, Any]) -> ProducerApi:
        """A producer with this librdkafka configuration."""

    def watermarks(self, settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """(low, high) offsets of each changelog partition; (0, 0) for a changelog that does not exist."""


class KafkaClients:
    """confluent-kafka's clients, on the brokers their configuration names: what runs in production."""

    def consumer(self, config: dict[str, Any]) -> ConsumerApi:
        """A `confluent_kafka.Consumer`."""
        return Consumer(config)

    def producer(self, config: dict[str, Any]) -> ProducerApi:
        """A `confluent_kafka.Producer`."""
        return Producer(config)

    def watermarks(self, settings: Settings, tps: list[tuple[str, int]]) -> dict[tuple[str, int], tuple[int, int]]:
        """Asked of the brokers (`streams.runtime.local_state.watermarks`)."""
        return local_state.watermarks(settings, tps)
