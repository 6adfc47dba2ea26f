"""Every table of Prompt Streams: its key, value record, partitions and changelog.

Changelog names are derived, as Kafka Streams does: `<application id>-<table>-changelog`, always
compacted. `streams.runtime.admin` creates them all before a worker consumes (Faust would create its own
tables' changelogs itself, too late for a second worker's metadata).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from topology.deployment import Deployment
from topology.topics import Partitioning, Role, TopicSpec


@dataclass(frozen=True)
class TableSpec:
    """One table, declared once."""

    name: str
    schema: str
    """Its rows' record, by its schema's name."""
    partitions: int
    partitioning: Partitioning
    key: str
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
    alerted: TableSpec

    def all(self) -> list[TableSpec]:
        """Every table."""
        return [getattr(self, item.name) for item in fields(self)]


def declare_tables(settings: Deployment) -> Tables:
    """The tables for these settings."""
    n = settings.detector_partitions
    return Tables(
        visits=TableSpec("visits", "visit_expected", 1, Partitioning.SINGLE, "group id",
                         "Visits fanned out, so nextVisitCanceled can reach their detectors."),
        detectors=TableSpec("detectors", "detector_progress", n, Partitioning.DETECTOR, "instrument/group/detector",
                            "Each detector's progress; also the presence table for early raws."),
        gather=TableSpec("gather", "visit_progress", n, Partitioning.VISIT, "instrument/group",
                         "Each visit's progress: expected detectors, results so far, summary sent."),
        jobs=TableSpec("jobs", "ocps_job", 1, Partitioning.SINGLE, "job id",
                       "Each OCPS job's state: the single writer's copy of the ocps-jobs topic."),
        alerted=TableSpec("alerted", "ccd_result", n, Partitioning.VISIT, "instrument/group/detector",
                          "Detectors whose alerts were sent: each one's first successful outcome."),
    )


def changelog_topic(settings: Deployment, table: TableSpec) -> TopicSpec:
    """A table's compacted changelog topic."""
    return TopicSpec(f"{table.name}_changelog", table.changelog(settings.app_id), table.schema, table.partitions,
                     table.partitioning, table.key, Role.INTERNAL, f"Changelog of the {table.name} table.",
                     {"cleanup.policy": "compact"})


def gather_changelog(settings: Deployment) -> TopicSpec:
    """The gather table's changelog, which the transactional gather writes itself."""
    return changelog_topic(settings, declare_tables(settings).gather)


def changelogs(settings: Deployment) -> list[TopicSpec]:
    """Every table's changelog. A worker creates them before it consumes: Faust would create its tables'
    own later, and a worker that cached the cluster's metadata before then fails its first events
    (faust's PartitionsMismatch: "changelog topic has 0 partitions") until the metadata is refreshed."""
    return [changelog_topic(settings, table) for table in declare_tables(settings).all()]
