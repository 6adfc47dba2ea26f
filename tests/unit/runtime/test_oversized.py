"""No record larger than the producer takes is produced: the summit's oversized nextVisit is one bounded dead
letter, and an input whose outputs (records or table rows) grow too large is a dead letter while the rest of its
batch commits; a tick's too large output is a dead letter itself."""

from __future__ import annotations

import sys

from confluent_kafka import Message

from streams.config import Settings
from streams.core.instruments import Instrument
from streams.core.surveys import SurveyTable
from streams.processors.sal_intake import SalIntake
from streams.runtime.dead_letters import PRODUCER_LIMIT, RECORD_OVERHEAD, VALUE_LIMIT
from streams.runtime.driver import TopologyTestDriver
from streams.runtime.engine import Batch, TransactionalProcessor
from streams.serde.records import NextVisit, VisitExpected
from tests.unit.core.flow import T0, next_visit
from tests.unit.runtime.visits import INSTRUMENT, NOW
from topology.graph import declare_graph
from topology.keys import visit_key
from topology.topics import declare

LIMIT = PRODUCER_LIMIT - RECORD_OVERHEAD
GROUPS = [f"2026-11-25T01:00:0{i}.000" for i in range(6)]


def largest_output(driver: TopologyTestDriver, inputs: set[str]) -> int:
    """The largest committed record (key and value) of every topic but the inputs, changelogs included."""
    sizes = {0}
    for topic, partitions in driver.broker.logs.items():
        for p in range(len(partitions) if topic not in inputs else 0):
            for message in driver.broker.fetch(topic, p, 0, sys.maxsize)[0]:
                sizes.add(len(message.key() or b"") + len(message.value() or b""))
    return max(sizes)


def test_a_million_character_survey_is_one_bounded_dead_letter_and_the_next_visit_is_fanned_out(
        settings: Settings, instruments: dict[str, Instrument], surveys: SurveyTable) -> None:
    """The issue's reproduction: a nextVisit whose survey is 1,000,000 characters (sent with message.max.bytes
    raised) is one dead letter naming the field, no record over the producer's limit is written, and the next
    nextVisit is fanned out."""
    topics = declare(settings)
    with TopologyTestDriver(SalIntake(settings, instruments, surveys), now=NOW) as driver:
        driver.pipe(topics.next_visit, "k", next_visit(GROUPS[0], instrument=INSTRUMENT, sent=T0,
                                                       survey="BLOCK-" + "x" * 999_994))
        driver.pipe(topics.next_visit, "k", next_visit(GROUPS[1], instrument=INSTRUMENT, sent=T0))
        driver.run()
        [letter] = driver.read(topics.dead_letter)
        assert letter.error_class == "FieldTooLongError" and letter.offset == 0
        assert letter.reason.startswith("NextVisit.survey is 1000000 characters long, over its limit of")
        assert {command.group_id for command in driver.read(topics.detector_commands)} == {GROUPS[1]}
        assert [expected.group_id for expected in driver.read(topics.visit_expected)] == [GROUPS[1]]
        assert largest_output(driver, {topics.next_visit.name}) <= LIMIT


class Bloater(TransactionalProcessor[VisitExpected]):
    """sal-intake's declaration: each nextVisit becomes a VisitExpected record and table row, with a survey of
    1,200,000 characters in the record for a survey "RECORD", in the row for "ROW" (outputs that outgrow their
    input); with `bloat_tick`, its first tick makes such a record and row of no input."""

    row_type = VisitExpected

    def __init__(self, settings: Settings, *, bloat_tick: bool = False) -> None:
        super().__init__(settings, declare_graph(settings).sal_intake)
        self.bloat_tick = bloat_tick

    def apply(self, batch: Batch[VisitExpected], message: Message, now: float) -> None:
        """Stage the visit's record and row, one of them bloated if its survey says so."""
        visit = self.decode(self.topics.next_visit, message, NextVisit)
        expected = VisitExpected(instrument=visit.instrument, group_id=visit.groupId, survey=visit.survey)
        bloated = expected.replace(survey="x" * 1_200_000)
        key = visit_key(visit.instrument, visit.groupId).encode()
        batch.records.append((self.topics.visit_expected, key, bloated if visit.survey == "RECORD" else expected))
        self.stage(batch, 0, visit.groupId, bloated if visit.survey == "ROW" else expected)

    def tick(self, batch: Batch[VisitExpected], now: float) -> None:
        """Once, a bloated record and row of no input."""
        if self.bloat_tick:
            self.bloat_tick = False
            bloated = VisitExpected(instrument=INSTRUMENT, group_id="tick", survey="x" * 1_100_000)
            batch.records.append((self.topics.visit_expected, b"tick", bloated))
            self.stage(batch, 0, "tick", bloated)


def test_an_input_whose_outputs_are_too_large_is_a_dead_letter_and_its_batch_commits(settings: Settings) -> None:
    """In one batch of five, the input whose record would be 1.2 MB and the one whose table row would be are dead
    letters saying so (none of their other outputs is written); the three others are produced and kept, in one
    cycle, and later cycles make nothing more of the batch."""
    topics = declare(settings)
    bloater = Bloater(settings)
    assert bloater.changelog is not None
    with TopologyTestDriver(bloater, now=NOW) as driver:
        for group, survey in zip(GROUPS, ["BLOCK-1", "RECORD", "BLOCK-2", "ROW", "BLOCK-3"], strict=False):
            driver.pipe(topics.next_visit, "k", next_visit(group, instrument=INSTRUMENT, survey=survey))
        driver.run_once()
        letters = driver.read(topics.dead_letter)
        assert [(letter.offset, letter.error_class) for letter in letters] == [(1, "OutputTooLargeError"),
                                                                              (3, "OutputTooLargeError")]
        assert letters[0].reason.startswith(f"its record for {topics.visit_expected.name} would be 1200")
        assert letters[0].reason.endswith(f"over the producer's limit of {LIMIT}")
        assert letters[1].reason.startswith(f"its record for {bloater.changelog.name} would be 1200")
        assert [expected.group_id for expected in driver.read(topics.visit_expected)] == [GROUPS[0], GROUPS[2],
                                                                                          GROUPS[4]]
        assert sorted(driver.rows("sal-intake")) == [GROUPS[0], GROUPS[2], GROUPS[4]]
        assert largest_output(driver, {topics.next_visit.name}) <= LIMIT
        driver.run()
        assert len(driver.read(topics.dead_letter)) == 2 and len(driver.read(topics.visit_expected)) == 3


def test_a_ticks_too_large_record_and_row_are_dead_letters_themselves(settings: Settings) -> None:
    """A record and a row no input made, too large to produce, are each a dead letter (of the output topic, with
    no offset, its value cut), and the row stays out of the table."""
    topics = declare(settings)
    bloater = Bloater(settings, bloat_tick=True)
    assert bloater.changelog is not None
    with TopologyTestDriver(bloater, now=NOW) as driver:
        driver.pipe(topics.next_visit, "k", next_visit(GROUPS[0], instrument=INSTRUMENT))
        driver.run_once()
        letters = driver.read(topics.dead_letter)
        assert sorted(letter.topic for letter in letters) == sorted([topics.visit_expected.name,
                                                                    bloater.changelog.name])
        assert all(letter.offset == -1 and letter.error_class == "OutputTooLargeError" for letter in letters)
        assert all(letter.value is not None and len(letter.value) == VALUE_LIMIT for letter in letters)
        assert [expected.group_id for expected in driver.read(topics.visit_expected)] == [GROUPS[0]]
        assert sorted(driver.rows("sal-intake")) == [GROUPS[0]]
        assert largest_output(driver, {topics.next_visit.name}) <= LIMIT
