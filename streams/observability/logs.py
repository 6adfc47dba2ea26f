"""Structured logs: one JSON object per line, labelled with what the worker is working on.

The labels (instrument, group, detector, visit) live in a context variable: the engine starts each
record with none (`TransactionalProcessor._guarded`), its `decode` adds those of the record it decoded,
and effects logged after a commit label their own record, so every line logged while handling an
event carries them without any log call naming them. `PROMPT_STREAMS_LOG_FORMAT=json` switches a
worker's logs to this format (`logging_config` is handed to faust, which configures logging at worker
start); secrets are masked wherever they would appear.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from typing import Any

from streams.config import Settings
from streams.secrets import scrub

LABELS: ContextVar[dict[str, str | int]] = ContextVar("prompt_streams_log_labels")


Plan = tuple[tuple[str, tuple[str, ...]], ...]
_LABELS: Plan = (("instrument", ("instrument",)), ("group", ("group_id", "groupId")), ("detector", ("detector",)),
           ("visit", ("exposure_id",)))
_PLANS: dict[type, Plan] = {}
"""Per record type: the labels its fields can give, with only the attributes it has (looked up once)."""


def _plan(kind: type) -> Plan:
    plan = _LABELS
    if is_dataclass(kind):  # a record: its fields are its attributes
        names = {f.name for f in fields(kind)}
        plan = tuple((label, found) for label, attributes in _LABELS
                     if (found := tuple(a for a in attributes if a in names)))
    _PLANS[kind] = plan
    return plan


def label_record(record: object) -> None:
    """Label what follows with the instrument, group, detector and visit (exposure) `record` names."""
    plan = _PLANS.get(type(record))
    if plan is None:
        plan = _plan(type(record))
    found: dict[str, str | int] = {}
    for label, attributes in plan:
        for attribute in attributes:
            value = getattr(record, attribute, None)
            if value is not None and value != "":
                found[label] = value
                break
    if "visit" not in found:
        exposures = getattr(record, "exposure_ids", None)
        if exposures:
            found["visit"] = min(exposures)  # a visit is named after its first exposure
    if found:
        LABELS.set(LABELS.get({}) | found)


class labelled:  # noqa: N801 (a context manager used as a function)
    """A scope with fresh labels (those of `record`, if given), restored on exit (a class, not a generator:
    the gather enters one per message)."""

    __slots__ = ("_record", "_token")

    def __init__(self, record: object | None = None) -> None:
        self._record = record

    def __enter__(self) -> None:
        self._token = LABELS.set({})
        if self._record is not None:
            label_record(self._record)

    def __exit__(self, *_: object) -> None:
        LABELS.reset(self._token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the labels, and any traceback."""

    def __init__(self, worker: str = "", secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.worker = worker
        self.secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line, secrets masked."""
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if self.worker:
            entry["worker"] = self.worker
        entry |= LABELS.get({})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return scrub(json.dumps(entry, default=str), self.secrets)


def logging_config(settings: Settings) -> dict[str, Any] | None:
    """Faust's `logging_config` for these settings: None keeps faust's text logs."""
    if settings.log_format != "json":
        return None
    formatter = {"()": f"{__name__}.JsonFormatter", "worker": settings.worker, "secrets": settings.secrets()}
    # merged into faust's own configuration: its handlers stay, their formatters become ours
    return {"version": 1, "merge": True, "formatters": {"default": formatter, "colored": formatter}}
