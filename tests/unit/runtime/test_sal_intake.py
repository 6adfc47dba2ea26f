"""sal-intake on the real engine cycle, its broker and registry in memory: nextVisit fans out, cancellations
follow it, inputs that cannot be used become dead letters, a registry outage delays and loses nothing."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from streams.config import Settings
from streams.core.instruments import Instrument
from streams.core.surveys import SurveyTable
from streams.observability import logs
from streams.processors.sal_intake import SalIntake
from streams.runtime.driver import TopologyTestDriver
from streams.serde.records import NextVisitCanceled
from tests.unit.core.flow import T0, next_visit
from tests.unit.runtime.visits import GROUP, INSTRUMENT, NOW
from topology.keys import detector_key, detector_partition
from topology.topics import Topics, declare

SAL_KEY = '{"name":"ScriptQueue","index":1,"topic":"logevent_nextVisit"}'
COMCAM = list(range(9))


@pytest.fixture
def topics(settings: Settings) -> Topics:
    """The topics of the test's settings."""
    return declare(settings)


@pytest.fixture
def driver(settings: Settings, instruments: dict[str, Instrument],
           surveys: SurveyTable) -> Iterator[TopologyTestDriver]:
    """sal-intake alone on an in-memory broker, with the app's instruments and surveys."""
    with TopologyTestDriver(SalIntake(settings, instruments, surveys), now=NOW) as driver:
        yield driver


def commands_of(driver: TopologyTestDriver, topics: Topics) -> list[tuple[str, int]]:
    """(action, detector) of every committed detector command."""
    return [(command.action, command.detector) for command in driver.read(topics.detector_commands)]


def test_next_visit_fans_out_to_every_detector(driver: TopologyTestDriver, topics: Topics) -> None:
    """One start command per active detector, each in its detector's partition, and one VisitExpected."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run_once()
    commands = driver.messages(topics.detector_commands)
    assert sorted(commands_of(driver, topics)) == [("start", d) for d in COMCAM]
    assert sorted((m.partition(), m.key()) for m in commands) == sorted(
        (detector_partition(d, topics.detector_commands.partitions), detector_key(INSTRUMENT, GROUP, d).encode())
        for d in COMCAM)
    [expected] = driver.read(topics.visit_expected)
    assert (expected.group_id, expected.detectors, expected.pipelines) == (GROUP, COMCAM, ["ap", "single-frame", "isr"])
    assert driver.rows("sal-intake")[GROUP] == expected
    assert driver.read(topics.dead_letter) == []


def test_next_visit_canceled_reaches_the_same_detectors(driver: TopologyTestDriver, topics: Topics) -> None:
    """The cancellation goes to the detectors the visit was fanned out to, as the table remembers them."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run_once()
    driver.pipe(topics.next_visit_canceled, SAL_KEY, NextVisitCanceled(salIndex=1, groupId=GROUP))
    driver.run_once()
    commands = driver.read(topics.detector_commands)
    assert sorted(c.detector for c in commands if c.action == "cancel") == COMCAM
    assert {c.group_id for c in commands} == {GROUP}


def test_a_json_next_visit_is_accepted_on_an_input_topic(driver: TopologyTestDriver, topics: Topics) -> None:
    """A JSON object (as typed into kcat) is decoded against the same schema and fanned out."""
    visit = next_visit(GROUP, instrument=INSTRUMENT, sent=T0)
    driver.pipe(topics.next_visit, SAL_KEY, json.dumps(visit.to_dict()).encode())
    driver.run_once()
    assert [e.group_id for e in driver.read(topics.visit_expected)] == [GROUP]
    assert len(driver.read(topics.detector_commands)) == len(COMCAM)


def test_an_undecodable_value_is_one_dead_letter_and_the_next_is_processed(driver: TopologyTestDriver,
                                                                          topics: Topics) -> None:
    """Garbage becomes exactly one dead letter saying where it came from and why; the visit after it is fanned
    out in the same batch."""
    where = driver.pipe(topics.next_visit, SAL_KEY, b"\x07not avro")
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run_once()
    [letter] = driver.read(topics.dead_letter)
    assert (letter.topic, letter.partition, letter.offset) == (topics.next_visit.name, where.partition, where.offset)
    assert (letter.value, letter.key, letter.agent) == (b"\x07not avro", SAL_KEY.encode(), "sal-intake")
    assert letter.error_class == "WireFormatError" and "magic byte" in letter.reason
    assert [e.group_id for e in driver.read(topics.visit_expected)] == [GROUP]
    driver.run_once()
    assert len(driver.read(topics.dead_letter)) == 1


def test_a_registry_outage_is_waited_out_without_dead_letters(driver: TopologyTestDriver, topics: Topics) -> None:
    """While the registry is down, the nextVisit cannot be decoded: nothing is produced and nothing is
    dead-lettered; once it is back, the visit is fanned out, once."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.registry.available = False
    for _ in range(3):
        driver.run_once()
    assert driver.read(topics.detector_commands) == [] and driver.read(topics.visit_expected) == []
    assert driver.rows("sal-intake") == {}
    driver.registry.available = True
    driver.run_once()
    driver.run_once()
    assert sorted(commands_of(driver, topics)) == [("start", d) for d in COMCAM]
    assert len(driver.read(topics.visit_expected)) == 1
    assert driver.read(topics.dead_letter) == []


def test_a_restart_does_not_fan_a_visit_out_twice(driver: TopologyTestDriver, topics: Topics, settings: Settings,
                                                  instruments: dict[str, Instrument], surveys: SurveyTable) -> None:
    """The nextVisit's offset was committed with its fan-out: a new sal-intake starts after it, and still
    knows the visit (restored from the changelog) to route its cancellation."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run_once()
    driver.restart(SalIntake(settings, instruments, surveys))
    driver.pipe(topics.next_visit_canceled, SAL_KEY, NextVisitCanceled(salIndex=1, groupId=GROUP))
    driver.run_once()
    assert sorted(commands_of(driver, topics)) == sorted((action, d) for action in ("start", "cancel") for d in COMCAM)
    assert len(driver.read(topics.visit_expected)) == 1


def test_old_visits_are_forgotten_on_the_clock_without_new_events(driver: TopologyTestDriver, topics: Topics,
                                                                  settings: Settings) -> None:
    """A quiet night: with no nextVisit after it, a visit is still forgotten once the retention time has passed
    since its fan-out (it was only when the next nextVisit came)."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run()
    driver.advance(settings.retention - 1)
    driver.run()
    assert list(driver.rows("sal-intake")) == [GROUP]
    driver.advance(2)
    driver.run()
    assert driver.rows("sal-intake") == {} and driver.processors["sal-intake"].rows == {0: {}}


class JsonLines(logging.Handler):
    """The JSON lines a worker would write, formatted as they are logged (the labels are those of that moment)."""

    def __init__(self) -> None:
        super().__init__()
        self.formatter_ = logs.JsonFormatter()
        self.entries: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(self.formatter_.format(record)))


def test_what_is_logged_while_handling_a_visit_is_labelled_with_it(driver: TopologyTestDriver,
                                                                   topics: Topics) -> None:
    """The processor binds the labels of the record it decoded: its event has the visit's instrument and group,
    and nothing logged after the record is labelled with it."""
    lines, logger = JsonLines(), logging.getLogger("streams")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
        driver.run_once()
        logs.events("streams.test").info("between records")
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    [fanned] = [e for e in lines.entries if e.get("event") == "next visit fanned out"]
    assert (fanned["instrument"], fanned["group"], fanned["detectors"]) == (INSTRUMENT, GROUP, len(COMCAM))
    assert "group" not in lines.entries[-1] and lines.entries[-1]["event"] == "between records"
