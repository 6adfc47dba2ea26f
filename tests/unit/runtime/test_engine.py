"""The engine's own promises, through the test driver: declared outputs only, transient failures retried,
processors chained through committed records only."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import Message

from streams.config import Settings
from streams.core.instruments import Instrument
from streams.core.surveys import SurveyTable
from streams.errors import RetriableError
from streams.processors.gather import GatherProcessor
from streams.processors.sal_intake import SalIntake
from streams.runtime import engine
from streams.runtime.driver import TopologyTestDriver
from streams.runtime.engine import Batch, TransactionalProcessor, UndeclaredOutputError
from streams.serde.records import VisitExpected
from tests.unit.core.flow import T0, next_visit
from tests.unit.runtime.visits import GROUP, INSTRUMENT, NOW, outcome, visit_expected
from topology.graph import declare_graph
from topology.keys import visit_key
from topology.topics import Topics, declare

VISIT = visit_key(INSTRUMENT, GROUP)


class StrayWriter(TransactionalProcessor[VisitExpected]):
    """sal-intake's declaration, but it writes a visit summary topic it does not declare (a bug)."""

    row_type = VisitExpected

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings, declare_graph(settings).sal_intake)

    def apply(self, batch: Batch[VisitExpected], message: Message, now: float) -> None:
        """Write where the declaration does not allow."""
        batch.records.append((self.topics.visit_expected, VISIT.encode(), visit_expected()))
        batch.records.append((self.topics.ccd_result, VISIT.encode(), outcome(0)))


def test_writing_an_undeclared_topic_raises_and_shows_nothing(settings: Settings) -> None:
    """The commit refuses a topic the processor's `ProcessorSpec` does not name; its batch stays invisible."""
    topics = declare(settings)
    with TopologyTestDriver(StrayWriter(settings), now=NOW) as driver:
        driver.pipe(topics.next_visit, "k", next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
        with pytest.raises(UndeclaredOutputError, match=topics.ccd_result.name):
            driver.run_once()
        assert driver.read(topics.visit_expected) == [] and driver.read(topics.ccd_result) == []


def test_a_retriable_error_consumes_the_batch_again(settings: Settings) -> None:
    """A storage outage (RetriableError) while applying a message commits nothing of its batch; the next cycle
    processes the whole batch again, and each output is sent once."""
    topics = declare(settings)
    with TopologyTestDriver(GatherProcessor(settings), now=NOW) as driver:
        driver.pipe(topics.visit_expected, VISIT, visit_expected())
        for detector in (0, 1, 2):
            driver.pipe(topics.ccd_outcome, VISIT, outcome(detector))
        driver.fail_apply("gather", RetriableError("storage is down"), times=2)
        driver.run_once()
        driver.run_once()
        assert driver.read(topics.ccd_result) == [] and driver.rows("gather") == {}
        driver.run_once()
        assert sorted(r.detector for r in driver.read(topics.ccd_result)) == [0, 1, 2]
        assert len(driver.read(topics.visit_summary)) == 1
        assert driver.read(topics.dead_letter) == []


@contextmanager
def gather_with_one_outcome(settings: Settings) -> Iterator[tuple[TopologyTestDriver, Topics]]:
    """A driver with the gather, a visit expected and the outcome of its detector 0 waiting to be consumed."""
    topics = declare(settings)
    with TopologyTestDriver(GatherProcessor(settings), now=NOW) as driver:
        driver.pipe(topics.visit_expected, VISIT, visit_expected())
        driver.pipe(topics.ccd_outcome, VISIT, outcome(0))
        yield driver, topics


def test_a_retriable_commit_error_is_called_again(settings: Settings) -> None:
    """librdkafka's "retry the call" on commit (a broker bounce) is retried within the cycle: committed once."""
    with gather_with_one_outcome(settings) as (driver, topics):
        driver.fail_next_commit(retriable=True)
        driver.run_once()
        assert [r.detector for r in driver.read(topics.ccd_result)] == [0]
        assert [o.detector for o in driver.rows("gather")[VISIT].outcomes] == [0]


def test_a_stuck_send_offsets_replaces_the_producer_and_commits_the_batch_once(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """send_offsets_to_transaction blocking past its timeout (librdkafka after a broker bounce) does not stop the
    processor: a new producer fences the stuck one (its transaction aborted), the batch is consumed again, and
    each output is committed once."""
    monkeypatch.setattr(engine, "STUCK_OFFSETS_S", 0.2)
    with gather_with_one_outcome(settings) as (driver, topics):
        driver.stick_next("send_offsets_to_transaction")
        driver.run_once()
        assert driver.read(topics.ccd_result) == [] and driver.rows("gather") == {}
        assert driver.broker.epochs == {f"{driver.processors['gather'].group}-{settings.worker}": 2}
        driver.run_once()
        assert [r.detector for r in driver.read(topics.ccd_result)] == [0]
        assert [o.detector for o in driver.rows("gather")[VISIT].outcomes] == [0]


def test_a_stuck_commit_stops_the_processor_whose_table_is_then_restored(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit_transaction that never answers may have committed: the processor stops (its worker restarts)
    rather than go on with a table that may lack the batch; restarted, it has the batch once."""
    monkeypatch.setattr(engine, "STUCK_CALL_S", 0.2)
    with gather_with_one_outcome(settings) as (driver, topics):
        driver.stick_next("commit_transaction")
        with pytest.raises(engine._Stuck, match="commit_transaction still running"):
            driver.run_once()
        driver.restart(GatherProcessor(settings))
        driver.pipe(topics.ccd_outcome, VISIT, outcome(1))
        driver.run()
        assert [r.detector for r in driver.read(topics.ccd_result)] == [0, 1]
        assert [o.detector for o in driver.rows("gather")[VISIT].outcomes] == [0, 1]


def test_a_batch_larger_than_the_producer_queue_waits_for_room(settings: Settings) -> None:
    """A batch with more outputs than librdkafka's local queue holds (a fresh application catching up a long
    backlog) waits for deliveries when the queue is full ("Local: Queue full") and commits it all once."""
    topics = declare(settings)
    with TopologyTestDriver(GatherProcessor(settings), now=NOW) as driver:
        driver.broker.producer_queue = 4
        driver.pipe(topics.visit_expected, VISIT, visit_expected(tuple(range(9))))
        for detector in range(9):
            driver.pipe(topics.ccd_outcome, VISIT, outcome(detector))
        driver.run()
        assert sorted(r.detector for r in driver.read(topics.ccd_result)) == list(range(9))
        assert len(driver.read(topics.visit_summary)) == 1


def test_sal_intake_feeds_the_gather_on_one_broker(settings: Settings, instruments: dict[str, Instrument],
                                                   surveys: SurveyTable) -> None:
    """Chained: the VisitExpected sal-intake commits is what the gather waits for; nine outcomes later, the
    visit has nine results and one summary."""
    topics = declare(settings)
    processors: list[TransactionalProcessor[Any]] = [SalIntake(settings, instruments, surveys),
                                                     GatherProcessor(settings)]
    with TopologyTestDriver(*processors, now=NOW) as driver:
        driver.pipe(topics.next_visit, "k", next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
        driver.run()
        assert driver.rows("gather")[VISIT].expected == list(range(9))
        for detector in range(9):
            driver.pipe(topics.ccd_outcome, VISIT, outcome(detector))
        driver.advance(60)
        driver.run()
        assert len(driver.read(topics.ccd_result)) == 9
        [summary] = driver.read(topics.visit_summary)
        assert summary.counts["success"] == 9 and summary.detectors_expected == 9
