"""Logs as events: a short name and key/value fields, labelled with what the worker is working on.

Each module logs through `events(__name__)`: `log.info("visit summarised", group=..., counts=...)`.
Text logs show `visit summarised group=... counts=...`; `PROMPT_STREAMS_LOG_FORMAT=json` writes one
JSON object per line with the event and each field as keys, so a log store (Loki, Grafana) filters on
them (`logging_config` is handed to faust, which configures logging at worker start). Secrets are
masked wherever they would appear.

The labels (instrument, group, detector, visit) live in a context variable. The engine starts each
record with none (`TransactionalProcessor._guarded`); a processor binds those of the record it
decoded (`bind`), and effects logged after a commit bind their own (`labelled`), so every line logged
while handling an event, deep in a pipeline too, carries them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
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


def bind(record: object) -> None:
    """Label what follows, to the end of the scope, with the instrument, group, detector and visit (exposure)
    `record` names."""
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
            bind(self._record)

    def __exit__(self, *_: object) -> None:
        LABELS.reset(self._token)


def _text(value: object) -> str:
    """A field's value in a text line: quoted when it has a blank, a quote or an equals sign."""
    text = str(value)
    return json.dumps(text) if not text or any(c in text for c in ' "=') else text


class Event:
    """A log event's name and fields, and the labels bound when it was logged; its text (`name key=value ...`,
    the labels last) is made only if a handler formats it."""

    __slots__ = ("fields", "labels", "name")

    def __init__(self, name: str, fields: Mapping[str, object], labels: Mapping[str, object]) -> None:
        self.name, self.fields, self.labels = name, fields, labels

    def __str__(self) -> str:
        labels = {key: value for key, value in self.labels.items() if key not in self.fields}
        pairs = [*self.fields.items(), *labels.items()]
        return " ".join([self.name, *(f"{key}={_text(value)}" for key, value in pairs)])


class Events:
    """A module's log, written as events: `log.warning("dead letter", topic=..., reason=...)`."""

    __slots__ = ("logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def _emit(self, level: int, name: str, fields: Mapping[str, object],
              exc_info: BaseException | bool = False) -> None:
        if self.logger.isEnabledFor(level):  # stacklevel 3: the file and function of the caller of info() etc.
            self.logger.log(level, "%s", Event(name, fields, LABELS.get({})), exc_info=exc_info, stacklevel=3,
                            extra={"event": name, "fields": fields})

    def log(self, level: int, name: str, /, **fields: object) -> None:
        self._emit(level, name, fields)

    def debug(self, name: str, /, **fields: object) -> None:
        self._emit(logging.DEBUG, name, fields)

    def info(self, name: str, /, **fields: object) -> None:
        self._emit(logging.INFO, name, fields)

    def warning(self, name: str, /, **fields: object) -> None:
        self._emit(logging.WARNING, name, fields)

    def error(self, name: str, /, **fields: object) -> None:
        self._emit(logging.ERROR, name, fields)

    def exception(self, name: str, /, exc: BaseException | None = None, **fields: object) -> None:
        """An error with the traceback of `exc`, or of the exception being handled."""
        self._emit(logging.ERROR, name, fields, exc_info=exc or True)

    def critical(self, name: str, /, **fields: object) -> None:
        self._emit(logging.CRITICAL, name, fields)


def events(name: str) -> Events:
    """The log of module `name`, as events."""
    return Events(logging.getLogger(name))


CORE = frozenset({"time", "level", "logger", "message", "worker", "event", "exception"})
"""Keys of a JSON line that no event field may take."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the labels, the event and its fields, and any
    traceback."""

    def __init__(self, worker: str = "", secrets: Sequence[str] = ()) -> None:
        super().__init__()
        self.worker = worker
        self.secrets = [secret for secret in secrets if secret]

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line, secrets masked (an event's message without the labels: they are keys)."""
        event, fields = getattr(record, "event", None), getattr(record, "fields", {})
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name,
            "message": str(Event(event, fields, {})) if event else record.getMessage(),
        }
        if self.worker:
            entry["worker"] = self.worker
        entry |= LABELS.get({})
        if event:  # its fields name what it is about: they win over labels
            entry |= {key: value for key, value in fields.items() if key not in CORE} | {"event": event}
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
