"""Metrics -> Sasquatch records in the layout of analysis_tools' `SasquatchDispatcher`.

Prompt Processing's metrics reach Sasquatch as `lsst.prompt.<environment>.<metric>` topics
(1 partition), one Avro record per measurement: record name `<metric>`, namespace
`lsst.prompt.<environment>`, the dispatcher's bookkeeping fields (`id`, `run`, `dataset_type`,
`reference_package*`, `run_timestamp`, `timestamp`, `dataset_tag`), the data id as strings
(`instrument`, `detector` for per-CCD metrics, `group`, `band`, `day_obs`), `tags`, and one float
field named after the metric. An existing Telegraf (`data_format=avro`, `timestamp_field =
timestamp`, UTC seconds) ingests it unchanged into the InfluxDB database `lsst.prompt.<environment>`.
Like the dispatcher, a NaN measurement is not sent. A metric whose topic name Kafka would refuse (more
than 249 characters, or characters other than `[A-Za-z0-9._-]`) is not mapped: it becomes `Unmapped`,
with the reason, for the bridge to dead-letter (creating the topic would fail on every retry). Pure
functions; the bridge sends.
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib.metadata import version
from typing import Any

from streams.serde.records import Metric

NAMESPACE_ROOT = "lsst.prompt"
DATASET_TAG = "Live"
"""What prompt_processing passes as the dispatcher's dataset identifier."""
REFERENCE_PACKAGE = "prompt-streams"
NOT_A_NAME = re.compile(r"[^A-Za-z0-9_]")
ID_NAMESPACE = uuid.UUID("6b1d8c3e-5a38-4f63-9d4c-7c2f0f8e2a11")
TOPIC_LIMIT = 249
"""Kafka's longest topic name (`org.apache.kafka.common.internals.Topic`)."""
NOT_IN_A_TOPIC = re.compile(r"[^A-Za-z0-9._-]")
"""Characters Kafka refuses in a topic name."""
QUOTED = 60
"""Characters of a name quoted in a reason (a name may be megabytes long)."""


@dataclass(frozen=True)
class SasquatchRecord:
    """One record for one Sasquatch topic, with the schema the topic's subject holds."""

    topic: str
    schema: dict[str, Any]
    datum: dict[str, Any]


@dataclass(frozen=True)
class Unmapped:
    """A metric that cannot become a Sasquatch record, and why: the bridge dead-letters it and goes on."""

    reason: str


def quoted(name: str) -> str:
    """A name for a reason: whole if short, else its start and its length."""
    return repr(name) if len(name) <= QUOTED else f"{name[:QUOTED]!r}... ({len(name)} characters)"


def topic_problem(topic: str) -> str | None:
    """Why Kafka would refuse `topic` as a topic name, or None if it would not (Kafka's `Topic.validate`)."""
    if topic in ("", ".", ".."):
        return f"topic name {topic!r} is not allowed"
    if len(topic) > TOPIC_LIMIT:
        return f"topic name {quoted(topic)} is {len(topic)} characters long, Kafka allows at most {TOPIC_LIMIT}"
    if bad := sorted(set(NOT_IN_A_TOPIC.findall(topic))):
        return f"topic name {quoted(topic)} has characters Kafka does not allow ({''.join(bad)!r}): only [A-Za-z0-9._-]"
    return None


RESERVED = {"id", "run", "dataset_type", "reference_package", "reference_package_version",
            "reference_package_timestamp", "run_timestamp", "timestamp", "dataset_tag", "instrument", "detector",
            "group", "band", "day_obs", "tags"}
"""The record's other fields: a measurement may not take one of their names."""


def avro_name(metric_name: str) -> str:
    """The metric's name as an Avro name (letters, digits and `_`, not starting with a digit) that is not
    one of the record's other fields (those get a `metric_` prefix)."""
    name = NOT_A_NAME.sub("_", metric_name)
    name = f"_{name}" if not name or name[0].isdigit() else name
    return f"metric_{name}" if name in RESERVED else name


def day_obs(utc: float) -> str:
    """The observing day: the UTC date 12 hours earlier, YYYYMMDD (Rubin's day_obs rolls over at noon)."""
    return (datetime.fromtimestamp(utc, UTC) - timedelta(hours=12)).strftime("%Y%m%d")


def _string(name: str) -> dict[str, Any]:
    return {"name": name, "type": "string"}


def schema_for(name: str, namespace: str, per_ccd: bool) -> dict[str, Any]:
    """The dispatcher's schema for one metric: bookkeeping, data id, tags, the measurement."""
    data_id = ["instrument", *(["detector"] if per_ccd else []), "group", "band", "day_obs"]
    return {
        "type": "record", "name": name, "namespace": namespace,
        "fields": [
            _string("id"), _string("run"), _string("dataset_type"), _string("reference_package"),
            _string("reference_package_version"), {"name": "reference_package_timestamp", "type": "double"},
            {"name": "run_timestamp", "type": "double"}, {"name": "timestamp", "type": "double"},
            _string("dataset_tag"), *(_string(key) for key in data_id),
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": name, "type": "float"},
        ],
    }


def environment_problem(environment: str) -> str | None:
    """Why no metric could have a topic in this environment's namespace (None: most can), for a start-up check."""
    problem = topic_problem(f"{NAMESPACE_ROOT}.{environment}.m")
    return None if problem is None else f"Sasquatch environment {quoted(environment)}: {problem}"


@cache
def _package_version() -> str:
    return version("prompt-streams")


def sasquatch_record(metric: Metric, environment: str, tai_minus_utc: float) -> SasquatchRecord | Unmapped | None:
    """The Sasquatch record of one metric; None for a NaN (the dispatcher skips those); `Unmapped` if its
    topic name would be refused by Kafka."""
    if math.isnan(metric.value):
        return None
    namespace = f"{NAMESPACE_ROOT}.{environment}"
    name = avro_name(metric.name)
    if (problem := topic_problem(f"{namespace}.{name}")) is not None:
        return Unmapped(f"metric {quoted(metric.name)} has no Sasquatch topic: {problem}")
    per_ccd = metric.detector >= 0
    utc = metric.timestamp - tai_minus_utc
    day = day_obs(utc)
    identity = f"{metric.instrument}/{metric.group_id}/{metric.detector}/{metric.name}"
    data_id = {"instrument": metric.instrument, **({"detector": str(metric.detector)} if per_ccd else {}),
               "group": metric.group_id, "band": metric.tags.get("band", ""), "day_obs": day}
    datum = {
        "id": str(uuid.uuid5(ID_NAMESPACE, identity)),
        "run": f"{metric.instrument}/prompt/output-{day[:4]}-{day[4:6]}-{day[6:]}/{metric.survey or 'none'}",
        "dataset_type": f"{name}_metrics", "reference_package": REFERENCE_PACKAGE,
        "reference_package_version": _package_version(), "reference_package_timestamp": utc,
        "run_timestamp": utc, "timestamp": utc, "dataset_tag": DATASET_TAG, **data_id,
        "tags": ["ccd" if per_ccd else "visit", *(f"{k}={v}" for k, v in sorted(metric.tags.items()))],
        name: metric.value,
    }
    return SasquatchRecord(f"{namespace}.{name}", schema_for(name, namespace, per_ccd), datum)
