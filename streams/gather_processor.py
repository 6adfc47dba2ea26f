"""The gather step: the pure gather core in a transactional processor (`streams.runtime.engine`).

It consumes the visit-keyed topics (VisitExpected and detector outcomes) and, in one transaction per
batch, produces the per-CCD results, the visit summaries, the metrics, the calibration products,
its table's changelog records and the consumed offsets: a crash, a restart or a rebalance can
neither lose a result nor emit a summary twice. Its table (`gather`: each visit's progress, by
visit) is what the views and the chaos verifier read.
"""

from __future__ import annotations

import logging

from confluent_kafka import Message

from streams.config import Settings
from streams.core import gather
from streams.record import Record
from streams.records import CcdResult, VisitExpected, VisitProgress, VisitSummary
from streams.runtime.engine import Batch, TransactionalProcessor, message_partition
from streams.web import metrics
from topology.graph import declare_graph
from topology.keys import detector_key, visit_key
from topology.topics import TopicSpec

log = logging.getLogger(__name__)


class GatherProcessor(TransactionalProcessor[VisitProgress]):
    """Gathers each visit's outcomes into per-CCD results and one summary."""

    row_type = VisitProgress

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, declare_graph(settings).gather)

    def apply(self, batch: Batch[VisitProgress], message: Message, now: float) -> None:
        """A VisitExpected or a detector outcome moves its visit's progress on."""
        partition = message_partition(message)
        if message.topic() == self.topics.visit_expected.name:
            expected = self.decode(self.topics.visit_expected, message, VisitExpected)
            key = visit_key(expected.instrument, expected.group_id)
            step = gather.on_expected(self.state(batch, partition, key), expected, now)
        else:
            outcome = self.decode(self.topics.ccd_outcome, message, CcdResult)
            key = visit_key(outcome.instrument, outcome.group_id)
            step = gather.on_outcome(self.state(batch, partition, key), outcome, now)
        self._stage_step(batch, partition, key, step)

    def tick(self, batch: Batch[VisitProgress], now: float) -> None:
        """Deadlines pass and finished rows age out."""
        for partition, rows in self.rows.items():
            for key in list(rows):
                state = self.state(batch, partition, key)
                if state is not None:
                    self._stage_step(batch, partition, key, gather.on_tick(state, now, self.policy.retention))

    def committed(self, batch: Batch[VisitProgress], now: float) -> None:
        """Count what the transaction produced."""
        count(batch.records, now)

    def _stage_step(self, batch: Batch[VisitProgress], partition: int, key: str, step: gather.Step) -> None:
        state, outputs = step
        if state is not self.state(batch, partition, key):
            self.stage(batch, partition, key, state)
        topics = self.topics
        for output in outputs:
            if isinstance(output, gather.EmitResult):
                r = output.result
                row = detector_key(r.instrument, r.group_id, r.detector)
                batch.records.append((topics.ccd_result, row.encode(), r))
            elif isinstance(output, gather.EmitSummary):
                batch.records.append((topics.visit_summary, key.encode(), output.summary))
                log.info("visit summary %s: %s (%s)", key, output.summary.counts, output.summary.reason)
            elif isinstance(output, gather.EmitMetric):
                batch.records.append((topics.metrics, key.encode(), output.metric))
            elif isinstance(output, gather.EmitCalibration):
                batch.records.append((topics.calibration_products, key.encode(), output.product))
                log.info("calibration product %s: %s", key, output.product.uri)

    def in_flight(self) -> int:
        """How many of this worker's visits have no summary yet (safe from any thread)."""
        return sum(1 for rows in list(self.rows.values()) for v in list(rows.values()) if not v.summary_time)


def count(records: list[tuple[TopicSpec, bytes | None, Record | bytes]], now: float) -> None:
    """Count what a committed transaction produced (results by status, summaries, latencies)."""
    for _spec, _key, record in records:
        if isinstance(record, CcdResult):
            metrics.RESULTS.labels(record.instrument, record.status).inc()
            if record.result_time > 0:
                metrics.GATHER_LATENCY.observe(max(now - record.result_time, 0.0))
            if record.first_raw_time > 0:
                metrics.RAW_TO_RESULT.observe(max(record.result_time - record.first_raw_time, 0.0))
        elif isinstance(record, VisitSummary):
            metrics.SUMMARIES.labels(record.instrument, record.reason).inc()
