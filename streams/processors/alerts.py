"""The alert publisher: each detector's alert packets go to the alert stream, exactly once, as soon as its
pipeline has run.

It reads the detectors' outcomes (`ccd-outcome`, at least once) with `read_committed`. The first
successful outcome of a detector whose pipeline wrote alert packets (`alerts.avro`, see
`streams.pipelines.associate_apdb`) is published: one alert per DIA source to the alert topic
(`PROMPT_STREAMS_ALERT_TOPIC`, `lsst-alerts-v11` by default), Confluent-framed Avro with the
official schema of `lsst-alert-packet` registered under `<topic>-value`, keyed by diaSourceId. The
alerts, the `alerted` table row that remembers the detector and the consumed offset commit in one
transaction (`streams.runtime.engine`), so a repeated outcome, a detector processed twice after a
crash or a publisher killed mid-batch alert nothing twice: a `read_committed` consumer sees each
alert once. It does not wait for the gather: a detector that ends after its visit's deadline (its
result says `timeout`) has stored its sources in the APDB, and they are alerted all the same.
An alerts file that cannot be read for now (storage down) is retried, never skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import fastavro
from confluent_kafka import Message

from streams.config import Settings
from streams.errors import InvalidEventError, RetriableError
from streams.observability import logs, metrics
from streams.runtime.engine import Batch, TransactionalProcessor, message_partition
from streams.serde import alert_packets
from streams.serde.codec import frame, write_datum
from streams.serde.records import CcdResult
from topology.graph import declare_graph
from topology.keys import detector_key

log = logs.events(__name__)


def alerts_path(outcome: CcdResult, output_root: Path) -> Path | None:
    """The alerts file a successful outcome names, if any.

    Raises:
        InvalidEventError: the outcome names an alerts file outside the output root.
    """
    uri = next((u for u in outcome.output_uris if u.endswith("/" + alert_packets.FILE_NAME)), None)
    if uri is None or outcome.status != "success":
        return None
    parsed = urlparse(uri)
    path = Path(unquote(parsed.path)).resolve()
    if parsed.scheme != "file" or not path.is_relative_to(output_root.resolve()):
        raise InvalidEventError(f"alerts file {uri} is not under the output root {output_root}")
    return path


class AlertPublisher(TransactionalProcessor[CcdResult]):
    """Sends each detector's alert packets to the alert stream once, in the transaction that records it."""

    row_type = CcdResult

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, declare_graph(settings).alert_publisher)
        self.alerts = self.topics.alerts
        self.output_root = Path(settings.output_root)
        self._schema: tuple[int, Any] | None = None

    def _writer(self) -> tuple[int, Any]:
        """The official schema's registry id (registered on first use) and its parsed form."""
        if self._schema is None:
            definition = json.loads(alert_packets.schema_json())
            schema_id = self.codec.register_schema(f"{self.alerts.name}-value", definition)
            self._schema = schema_id, fastavro.parse_schema(definition, named_schemas={})
        return self._schema

    def apply(self, batch: Batch[CcdResult], message: Message, now: float) -> None:
        """Stage one alert per packet of a detector's first successful outcome."""
        outcome = self.decode(self.topics.ccd_outcome, message, CcdResult)
        logs.bind(outcome)
        partition = message_partition(message)
        key = detector_key(outcome.instrument, outcome.group_id, outcome.detector)
        path = alerts_path(outcome, self.output_root)
        if path is None or self.state(batch, partition, key) is not None:
            return  # nothing to alert, or alerted already
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
        self.stage(batch, partition, key, CcdResult(
            instrument=outcome.instrument, group_id=outcome.group_id, detector=outcome.detector, status="success",
            exposure_ids=outcome.exposure_ids, first_raw_time=outcome.first_raw_time, result_time=now,
            metrics={"alertCount": float(len(packets))}))
        batch.notes.append((outcome, len(packets)))

    def hot(self, row: CcdResult) -> bool:
        """No row stays in memory: each only answers "alerted already?" for a repeated outcome, from RocksDB."""
        return False

    def tick(self, batch: Batch[CcdResult], now: float) -> None:
        """Forget detectors alerted longer ago than the retention time (their outcomes no longer come), a few
        hundred rows per tick."""
        def forget(partition: int, key: str, row: CcdResult) -> None:
            if now - row.result_time > self.policy.retention:
                self.stage(batch, partition, key, None)

        self.sweep(batch, forget)

    def committed(self, batch: Batch[CcdResult], now: float) -> None:
        """Count the alerts and their latency from the detector's first raw."""
        for outcome, count in batch.notes:
            metrics.ALERTS.labels(outcome.instrument).inc(count)
            if count and outcome.first_raw_time > 0:
                metrics.RAW_TO_ALERTS.observe(max(now - outcome.first_raw_time, 0.0))
            log.info("alerts sent", alerts=count)
