"""The alert publisher: each committed per-CCD result's alert packets go to the alert stream, exactly once.

It reads `ccd-result` with `read_committed`, where each expected detector has exactly one result
(the gather's guarantee). For a result whose pipeline wrote alert packets (`alerts.avro`, see
`streams.pipelines.associate_apdb`), it produces one alert per DIA source to the alert topic
(`PROMPT_STREAMS_ALERT_TOPIC`, `lsst-alerts-v11` by default), Confluent-framed Avro with the official
schema of `lsst-alert-packet` registered under `<topic>-value`, keyed by diaSourceId, in the same
transaction as its consumed offset (`streams.transactional`). So a detector processed twice after a
crash is alerted once (only its first outcome became its result), and a publisher killed mid-batch
sends that batch again only inside a transaction that was aborted: a `read_committed` consumer sees
each alert once. An alerts file that cannot be read for now (storage down) is retried, never skipped.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import fastavro
from confluent_kafka import Message

from streams import alert_packets
from streams.codec import frame, write_datum
from streams.config import Settings
from streams.errors import InvalidEventError, RetriableError
from streams.records import CcdResult
from streams.transactional import Batch, TransactionalProcessor
from streams.web import metrics
from topology.topics import declare

log = logging.getLogger(__name__)
ALERTS_FILE = "alerts.avro"


def alerts_path(result: CcdResult, output_root: Path) -> Path | None:
    """The alerts file a result names, if any; one outside the output root is refused.

    Raises:
        InvalidEventError: the result names an alerts file outside the output root.
    """
    uri = next((u for u in result.output_uris if u.endswith("/" + ALERTS_FILE)), None)
    if uri is None or result.status != "success":
        return None
    parsed = urlparse(uri)
    path = Path(unquote(parsed.path)).resolve()
    if parsed.scheme != "file" or not path.is_relative_to(output_root.resolve()):
        raise InvalidEventError(f"alerts file {uri} is not under the output root {output_root}")
    return path


class AlertPublisher(TransactionalProcessor[CcdResult]):
    """Sends each result's alert packets to the alert stream, in the transaction that consumes the result."""

    name = "alert-publisher"
    row_type = CcdResult  # no table: nothing to remember beyond the consumed offsets

    def __init__(self, settings: Settings) -> None:
        topics = declare(settings)
        super().__init__(settings, [topics.ccd_result], None)
        self.alerts = topics.alerts
        self.output_root = Path(settings.output_root)
        self._schema: tuple[int, Any] | None = None
        self.published = 0

    def _writer(self) -> tuple[int, Any]:
        """The official schema's registry id (registered on first use) and its parsed form."""
        if self._schema is None:
            definition = json.loads(alert_packets.schema_json())
            schema_id = self.codec.register_schema(f"{self.alerts.name}-value", definition)
            self._schema = schema_id, fastavro.parse_schema(definition, named_schemas={})
        return self._schema

    def apply(self, batch: Batch[CcdResult], message: Message, now: float) -> None:
        """Stage one alert per packet of the result's alerts file."""
        result = self.decode(self.topics.ccd_result, message, CcdResult)
        path = alerts_path(result, self.output_root)
        if path is None:
            return
        try:
            packets = alert_packets.read_packets(path)
        except FileNotFoundError as gone:
            raise InvalidEventError(f"alerts file {path} is gone: its alerts cannot be sent") from gone
        except OSError as unreadable:  # storage that is down or slow: try the batch again
            raise RetriableError(f"alerts file {path} cannot be read now: {unreadable}") from unreadable
        schema_id, parsed = self._writer()
        for packet in packets:
            batch.records.append((self.alerts, str(packet["diaSourceId"]).encode(),
                                  frame(schema_id, write_datum(parsed, packet))))
        batch.notes.append((result, len(packets)))

    def committed(self, batch: Batch[CcdResult], now: float) -> None:
        """Count the alerts and their latency from the detector's first raw."""
        for result, count in batch.notes:
            self.published += count
            metrics.ALERTS.labels(result.instrument).inc(count)
            if count and result.first_raw_time > 0:
                metrics.RAW_TO_ALERTS.observe(max(now - result.first_raw_time, 0.0))
            log.info("alerts of detector %d of %s: %d sent", result.detector, result.group_id, count)
