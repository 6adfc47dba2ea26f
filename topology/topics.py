"""Every topic of Prompt Streams: name, key, record schema, partitions, retention.

Declared from the settings (topic names and partition counts are configurable) and created at
start-up by `streams.admin.ensure_topics`, never by the broker's auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from streams.config import Settings
from streams.records import (
    CcdResult,
    DeadLetter,
    Metric,
    NextVisit,
    NextVisitCanceled,
    RawImageAvailable,
    Record,
    VisitSummary,
)

DAY_MS = 24 * 3600 * 1000


class Role(StrEnum):
    """Where a topic stands in the flow."""

    INPUT = "input"
    """Written by the observatory or by users: also accepts JSON lines (kcat -P)."""
    OUTPUT = "output"
    """Written by Prompt Streams for others to read."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic, declared once."""

    id: str
    name: str
    record: type[Record]
    partitions: int
    key: str
    role: Role
    doc: str
    config: dict[str, str] = field(default_factory=dict)

    @property
    def accepts_json(self) -> bool:
        """Input topics take a JSON object as well as Confluent-framed Avro."""
        return self.role is Role.INPUT


@dataclass(frozen=True)
class Topics:
    """The topics of one deployment (one set of settings)."""

    next_visit: TopicSpec
    next_visit_canceled: TopicSpec
    raw_image_available: TopicSpec
    ccd_result: TopicSpec
    visit_summary: TopicSpec
    metrics: TopicSpec
    dead_letter: TopicSpec

    def all(self) -> list[TopicSpec]:
        """Every topic, in flow order."""
        return [self.next_visit, self.next_visit_canceled, self.raw_image_available,
                self.ccd_result, self.visit_summary, self.metrics, self.dead_letter]


def declare(settings: Settings) -> Topics:
    """The topics for these settings."""
    per_detector = settings.detector_partitions
    keep = {"retention.ms": str(7 * DAY_MS)}
    keep_long = {"retention.ms": str(30 * DAY_MS)}
    return Topics(
        next_visit=TopicSpec(
            "next_visit", settings.next_visit_topic, NextVisit, 1, "SAL key string", Role.INPUT,
            "SAL nextVisit events from the ScriptQueue, unchanged.", keep),
        next_visit_canceled=TopicSpec(
            "next_visit_canceled", settings.next_visit_canceled_topic, NextVisitCanceled, 1,
            "SAL key string", Role.INPUT, "SAL nextVisitCanceled events.", keep),
        raw_image_available=TopicSpec(
            "raw_image_available", settings.topic("raw-image-available"), RawImageAvailable,
            per_detector, "instrument/group/detector/snap", Role.INPUT,
            "One record per raw image that landed in storage.", keep),
        ccd_result=TopicSpec(
            "ccd_result", settings.topic("ccd-result"), CcdResult, per_detector,
            "instrument/group/detector", Role.OUTPUT, "Exactly one result per expected detector.",
            keep_long),
        visit_summary=TopicSpec(
            "visit_summary", settings.topic("visit-summary"), VisitSummary, per_detector,
            "instrument/group", Role.OUTPUT, "Exactly one summary per visit.", keep_long),
        metrics=TopicSpec(
            "metrics", settings.topic("metrics"), Metric, per_detector, "instrument/group",
            Role.OUTPUT, "Per-CCD and per-visit metrics, for the Chile bridge.", keep_long),
        dead_letter=TopicSpec(
            "dead_letter", settings.topic("dead-letter"), DeadLetter, 1, "original key",
            Role.OUTPUT, "Inputs that could not be used, with the reason.", keep_long),
    )


def describe(topics: Topics) -> str:
    """A table of the topics, for people."""
    rows = [("topic", "record", "partitions", "key", "role")]
    rows += [(t.name, t.record.SCHEMA, str(t.partitions), t.key, t.role.value) for t in topics.all()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
