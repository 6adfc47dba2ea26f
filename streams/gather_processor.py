"""The gather step: the pure gather core in a transactional processor (`streams.runtime.engine`).

It consumes the visit-keyed topics (VisitExpected and detector outcomes) and, in one transaction per
batch, produces the per-CCD results, the visit summaries, the metrics, the calibration products,
its table's changelog records and the consumed offsets: a crash, a restart or a rebalance can
neither lose a result nor emit a summary twice. Its table (`gather`: each visit's progress, by
visit) is what the views and the chaos verifier read.
"""

from __future__ import annotations

import logging
from collections import Counter as Tally

from confluent_kafka import Message

from streams import logs
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
        self._expected_topic = self.topics.visit_expected.name

    def apply(self, batch: Batch[VisitProgress], message: Message, now: float) -> None:
        """A VisitExpected or a detector outcome moves its visit's progress on."""
        partition = message_partition(message)
        if message.topic() == self._expected_topic:
            expected = self.decode(self.topics.visit_expected, message, VisitExpected)
            key = visit_key(expected.instrument, expected.group_id)
            state = self.state(batch, partition, key)
            self._stage_step(batch, partition, key, state, gather.on_expected(state, expected, now))
        else:
            outcome = self._decode_outcome(message)
            key = visit_key(outcome.instrument, outcome.group_id)
            state = self.state(batch, partition, key)
            self._stage_step(batch, partition, key, state, gather.on_outcome(state, outcome, now))

    def _decode_outcome(self, message: Message) -> CcdResult:
        """The outcome, labelling what follows, its bytes kept: its first one is forwarded unchanged as the
        detector's result, so `Codec.encode` re-frames them instead of encoding it again."""
        spec = self.topics.ccd_outcome
        outcome = self.codec.decode(message.value(), CcdResult, accept_json=spec.accepts_json, forward=True)
        logs.label_record(outcome)
        return outcome

    def tick(self, batch: Batch[VisitProgress], now: float) -> None:
        """Deadlines pass and finished rows age out."""
        for partition, rows in self.rows.items():
            for key in list(rows):
                state = self.state(batch, partition, key)
                if state is not None:
                    self._stage_step(batch, partition, key, state, gather.on_tick(state, now, self.policy.retention))

    def committed(self, batch: Batch[VisitProgress], now: float) -> None:
        """Count what the transaction produced."""
        count(batch.records, now)

    def _stage_step(self, batch: Batch[VisitProgress], partition: int, key: str, before: VisitProgress | None,
                    step: gather.Step) -> None:
        state, outputs = step
        if state is not before:
            self.stage(batch, partition, key, state)
        if not outputs:
            return
        topics, records, visit = self.topics, batch.records, key.encode()
        for output in outputs:  # metrics first: six of a result's seven outputs are
            if isinstance(output, gather.EmitMetric):
                records.append((topics.metrics, visit, output.metric))
            elif isinstance(output, gather.EmitResult):
                r = output.result
                records.append((topics.ccd_result, detector_key(r.instrument, r.group_id, r.detector).encode(), r))
            elif isinstance(output, gather.EmitSummary):
                records.append((topics.visit_summary, visit, output.summary))
                log.info("visit summary %s: %s (%s)", key, output.summary.counts, output.summary.reason)
            elif isinstance(output, gather.EmitCalibration):
                records.append((topics.calibration_products, visit, output.product))
                log.info("calibration product %s: %s", key, output.product.uri)

    def in_flight(self) -> int:
        """How many of this worker's visits have no summary yet (safe from any thread)."""
        return sum(1 for rows in list(self.rows.values()) for v in list(rows.values()) if not v.summary_time)


def count(records: list[tuple[TopicSpec, bytes | None, Record | bytes]], now: float) -> None:
    """Count what a committed transaction produced (results by status, summaries, latencies), tallied first:
    one locked increment per label set and bucket, not three per result."""
    results: Tally[tuple[str, ...]] = Tally()
    summaries: Tally[tuple[str, ...]] = Tally()
    latencies: list[float] = []
    raw_to_result: list[float] = []
    for _spec, _key, record in records:
        if isinstance(record, CcdResult):
            results[(record.instrument, record.status)] += 1
            if record.result_time > 0:
                latencies.append(max(now - record.result_time, 0.0))
            if record.first_raw_time > 0:
                raw_to_result.append(max(record.result_time - record.first_raw_time, 0.0))
        elif isinstance(record, VisitSummary):
            summaries[(record.instrument, record.reason)] += 1
    metrics.count_by(metrics.RESULTS, results)
    metrics.count_by(metrics.SUMMARIES, summaries)
    metrics.observe_many(metrics.GATHER_LATENCY, latencies)
    metrics.observe_many(metrics.RAW_TO_RESULT, raw_to_result)
