"""Every table of Prompt Streams: its key, value record, partitions and changelog.

Changelog names are derived, as Kafka Streams does: `<application id>-<table>-changelog`, always
compacted. Faust creates the changelogs of its own tables; `streams.admin` creates the gather's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from streams.config import Settings
from streams.record import Record
from streams.records import DetectorProgress, OcpsJob, VisitExpected, VisitProgress
from topology.topics import Partitioning, Role, TopicSpec


@dataclass(frozen=True)
class TableSpec:
    """One table, declared once."""

    name: str
    value: type[Record]
    partitions: int
    partitioning: Partitioning
    key: str
    written_by: str
    doc: str

    def changelog(self, app_id: str) -> str:
        """Name of the compacted topic that makes the table durable."""
        return f"{app_id}-{self.name}-changelog"


@dataclass(frozen=True)
class Tables:
    """The tables of one deployment."""

    visits: TableSpec
    detectors: TableSpec
    gather: TableSpec
    jobs: TableSpec

    def all(self) -> list[TableSpec]:
        """Every table."""
        return [getattr(self, item.name) for item in fields(self)]


def declare_tables(settings: Settings) -> Tables:
    """The tables for these settings."""
    n = settings.detector_partitions
    return Tables(
        visits=TableSpec("visits", VisitExpected, 1, Partitioning.SINGLE, "group id", "sal agent",
                         "Visits fanned out, so nextVisitCanceled can reach their detectors."),
        detectors=TableSpec("detectors", DetectorProgress, n, Partitioning.DETECTOR, "instrument/group/detector",
                            "detector agent", "Each detector's progress; also the presence table for early raws."),
        gather=TableSpec("gather", VisitProgress, n, Partitioning.VISIT, "instrument/group", "gather processor",
                         "Each visit's progress: expected detectors, results so far, summary sent."),
        jobs=TableSpec("jobs", OcpsJob, 1, Partitioning.SINGLE, "job id", "ocps agent",
                       "Each OCPS job's state: the single writer's copy of the ocps-jobs topic."),
    )


def gather_changelog(settings: Settings) -> TopicSpec:
    """The gather table's changelog, which the transactional gather writes itself."""
    table = declare_tables(settings).gather
    return TopicSpec("gather_changelog", table.changelog(settings.app_id), table.value, table.partitions,
                     table.partitioning, table.key, Role.INTERNAL, "Changelog of the gather table.",
                     {"cleanup.policy": "compact"})
