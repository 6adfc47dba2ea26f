"""What the worker's host parts share (the web API, the app's commands): settings, configuration, the
codec, topics, and sending records.

The processors do not use it: they run on the engine (`streams.runtime.engine`). The web API sends
OCPS job requests with `send`, which encodes and computes the partition from the topic's declared
partitioning (`topology/keys.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import faust

from streams.config import Settings
from streams.core.instruments import Instrument, parse_instruments
from streams.core.policy import Policy
from streams.core.surveys import SurveyTable, parse_surveys
from streams.observability import logs
from streams.runtime import admin
from streams.serde.base import Record
from streams.serde.codec import Codec
from streams.serde.registry import ConfluentRegistry
from topology.tables import Tables, declare_tables
from topology.topics import Topics, TopicSpec, declare

R = TypeVar("R", bound=Record)
log = logs.events(__name__)


@dataclass
class Context:
    """The shared, per-process wiring of a worker."""

    settings: Settings
    codec: Codec
    topics: Topics
    tables: Tables
    instruments: dict[str, Instrument]
    surveys: SurveyTable
    policy: Policy
    app: faust.App
    _senders: dict[str, faust.TopicT] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, app: faust.App) -> Context:
        """Load the configuration files and declare the topics (raw bytes: the codec does the rest)."""
        return cls(
            settings=settings, codec=Codec(ConfluentRegistry(settings.registry_config())),
            topics=declare(settings), tables=declare_tables(settings),
            instruments=parse_instruments(Path(settings.instruments_file).read_text()),
            surveys=parse_surveys(Path(settings.surveys_file).read_text()), policy=settings.policy(), app=app,
        )

    def prepare(self) -> None:
        """Create the topics and register the schemas (blocking: run before consuming)."""
        created = admin.prepare(self.settings, self.codec)
        log.info("topics ready, schemas registered", created=len(created))
        if not Path(self.settings.apdb_config).exists():
            from streams.data.apdb import create_sqlite  # dax_apdb's stack, only when there is an APDB to create

            config = Path(self.settings.apdb_config)
            if create_sqlite(config.with_name("apdb.db"), config):
                log.warning("no APDB configuration: created an empty SQLite APDB there", path=config)

    async def send(self, spec: TopicSpec, key: str | bytes | None, record: Record) -> Any:
        """Encode `record` and send it to its partition of `spec`'s topic."""
        raw_key = key.encode() if isinstance(key, str) else key
        if spec.name not in self._senders:
            self._senders[spec.name] = self.app.topic(spec.name, key_serializer="raw", value_serializer="raw")
        return await self._senders[spec.name].send(
            key=raw_key, value=self.codec.encode(spec.name, record), partition=spec.partition_of(record),
        )
