"""Driving visits through a running topology, as the summit and the camera would.

Used by `make demo`, the tests, and the command-line chores: it sends nextVisit, raws and
cancellations like the observatory does, and reads results, summaries and dead letters back
(committed records only, as an exactly-once reader must).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from confluent_kafka import Consumer, Producer, TopicPartition

from streams.clock import tai_now
from streams.config import Settings
from streams.serde.base import Record
from streams.serde.codec import Codec
from streams.serde.records import (
    CcdResult,
    DeadLetter,
    NextVisit,
    NextVisitCanceled,
    RawImageAvailable,
    VisitSummary,
)
from streams.serde.registry import ConfluentRegistry
from topology.keys import detector_partition
from topology.topics import declare

GROUP_PREFIX = "reader-"
"""`Visits` reads the result topics in a throw-away consumer group beginning with this."""


def exposure_id(sequence: int) -> int:
    """An exposure id of the night 2026-11-25: YYYYMMDD * 100000 + sequence number."""
    return 20261125 * 100_000 + sequence


@dataclass(frozen=True)
class Received:
    """One record read back: key, value, and its Kafka timestamp (UTC Unix seconds)."""

    key: bytes
    value: bytes
    timestamp: float


@dataclass
class Visits:
    """Sends nextVisit, raws and cancellations; reads results, summaries and dead letters."""

    settings: Settings
    survey: str = "BLOCK-365"
    """Survey of the visits sent, unless a call names another."""
    patience: float = 30.0
    """How long a send waits for the broker's acknowledgement [s]; longer rides out a broker outage."""

    def __post_init__(self) -> None:
        self.topics = declare(self.settings)
        self.codec = Codec(ConfluentRegistry(self.settings.registry_config()))
        self.producer = Producer(self.settings.kafka_config() | {"enable.idempotence": True, "linger.ms": 2})

    def _send(self, topic: str, value: bytes, partition: int | None = None) -> None:
        if partition is None:
            self.producer.produce(topic, value=value)
        else:
            self.producer.produce(topic, value=value, partition=partition)

    def flush(self) -> None:
        """Wait until everything sent is acknowledged.

        Raises:
            TimeoutError: the broker has not acknowledged everything within `patience`.
        """
        if (left := self.producer.flush(self.patience)) != 0:
            raise TimeoutError(f"{left} messages not acknowledged by the broker after {self.patience:.0f} s")

    def next_visit(self, group: str, *, instrument: str = "LSSTComCam", nimages: int = 2, duration: float = 1.0,
                   survey: str | None = None, **fields: object) -> NextVisit:
        """Announce a visit now."""
        now = tai_now()
        visit = NextVisit(salIndex=1, private_sndStamp=now, private_kafkaStamp=now, private_identity="ScriptQueue:1",
                          groupId=group, coordinateSystem=2, position=[10.0, -5.0], rotationSystem=2,
                          duration=duration, nimages=nimages, instrument=instrument, survey=survey or self.survey)
        visit = replace(visit, **fields)  # type: ignore[arg-type]
        self._send(self.topics.next_visit.name, self.codec.encode(self.topics.next_visit.name, visit))
        self.flush()
        return visit

    def cancel(self, group: str) -> float:
        """Cancel a visit; return when (TAI)."""
        now = tai_now()
        cancel = NextVisitCanceled(salIndex=1, private_sndStamp=now, groupId=group)
        topic = self.topics.next_visit_canceled.name
        self._send(topic, self.codec.encode(topic, cancel))
        self.flush()
        return now

    def raw(self, group: str, detector: int, snap: int, sequence: int, *,
            instrument: str = "LSSTComCam") -> RawImageAvailable:
        """The arrival of one raw, under the data root."""
        return RawImageAvailable(instrument=instrument, group_id=group, detector=detector, snap=snap,
                                 exposure_id=exposure_id(sequence), size_bytes=1000,
                                 uri=f"file://{self.settings.data_root}/raw/{group}/{sequence}/{detector}.fits",
                                 arrival_time=tai_now())

    def raws(self, arrivals: Sequence[RawImageAvailable]) -> None:
        """Send raw arrivals to their detectors' partitions, as the storage connector does."""
        spec = self.topics.raw_image_available
        for arrival in arrivals:
            self._send(spec.name, self.codec.encode(spec.name, arrival),
                       detector_partition(arrival.detector, spec.partitions))
        self.flush()

    def send_bytes(self, topic: str, values: Sequence[bytes], partition: int = 0) -> None:
        """Send raw bytes (bad input)."""
        for value in values:
            self._send(topic, value, partition)
        self.flush()

    def read(self, topic: str, count: int, timeout: float = 90.0, settle: float = 2.0) -> list[bytes]:
        """Every committed value of `topic`, once `count` arrived and nothing more came for `settle` s."""
        return [received.value for received in self.receive(topic, count, timeout, settle)]

    def receive(self, topic: str, count: int, timeout: float = 90.0, settle: float = 2.0) -> list[Received]:
        """Like `read`, with each record's key and Kafka timestamp (what benchmarks time)."""
        consumer = Consumer(self.settings.kafka_config() | {
            "group.id": f"{GROUP_PREFIX}{uuid.uuid4().hex}", "enable.auto.commit": False,
            "isolation.level": "read_committed"})
        try:
            partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
            consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
            received: list[Received] = []
            deadline = time.monotonic() + timeout
            quiet_since = time.monotonic()
            while time.monotonic() < deadline:
                messages = consumer.consume(1000, 0.2)
                for message in messages:
                    if message.error() is None:
                        received.append(Received(message.key() or b"", message.value() or b"",
                                                 message.timestamp()[1] / 1000.0))
                        quiet_since = time.monotonic()
                if not messages and len(received) >= count and time.monotonic() - quiet_since >= settle:
                    break
            return received
        finally:
            consumer.close()

    def results(self, count: int, **kwargs: float) -> list[CcdResult]:
        """The per-CCD results (waits for `count`)."""
        return [self.codec.decode(v, CcdResult) for v in self.read(self.topics.ccd_result.name, count, **kwargs)]

    def summaries(self, count: int, **kwargs: float) -> list[VisitSummary]:
        """The visit summaries (waits for `count`)."""
        return [self.codec.decode(v, VisitSummary) for v in self.read(self.topics.visit_summary.name, count, **kwargs)]

    def dead_letters(self, count: int, **kwargs: float) -> list[DeadLetter]:
        """The dead letters (waits for `count`)."""
        return [self.codec.decode(v, DeadLetter) for v in self.read(self.topics.dead_letter.name, count, **kwargs)]

    def encode(self, topic: str, record: Record) -> bytes:
        """Framed Avro for `topic`."""
        return self.codec.encode(topic, record)


def by_group(records: Sequence[CcdResult | VisitSummary], group: str) -> list:  # type: ignore[type-arg]
    """The records of one group."""
    return [r for r in records if r.group_id == group]
