"""Standby copies: the table partitions a worker does not own, kept warm from their changelogs.

When a worker dies, the one that takes its partitions over restores them from its local copy's
checkpoint onwards (`engine._restore`): with a standby that followed the changelog, that is nothing
or a few records, not the whole changelog, so a takeover costs seconds of the visit's budget at
most. With `standby_replicas` above 0, each worker follows every partition of a processor's table
that it does not own (with two workers, exactly one standby per partition).

A copy is only ever written with committed changelog records (`read_committed`) and the offset
they reach, as the active one is, so the checks of `streams.runtime.local_state` hold for it too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from confluent_kafka import TopicPartition

from streams.config import Settings
from streams.observability import logs
from streams.runtime import local_state
from streams.runtime.clients import Clients
from streams.runtime.store import PartitionStore

log = logs.events(__name__)
BATCH = 1000


class Standby:
    """Follows the changelog partitions this worker does not own into their local stores."""

    def __init__(self, settings: Settings, clients: Clients, group: str, changelog: str,
                 path_of: Callable[[int], Path]) -> None:
        self.settings = settings
        self.clients = clients
        self.changelog = changelog
        self.path_of = path_of
        self.stores: dict[int, PartitionStore] = {}
        self._consumer = clients.consumer(settings.kafka_config() | {
            "group.id": f"{group}-standby", "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })

    def follow(self, partitions: set[int]) -> None:
        """Keep exactly these partitions warm (a store is opened for a new one, and closed for one owned now)."""
        for partition in set(self.stores) - partitions:
            self.stores.pop(partition).close()
        new = sorted(partitions - set(self.stores))
        if new:
            marks = self.clients.watermarks(self.settings, [(self.changelog, p) for p in new])
            for partition in new:
                store = PartitionStore(self.path_of(partition))
                if local_state.invalid(store.checkpoint, *marks[(self.changelog, partition)]) is not None:
                    store.clear()
                self.stores[partition] = store
        self._consumer.assign([TopicPartition(self.changelog, p, store.checkpoint)
                               for p, store in sorted(self.stores.items())])
        if new:
            log.info("standby copies", changelog=self.changelog, partitions=sorted(self.stores))

    def release(self, partitions: set[int]) -> None:
        """Close the copies of partitions this worker now owns, so the processor can open them."""
        self.follow(set(self.stores) - partitions)

    def poll(self, timeout: float = 0.0) -> int:
        """Apply what the changelogs committed since the last poll; how many records."""
        if not self.stores:
            return 0
        messages = self._consumer.consume(BATCH, timeout)
        changes: dict[int, dict[bytes, bytes | None]] = {}
        reached: dict[int, int] = {}
        for message in messages:
            partition, offset = message.partition(), message.offset()
            if message.error() is not None or partition not in self.stores or partition is None or offset is None:
                continue
            changes.setdefault(partition, {})[message.key() or b""] = message.value()
            reached[partition] = offset + 1
        for partition, rows in changes.items():
            self.stores[partition].apply(rows, reached[partition])
        return len(messages)

    def close(self) -> None:
        """Close every copy and the consumer."""
        for store in self.stores.values():
            store.close()
        self.stores.clear()
        self._consumer.close()
