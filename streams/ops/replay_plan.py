"""Replay for reprocessing: a range of the input topics run through the topology again, beside live.

The replay copies the selected nextVisit, nextVisitCanceled and raw-image-available records,
byte for byte and in their original order, into input topics of its own (`<name>.*`), and workers
started with the replay's settings process them: their own application id (so their own consumer
groups, tables and changelogs, transactional ids and RocksDB folders), their own output topics and
their own output root. Live topics, tables and outputs are only read, never written.

The unit of a replay is the visit: a range of nextVisit records (by time or by offset), filtered
by instrument and group, selects visits; their raws and cancellations are taken from the window
in which they can matter (from `2 x duration + image timeout` before the first selected nextVisit
to as long after the last), optionally only some detectors' (the others are disabled in the
replay's instrument file, so the visit does not wait for them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from streams.config import Settings
from streams.core.instruments import Instrument
from streams.errors import NonRetriableError
from streams.serde.records import NextVisit, NextVisitCanceled, RawImageAvailable
from topology.keys import detector_partition

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,100}$")
NO_EXPIRATION = 10 * 365 * 24 * 3600.0
"""A replayed nextVisit is as old as its night: the replay's workers must not drop it as expired."""


class ReplayError(NonRetriableError, ValueError):
    """The replay cannot be done as asked."""


@dataclass(frozen=True)
class Event:
    """One input record: where it was, when, its bytes, and what it decoded to."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)
    record: NextVisit | NextVisitCanceled | RawImageAvailable | None = None


@dataclass(frozen=True)
class Filters:
    """Which visits and detectors to replay (empty: all)."""

    instruments: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    detectors: frozenset[int] = frozenset()

    def visit(self, visit: NextVisit) -> bool:
        """Whether the filters keep this nextVisit."""
        return ((not self.instruments or visit.instrument in self.instruments)
                and (not self.groups or visit.groupId in self.groups))

    def detector(self, detector: int) -> bool:
        """Whether the filters keep this detector's raws."""
        return not self.detectors or detector in self.detectors


@dataclass(frozen=True)
class Selection:
    """The replayed events, in the order to send them, and the visits they make."""

    events: list[Event]
    visits: frozenset[tuple[str, str]]
    window_ms: tuple[int, int]


def replay_settings(live: Settings, name: str, instruments_file: str | None = None) -> Settings:
    """The settings of a replay called `name`: everything it writes is its own."""
    if not NAME.match(name):
        raise ReplayError(f"replay name {name!r}: letters, digits, '.', '_' and '-' only")
    if name in (live.app_id, live.topic_prefix):
        raise ReplayError(f"replay name {name!r} is the live application id or topic prefix")
    return replace(live, app_id=name, topic_prefix=name, next_visit_topic=f"{name}.{live.next_visit_topic}",
                   next_visit_canceled_topic=f"{name}.{live.next_visit_canceled_topic}",
                   alert_topic=f"{name}.{live.alert_topic}",
                   apdb_config=str(Path(live.output_root) / "replays" / name / "apdb" / "apdb.yaml"),
                   output_root=str(Path(live.output_root) / "replays" / name), message_expiration=NO_EXPIRATION,
                   worker_name="", instruments_file=instruments_file or live.instruments_file)


def window(visits: Sequence[Event], image_timeout: float) -> tuple[int, int]:
    """The Kafka-time window [start, end) in which the selected visits' raws and cancellations can matter."""
    if not visits:
        raise ReplayError("no nextVisit in the range matches the filters")
    margin_ms = int(1000 * (max(2 * e.record.duration for e in visits if isinstance(e.record, NextVisit))
                            + image_timeout))
    return (min(e.timestamp_ms for e in visits) - margin_ms, max(e.timestamp_ms for e in visits) + margin_ms + 1)


def select(next_visits: Iterable[Event], others: Iterable[Event], filters: Filters, image_timeout: float,
           raw_partitions: int) -> Selection:
    """The events to replay: the nextVisits the filters keep, and those visits' raws and cancellations."""
    visits = [e for e in next_visits if isinstance(e.record, NextVisit) and filters.visit(e.record)]
    start, end = window(visits, image_timeout)
    keys = frozenset((e.record.instrument, e.record.groupId) for e in visits if isinstance(e.record, NextVisit))
    groups = {group for _, group in keys}

    def wanted(event: Event) -> bool:
        record = event.record
        if isinstance(record, RawImageAvailable):
            # A raw written to another partition was re-sent by the live worker to its detector's partition:
            # that copy is the one to replay (the replay's worker would otherwise get it twice).
            return ((record.instrument, record.group_id) in keys and filters.detector(record.detector)
                    and event.partition == detector_partition(record.detector, raw_partitions))
        return isinstance(record, NextVisitCanceled) and record.groupId in groups

    kept = [*visits, *(e for e in others if start <= e.timestamp_ms < end and wanted(e))]
    kept.sort(key=lambda e: (e.timestamp_ms, not isinstance(e.record, NextVisit), e.topic, e.partition, e.offset))
    return Selection(kept, keys, (start, end))


def instruments_toml(instruments: dict[str, Instrument], detectors: frozenset[int]) -> str:
    """An instrument file where only `detectors` are active (so visits fan out to those alone)."""
    lines = []
    for instrument in instruments.values():
        disabled = sorted(instrument.disabled | (instrument.detectors - detectors))
        lines += [f"[{instrument.name}]", f"detectors = {sorted(instrument.detectors)}",
                  f"disabled = {disabled}", ""]
    return "\n".join(lines)


def pace(events: Sequence[Event], speed: float) -> list[float]:
    """When to send each event, in seconds from the start: the original spacing divided by `speed` (0: at once)."""
    if speed <= 0 or not events:
        return [0.0] * len(events)
    first = events[0].timestamp_ms
    return [(e.timestamp_ms - first) / 1000.0 / speed for e in events]


@dataclass
class Report:
    """What a replay did."""

    events: dict[str, int]
    visits_selected: int
    visits_completed: int
    seconds: float
    incomplete: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The final report, for people."""
        copied = ", ".join(f"{topic} {n}" for topic, n in self.events.items())
        lines = [f"events replayed: {sum(self.events.values())} ({copied})",
                 f"visits completed: {self.visits_completed} of {self.visits_selected}",
                 f"time taken: {self.seconds:.1f} s"]
        if self.incomplete:
            lines.append(f"no summary yet for: {', '.join(self.incomplete)}")
        return "\n".join(lines)

