"""Every topic of Prompt Streams: name, key, record schema, partitions, retention.

Declared from the settings (topic names and partition counts are configurable) and created at
start-up by `streams.runtime.admin.ensure_topics`, never by the broker's auto-creation.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from topology.deployment import Deployment
from topology.keys import detector_partition, visit_partition

DAY_MS = 24 * 3600 * 1000
ALERT_PACKET = "lsst alert packet"
"""The values of the alert stream: Rubin's official alert schema (lsst-alert-packet), Confluent-framed Avro."""
KEEP = {"retention.ms": str(7 * DAY_MS)}
KEEP_LONG = {"retention.ms": str(30 * DAY_MS)}


class Role(StrEnum):
    """Where a topic stands in the flow."""

    INPUT = "input"
    """Written by the observatory or by users: also accepts JSON lines (kcat -P)."""
    INTERNAL = "internal"
    """Written and read by Prompt Streams between its own steps."""
    OUTPUT = "output"
    """Written by Prompt Streams for others to read."""


class Partitioning(StrEnum):
    """How records are spread over partitions (see topology/keys.py)."""

    SINGLE = "single"
    DETECTOR = "detector"
    VISIT = "visit"
    KEY = "key"
    """By the hash of the record's key (the client's partitioner): the alert stream, by diaSourceId."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic, declared once."""

    id: str
    name: str
    schema: str | None
    """The Avro record of its values, by its schema's name (`schemas/<schema>.avsc`); None for a foreign format
    (S3 notification JSON, Rubin's alert packet)."""
    partitions: int
    partitioning: Partitioning
    key: str
    role: Role
    doc: str
    config: dict[str, str] = field(default_factory=dict)
    foreign: str = ""
    """For a value that is not one of `schemas/`: its format (S3 event JSON, Rubin's alert packet)."""

    @property
    def avro(self) -> bool:
        """Its values are Confluent-framed Avro: one of our records, or Rubin's alert packet."""
        return self.schema is not None or self.foreign == ALERT_PACKET

    @property
    def accepts_json(self) -> bool:
        """Input topics take a JSON object as well as Confluent-framed Avro."""
        return self.role is Role.INPUT

    def partition_of(self, record: Any) -> int:
        """The partition `record` belongs in, by this topic's partitioning."""
        if self.partitioning is Partitioning.DETECTOR:
            return detector_partition(record.detector, self.partitions)
        if self.partitioning is Partitioning.VISIT:
            return visit_partition(record.instrument, record.group_id, self.partitions)
        return 0


@dataclass(frozen=True)
class Topics:
    """The topics of one deployment (one set of settings), in flow order."""

    next_visit: TopicSpec
    next_visit_canceled: TopicSpec
    s3_notifications: TopicSpec
    raw_image_available: TopicSpec
    detector_commands: TopicSpec
    pipeline_done: TopicSpec
    visit_expected: TopicSpec
    ccd_outcome: TopicSpec
    ccd_result: TopicSpec
    visit_summary: TopicSpec
    metrics: TopicSpec
    calibration_products: TopicSpec
    ocps_job_events: TopicSpec
    ocps_jobs: TopicSpec
    log_messages: TopicSpec
    dead_letter: TopicSpec
    alerts: TopicSpec

    def all(self) -> list[TopicSpec]:
        """Every topic, in flow order."""
        return [getattr(self, item.name) for item in fields(self)]


def declare(settings: Deployment) -> Topics:
    """The topics for these settings."""
    n = settings.detector_partitions
    det, visit, single = Partitioning.DETECTOR, Partitioning.VISIT, Partitioning.SINGLE
    inp, internal, out = Role.INPUT, Role.INTERNAL, Role.OUTPUT
    t = settings.topic
    return Topics(
        next_visit=TopicSpec("next_visit", settings.next_visit_topic, "next_visit", 1, single, "SAL key string",
                             inp, "SAL nextVisit events from the ScriptQueue, unchanged.", KEEP),
        next_visit_canceled=TopicSpec("next_visit_canceled", settings.next_visit_canceled_topic, "next_visit_canceled",
                                      1, single, "SAL key string", inp, "SAL nextVisitCanceled events.", KEEP),
        s3_notifications=TopicSpec("s3_notifications", t("s3-notifications"), None, 1, single, "none", inp,
                                   "Object-store bucket notifications (S3 event JSON), all detectors.", KEEP,
                                   foreign="S3 JSON"),
        raw_image_available=TopicSpec("raw_image_available", t("raw-image-available"), "raw_image_available", n, det,
                                      "instrument/group/detector/snap", inp,
                                      "One record per raw image that landed in storage.", KEEP),
        detector_commands=TopicSpec("detector_commands", t("detector-commands"), "detector_command", n, det,
                                    "instrument/group/detector", internal,
                                    "Start (fan-out), cancel and image-timeout commands per detector.", KEEP),
        pipeline_done=TopicSpec("pipeline_done", t("pipeline-done"), "ccd_result", n, det, "instrument/group/detector",
                                internal, "Pipeline completions, back to the detector's own partition.", KEEP),
        visit_expected=TopicSpec("visit_expected", t("visit-expected"), "visit_expected", n, visit, "instrument/group",
                                 internal, "Which detectors each visit fanned out to, for the gather.", KEEP),
        ccd_outcome=TopicSpec("ccd_outcome", t("ccd-outcome"), "ccd_result", n, visit, "instrument/group",
                              internal, "Detector outcomes (at least once) on their way to the gather.", KEEP),
        ccd_result=TopicSpec("ccd_result", t("ccd-result"), "ccd_result", n, det, "instrument/group/detector", out,
                             "Exactly one result per expected detector (transactional).", KEEP_LONG),
        visit_summary=TopicSpec("visit_summary", t("visit-summary"), "visit_summary", n, visit, "instrument/group",
                                out, "Exactly one summary per visit (transactional).", KEEP_LONG),
        metrics=TopicSpec("metrics", t("metrics"), "metric", n, visit, "instrument/group", out,
                          "Per-CCD and per-visit metrics, for the Chile bridge (transactional).", KEEP_LONG),
        calibration_products=TopicSpec("calibration_products", t("calibration-products"), "calibration_product", n,
                                       visit, "instrument/group", out,
                                       "Master calibrations certified by calibration sequences.", KEEP_LONG),
        ocps_job_events=TopicSpec("ocps_job_events", t("ocps-job-events"), "ocps_job_event", 1, single, "job id",
                                  internal, "OCPS job requests (UWS API, triggers) and their visits' outcomes, "
                                  "in order.", KEEP),
        ocps_jobs=TopicSpec("ocps_jobs", t("ocps-jobs"), "ocps_job", 1, single, "job id", out,
                            "Each OCPS job's latest state, as the UWS API shows it (compacted).",
                            {"cleanup.policy": "compact"}),
        log_messages=TopicSpec("log_messages", t("log-messages"), "log_message", 1, single, "worker", out,
                               "Worker log records at WARNING and above (rate-limited), for the Chile bridge.",
                               KEEP),
        dead_letter=TopicSpec("dead_letter", t("dead-letter"), "dead_letter", 1, single, "original key", out,
                              "Inputs that could not be used, with the reason.", KEEP_LONG),
        alerts=TopicSpec("alerts", settings.alert_topic, None, n, Partitioning.KEY, "diaSourceId", out,
                         "One alert packet per DIA source, Rubin's official schema (lsst-alert-packet), for the "
                         "community brokers (transactional).", KEEP, foreign=ALERT_PACKET),
    )


def describe(topics: Topics) -> str:
    """A table of the topics, for people."""
    rows = [("topic", "record", "partitions", "by", "role")]
    rows += [(t.name, t.schema or t.foreign, str(t.partitions), t.partitioning.value,
              t.role.value) for t in topics.all()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)
