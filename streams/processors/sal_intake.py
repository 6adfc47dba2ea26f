"""The SAL intake: nextVisit fans out to the detectors; nextVisitCanceled reaches the same ones.

Both SAL topics have one partition, so one member of the `<app id>-sal-intake` group sees every visit and
its cancellation in order, and keeps the `visits` table (group id -> what was fanned out) to route
cancellations. It is a transactional processor (`streams.runtime.engine`), not a Faust agent: a
nextVisit sent while a worker dies must not be skipped and committed by a rebalance, and its
detector commands, its VisitExpected, its table row and its offset become visible together. Its
tick forgets the visits past the retention time, whether or not more nextVisits come.
"""

from __future__ import annotations

from confluent_kafka import Message

from streams.config import Settings
from streams.core.instruments import Instrument
from streams.core.surveys import SurveyTable
from streams.core.visit import forgotten, plan_cancel, plan_visit
from streams.observability import logs
from streams.runtime.engine import Batch, TransactionalProcessor, message_partition
from streams.serde.records import DetectorCommand, NextVisit, NextVisitCanceled, VisitExpected
from topology.graph import declare_graph
from topology.keys import detector_key, visit_key

log = logs.events(__name__)


class SalIntake(TransactionalProcessor[VisitExpected]):
    """Turns the summit's nextVisit and nextVisitCanceled into detector commands and a VisitExpected."""

    row_type = VisitExpected

    def __init__(self, settings: Settings, instruments: dict[str, Instrument], surveys: SurveyTable) -> None:
        super().__init__(settings, declare_graph(settings).sal_intake)
        self.instruments = instruments
        self.surveys = surveys

    def apply(self, batch: Batch[VisitExpected], message: Message, now: float) -> None:
        """Fan a visit out, or route its cancellation to the detectors it was fanned out to."""
        partition = message_partition(message)
        if message.topic() == self.topics.next_visit.name:
            visit = self.decode(self.topics.next_visit, message, NextVisit)
            logs.bind(visit)
            plan = plan_visit(visit, self.instruments, self.surveys, self.policy, now)
            self._command(batch, plan.commands)
            expected = plan.expected
            batch.records.append((self.topics.visit_expected,
                                  visit_key(expected.instrument, expected.group_id).encode(), expected))
            self.stage(batch, partition, expected.group_id, expected)
            log.info("next visit fanned out", survey=visit.survey, detectors=len(plan.commands),
                     pipelines=expected.pipelines or "none: ignored")
        else:
            cancel = self.decode(self.topics.next_visit_canceled, message, NextVisitCanceled)
            logs.bind(cancel)
            commands = plan_cancel(cancel, self.state(batch, partition, cancel.groupId), now)
            self._command(batch, commands)
            log.info("next visit canceled", detectors=len(commands))

    def _command(self, batch: Batch[VisitExpected], commands: tuple[DetectorCommand, ...]) -> None:
        for command in commands:
            key = detector_key(command.instrument, command.group_id, command.detector)
            batch.records.append((self.topics.detector_commands, key.encode(), command))

    def tick(self, batch: Batch[VisitExpected], now: float) -> None:
        """Visits past the retention time are forgotten, on the clock: a quiet night must not keep them."""
        for partition, rows in self.rows.items():
            for key in list(rows):
                row = self.state(batch, partition, key)
                if row is not None and forgotten(row, self.policy, now):
                    self.stage(batch, partition, key, None)

    def expected(self) -> list[VisitExpected]:
        """The visits this worker fanned out and still keeps (empty unless it owns the SAL partition)."""
        return [row for rows in list(self.rows.values()) for row in list(rows.values())]
