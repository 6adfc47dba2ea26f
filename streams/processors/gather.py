"""The gather step: the pure gather core in a transactional processor (`streams.runtime.engine`).

It consumes the visit-keyed topics (VisitExpected and detector outcomes) and, in one transaction per
batch, produces the per-CCD results, the visit summaries, the metrics, the calibration products,
its table's changelog records and the consumed offsets: a crash, a restart or a rebalance can
neither lose a result nor emit a summary twice. Its table (`gather`: each visit's progress, by
visit) is what the views and the chaos verifier read.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections import deque
from typing import Any

from confluent_kafka import Message

from streams.config import Settings
from streams.core import gather
from streams.observability import logs, metrics
from streams.runtime.engine import Batch, TransactionalProcessor, message_partition
from streams.serde.records import CcdResult, VisitExpected, VisitProgress, VisitSummary
from topology.graph import declare_graph
from topology.keys import detector_key, visit_key

log = logs.events(__name__)
RECENT = 10
"""Summarised visits the views list (per worker; the overview merges the workers')."""


class GatherProcessor(TransactionalProcessor[VisitProgress]):
    """Gathers each visit's outcomes into per-CCD results and one summary."""

    row_type = VisitProgress

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, declare_graph(settings).gather)
        self._expected_topic = self.topics.visit_expected.name
        self.recent: deque[VisitProgress] = deque(maxlen=RECENT)
        """The last visits summarised here, for the views (summarised rows are not kept in memory)."""

    def apply(self, batch: Batch[VisitProgress], message: Message, now: float) -> None:
        """A VisitExpected or a detector outcome moves its visit's progress on."""
        partition = message_partition(message)
        if message.topic() == self._expected_topic:
            expected = self.decode(self.topics.visit_expected, message, VisitExpected)
            logs.bind(expected)
            key = visit_key(expected.instrument, expected.group_id)
            state = self.state(batch, partition, key)
            self._stage_step(batch, partition, key, state, gather.on_expected(state, expected, now))
        else:
            outcome = self._decode_outcome(message)
            logs.bind(outcome)
            key = visit_key(outcome.instrument, outcome.group_id)
            state = self.state(batch, partition, key)
            self._stage_step(batch, partition, key, state, gather.on_outcome(state, outcome, now))

    def _decode_outcome(self, message: Message) -> CcdResult:
        """The outcome, its bytes kept: its first one is forwarded unchanged as the detector's result, so
        `Codec.encode` re-frames them instead of encoding it again."""
        spec = self.topics.ccd_outcome
        return self.codec.decode(message.value(), CcdResult, accept_json=spec.accepts_json, forward=True)

    def hot(self, row: VisitProgress) -> bool:
        """Visits in flight stay in memory; summarised ones are read back from RocksDB for a late outcome."""
        return not row.summary_time

    def tick(self, batch: Batch[VisitProgress], now: float) -> None:
        """Deadlines pass (visits in flight) and summarised rows age out (the engine's sweep)."""
        def age(partition: int, key: str, state: VisitProgress) -> None:
            self._stage_step(batch, partition, key, state, gather.on_tick(state, now, self.policy.retention))

        for partition, rows in self.rows.items():
            for key in list(rows):
                if (state := self.state(batch, partition, key)) is not None:
                    age(partition, key, state)
        self.sweep(batch, age)

    def committed(self, batch: Batch[VisitProgress], now: float) -> None:
        """Count what the transaction produced (the results and summaries noted as they were staged), and
        remember the visits it summarised for the views."""
        count(batch.notes, now)
        summarised = {(summary.instrument, summary.group_id) for summary in batch.notes
                      if isinstance(summary, VisitSummary)}
        for changes in batch.changes.values():
            self.recent.extend(row for row in changes.values()
                               if row is not None and (row.instrument, row.group_id) in summarised)

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
                batch.notes.append(r)
            elif isinstance(output, gather.EmitSummary):
                records.append((topics.visit_summary, visit, output.summary))
                batch.notes.append(output.summary)
                log.info("visit summarised", key=key, counts=output.summary.counts, reason=output.summary.reason)
            elif isinstance(output, gather.EmitCalibration):
                records.append((topics.calibration_products, visit, output.product))
                log.info("calibration product", key=key, uri=output.product.uri)

    def in_flight(self) -> int:
        """How many of this worker's visits have no summary yet (safe from any thread)."""
        return sum(1 for rows in list(self.rows.values()) for v in list(rows.values()) if not v.summary_time)

    def progress(self) -> list[VisitProgress]:
        """The visits in flight here and the last ones summarised here (for the views; any thread)."""
        return [row for rows in list(self.rows.values()) for row in list(rows.values())] + list(self.recent)

    def visit(self, key: str) -> VisitProgress | None:
        """One visit's committed progress, in flight or summarised (for the views; any thread)."""
        for partition in list(self.stores):
            try:
                if (row := self.rows.get(partition, {}).get(key) or self.cold(partition, key)) is not None:
                    return row
            except Exception:  # closed by a rebalance meanwhile: the visit is another worker's now
                log.debug("partition changed hands during a view", processor="gather", partition=partition)
        return None


def count(produced: list[Any], now: float) -> None:
    """Count the results and summaries a committed transaction produced (by status, by reason, latencies),
    tallied first: one locked increment per label set and bucket, not three per result."""
    results: Tally[tuple[str, ...]] = Tally()
    summaries: Tally[tuple[str, ...]] = Tally()
    latencies: list[float] = []
    raw_to_result: list[float] = []
    for record in produced:
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
