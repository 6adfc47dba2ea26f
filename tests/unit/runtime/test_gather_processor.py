"""The gather processor on the real engine cycle, its broker in memory: one result per detector, one summary."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from streams.config import Settings
from streams.processors.gather import GatherProcessor
from streams.runtime.driver import TopologyTestDriver
from tests.unit.runtime.visits import GROUP, INSTRUMENT, NOW, outcome, visit_expected
from topology.keys import detector_key, visit_key
from topology.topics import declare

VISIT = visit_key(INSTRUMENT, GROUP)


@pytest.fixture
def driver(settings: Settings) -> Iterator[TopologyTestDriver]:
    """The gather alone on an in-memory broker."""
    with TopologyTestDriver(GatherProcessor(settings), now=NOW) as driver:
        yield driver


def pipe_visit(driver: TopologyTestDriver, settings: Settings, detectors: tuple[int, ...]) -> None:
    """The VisitExpected of three detectors, then the outcomes of `detectors`."""
    topics = declare(settings)
    driver.pipe(topics.visit_expected, VISIT, visit_expected())
    for detector in detectors:
        driver.pipe(topics.ccd_outcome, VISIT, outcome(detector))


def results(driver: TopologyTestDriver, settings: Settings) -> list[int]:
    """The detectors of the committed per-CCD results, in order."""
    return sorted(result.detector for result in driver.read(declare(settings).ccd_result))


def test_three_outcomes_give_three_results_and_one_summary(driver: TopologyTestDriver, settings: Settings) -> None:
    """Every expected detector gets its result, keyed by detector, and the visit its one summary."""
    pipe_visit(driver, settings, (0, 1, 2))
    driver.run_once()
    topics = declare(settings)
    assert results(driver, settings) == [0, 1, 2]
    assert [m.key() for m in driver.messages(topics.ccd_result)] == [
        detector_key(INSTRUMENT, GROUP, d).encode() for d in (0, 1, 2)]
    [summary] = driver.read(topics.visit_summary)
    assert (summary.group_id, summary.reason, summary.counts["success"]) == (GROUP, "complete", 3)
    assert driver.rows("gather")[VISIT].summary_time == NOW


def test_a_repeated_outcome_adds_nothing(driver: TopologyTestDriver, settings: Settings) -> None:
    """An outcome delivered again (at least once upstream) after the summary produces no output."""
    pipe_visit(driver, settings, (0, 1, 2))
    driver.run_once()
    driver.pipe(declare(settings).ccd_outcome, VISIT, outcome(1, "failed"))
    driver.run_once()
    assert results(driver, settings) == [0, 1, 2]
    assert len(driver.read(declare(settings).visit_summary)) == 1


@pytest.mark.parametrize("same_disk", [False, True], ids=["new-worker", "same-disk"])
def test_a_restart_mid_visit_still_ends_with_one_summary(driver: TopologyTestDriver, settings: Settings,
                                                         tmp_path: Path, same_disk: bool) -> None:
    """A new gather (on an empty disk: from the changelog alone; or on the old one: its local copy and the
    changelog's tail) has the visit's progress back, and neither repeats the results sent nor loses the visit."""
    pipe_visit(driver, settings, (0, 1))
    driver.run_once()
    assert results(driver, settings) == [0, 1]
    restarted = settings if same_disk else replace(settings, data_dir=str(tmp_path / "other"))
    driver.restart(GatherProcessor(restarted))
    driver.run_once()  # joins the group: the table is restored
    assert [o.detector for o in driver.rows("gather")[VISIT].outcomes] == [0, 1]
    driver.pipe(declare(settings).ccd_outcome, VISIT, outcome(2))
    driver.run_once()
    assert results(driver, settings) == [0, 1, 2]
    [summary] = driver.read(declare(settings).visit_summary)
    assert summary.counts["success"] == 3


def test_an_aborted_commit_shows_nothing_and_the_retry_sends_each_output_once(driver: TopologyTestDriver,
                                                                           settings: Settings) -> None:
    """The transaction that fails to commit is aborted: no result, no summary, no table change, no offset; the
    batch is consumed again and its outputs are committed once."""
    pipe_visit(driver, settings, (0, 1, 2))
    driver.fail_next_commit()
    driver.run_once()
    assert results(driver, settings) == [] and driver.read(declare(settings).visit_summary) == []
    assert driver.rows("gather") == {}
    driver.run_once()
    assert results(driver, settings) == [0, 1, 2]
    assert len(driver.read(declare(settings).visit_summary)) == 1
    driver.run_once()
    assert results(driver, settings) == [0, 1, 2], "the retried batch's offsets were committed with it"
