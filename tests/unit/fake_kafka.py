"""Stand-ins for what a processor meets of Kafka, so its `apply` runs in a unit test: a schema registry in memory
and a consumed message with confluent-kafka's accessors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from streams.runtime.driver import MemoryRegistry
from streams.runtime.engine import TransactionalProcessor
from streams.serde.codec import Codec

P = TypeVar("P", bound=TransactionalProcessor[Any])


@dataclass
class FakeMessage:
    """A consumed message, read through confluent-kafka's `Message` accessors."""

    _topic: str
    _value: bytes | None
    _key: bytes | None = None
    _partition: int = 0
    _offset: int = 0

    def topic(self) -> str:
        """Its topic."""
        return self._topic

    def partition(self) -> int:
        """Its partition."""
        return self._partition

    def offset(self) -> int:
        """Its offset."""
        return self._offset

    def key(self) -> bytes | None:
        """Its key."""
        return self._key

    def value(self) -> bytes | None:
        """Its bytes."""
        return self._value

    def error(self) -> None:
        """A consumed message, not a consumer error."""
        return None


def offline(processor: P) -> P:
    """The processor with a codec on an in-memory registry (it makes no request before it runs)."""
    processor.codec = Codec(MemoryRegistry())
    return processor
