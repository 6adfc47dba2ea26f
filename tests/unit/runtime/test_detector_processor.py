"""The detector processor on the real engine cycle, chained after sal-intake and before the gather, its broker
in memory: starts, raws, completions and deadlines move each detector to one outcome, and the pipeline
processes are asked to act only once the batch that decided it has committed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest

from streams.config import Settings
from streams.core.instruments import Instrument
from streams.core.surveys import SurveyTable
from streams.processors.detector import DetectorProcessor
from streams.processors.gather import GatherProcessor
from streams.processors.sal_intake import SalIntake
from streams.runtime.driver import TopologyTestDriver
from streams.serde.records import CcdResult, DetectorProgress, RawImageAvailable
from tests.unit.core.flow import T0, next_visit
from tests.unit.runtime.visits import GROUP, INSTRUMENT, NOW
from topology.keys import detector_key, detector_partition, snap_key
from topology.topics import Topics, declare

SAL_KEY = '{"name":"ScriptQueue","index":1,"topic":"logevent_nextVisit"}'
COMCAM = range(9)


@dataclass
class Pipelines:
    """Stands for the worker's pipeline processes: records what the detector processor asks of them."""

    asked: list[tuple[str, int]] = field(default_factory=list)
    running: set[str] = field(default_factory=set)

    def preload(self, progress: DetectorProgress) -> None:
        self.asked.append(("preload", progress.detector))

    def dispatch(self, progress: DetectorProgress) -> None:
        self.asked.append(("dispatch", progress.detector))
        self.running.add(detector_key(progress.instrument, progress.group_id, progress.detector))

    def abandon(self, progress: DetectorProgress) -> None:
        self.asked.append(("abandon", progress.detector))

    def busy(self, key: str) -> bool:
        return key in self.running

    def times(self, action: str) -> dict[int, int]:
        counts: dict[int, int] = {}
        for done, detector in self.asked:
            if done == action:
                counts[detector] = counts.get(detector, 0) + 1
        return counts


@pytest.fixture
def topics(settings: Settings) -> Topics:
    """The topics of the test's settings."""
    return declare(settings)


@pytest.fixture
def pipelines() -> Pipelines:
    """The stand-in pipeline processes."""
    return Pipelines()


def detector_processor(settings: Settings, instruments: dict[str, Instrument], pipelines: Pipelines,
                       ) -> DetectorProcessor:
    """The processor as the app builds it; effects run at once instead of on the event loop."""
    def run_now(call: Callable[[], object]) -> object:
        return call()
    return DetectorProcessor(settings, instruments, pipelines, run_now)  # type: ignore[arg-type]


@pytest.fixture
def driver(settings: Settings, instruments: dict[str, Instrument], surveys: SurveyTable,
           pipelines: Pipelines) -> Iterator[TopologyTestDriver]:
    """sal-intake -> detector -> gather on one in-memory broker."""
    with TopologyTestDriver(SalIntake(settings, instruments, surveys),
                            detector_processor(settings, instruments, pipelines), GatherProcessor(settings),
                            now=NOW) as driver:
        yield driver


def raw(settings: Settings, detector: int, snap: int) -> RawImageAvailable:
    """A raw of the visit, under the data root."""
    return RawImageAvailable(instrument=INSTRUMENT, group_id=GROUP, detector=detector, snap=snap,
                             exposure_id=2026112500010 + snap, arrival_time=NOW,
                             uri=f"file://{settings.data_root}/raws/{snap}/{detector}.fits")


def send_raws(driver: TopologyTestDriver, topics: Topics, settings: Settings, snaps: tuple[int, ...] = (0, 1)) -> None:
    for detector in COMCAM:
        for snap in snaps:
            driver.pipe(topics.raw_image_available, snap_key(INSTRUMENT, GROUP, detector, snap),
                        raw(settings, detector, snap))


def complete(driver: TopologyTestDriver, topics: Topics, detectors: range = COMCAM, copies: int = 1) -> None:
    """The pipeline processes send each detector's completion (`copies` times, as after a crash)."""
    for detector in detectors:
        for _ in range(copies):
            driver.pipe(topics.pipeline_done, detector_key(INSTRUMENT, GROUP, detector),
                        CcdResult(instrument=INSTRUMENT, group_id=GROUP, detector=detector, status="success"))


def test_a_visit_goes_from_next_visit_to_one_result_per_detector_and_one_summary(
        driver: TopologyTestDriver, topics: Topics, settings: Settings, pipelines: Pipelines) -> None:
    """Each detector is preloaded at its start, dispatched once with both snaps, and ends once."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run()
    assert pipelines.times("preload") == dict.fromkeys(COMCAM, 1) and not pipelines.times("dispatch")
    send_raws(driver, topics, settings)
    driver.run()
    assert pipelines.times("dispatch") == dict.fromkeys(COMCAM, 1)
    complete(driver, topics, copies=2)
    driver.run()
    assert sorted(r.detector for r in driver.read(topics.ccd_outcome)) == list(COMCAM)
    assert sorted((r.detector, r.status) for r in driver.read(topics.ccd_result)) == [(d, "success") for d in COMCAM]
    [summary] = driver.read(topics.visit_summary)
    assert summary.counts["success"] == 9
    assert {row.phase for row in driver.rows("detector").values()} == {"done"}


def test_nothing_is_asked_of_the_pipelines_before_the_batch_commits(
        driver: TopologyTestDriver, topics: Topics, settings: Settings, pipelines: Pipelines) -> None:
    """An aborted transaction dispatches nothing; its retry dispatches each detector once."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run()
    send_raws(driver, topics, settings)
    driver.run_once("sal-intake")
    driver.fail_next_commit()
    driver.run_once("detector")
    assert pipelines.times("dispatch") == {} and driver.read(topics.ccd_outcome) == []
    driver.run()
    assert pipelines.times("dispatch") == dict.fromkeys(COMCAM, 1)


def test_a_raw_in_another_partition_is_routed_to_its_detector_and_processed_once(
        driver: TopologyTestDriver, topics: Topics, settings: Settings, pipelines: Pipelines) -> None:
    """As kcat without -p sends it: moved to the detector's own partition first."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0, nimages=1))
    driver.run()
    owner = detector_partition(4, topics.raw_image_available.partitions)
    driver.pipe(topics.raw_image_available, b"anything", raw(settings, 4, 0), partition=(owner + 1) % 4)
    driver.run()
    assert pipelines.times("dispatch") == {4: 1}
    routed = sorted(m.partition() for m in driver.messages(topics.raw_image_available))
    assert routed == sorted([(owner + 1) % 4, owner])


def test_the_image_deadline_times_a_detector_out_on_the_tick(
        driver: TopologyTestDriver, topics: Topics, settings: Settings, pipelines: Pipelines) -> None:
    """No raw by the deadline: a timeout outcome and an abandoned preload; one snap of two: processed as is."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run()
    driver.pipe(topics.raw_image_available, snap_key(INSTRUMENT, GROUP, 0, 0), raw(settings, 0, 0))
    driver.run()
    deadline = max(row.image_deadline for row in driver.rows("detector").values())
    driver.now = deadline + 1
    driver.run()
    outcomes = {r.detector: r.status for r in driver.read(topics.ccd_outcome)}
    assert outcomes == {d: "timeout" for d in COMCAM if d != 0}
    assert pipelines.times("dispatch") == {0: 1}
    assert pipelines.times("abandon") == {d: 1 for d in COMCAM if d != 0}
    driver.run()
    assert len(driver.read(topics.ccd_outcome)) == 8, "a deadline passes once"


def test_a_restarted_worker_dispatches_again_what_was_processing(
        driver: TopologyTestDriver, topics: Topics, settings: Settings, instruments: dict[str, Instrument],
        pipelines: Pipelines) -> None:
    """After a crash mid-pipeline, the table says `processing` and nothing runs here: dispatched again, and
    the visit still ends with one result per detector."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    driver.run()
    send_raws(driver, topics, settings)
    driver.run()
    restarted = Pipelines()
    driver.restart(detector_processor(replace(settings), instruments, restarted))
    driver.run()
    assert restarted.times("dispatch") == dict.fromkeys(COMCAM, 1)
    complete(driver, topics)
    driver.run()
    assert sorted(r.detector for r in driver.read(topics.ccd_result)) == list(COMCAM)
    assert len(driver.read(topics.visit_summary)) == 1


def test_finished_detectors_leave_memory_but_still_stop_repeats_until_they_expire(
        driver: TopologyTestDriver, topics: Topics, settings: Settings) -> None:
    """Memory holds the detectors in play; a finished one is read back from RocksDB for a repeated completion,
    and swept away once the retention time has passed."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0))
    send_raws(driver, topics, settings)
    driver.run()
    assert sum(len(rows) for rows in driver.processors["detector"].rows.values()) == 9
    complete(driver, topics)
    driver.run()
    assert driver.processors["detector"].rows == {p: {} for p in driver.processors["detector"].rows}
    complete(driver, topics)
    driver.run()
    assert len(driver.read(topics.ccd_outcome)) == 9, "a repeated completion of a finished detector emits nothing"
    assert len(driver.rows("detector")) == 9
    driver.advance(settings.retention + 1)
    driver.run()
    assert driver.rows("detector") == {}


def test_a_flood_of_raws_for_a_finished_detector_neither_grows_nor_keeps_its_row(
        driver: TopologyTestDriver, topics: Topics, settings: Settings, pipelines: Pipelines) -> None:
    """20,000 raws for one detector after its result: its row stays under 1 kB, the raws beyond the most it
    records write nothing, none is a dead letter or processed, and the row is still forgotten `retention` after
    the result (each raw refreshed it, and the row grew to 100 kB at a cost per raw that grew with it)."""
    driver.pipe(topics.next_visit, SAL_KEY, next_visit(GROUP, instrument=INSTRUMENT, sent=T0, nimages=1))
    send_raws(driver, topics, settings, snaps=(0,))
    driver.run()
    complete(driver, topics)
    driver.run()
    driver.advance(settings.retention / 2)
    processor = driver.processors["detector"]
    assert processor.changelog is not None
    key, partition = detector_key(INSTRUMENT, GROUP, 4), detector_partition(4, topics.raw_image_available.partitions)
    writes = []
    for flood in range(2):
        for exposure in range(10_000):
            driver.pipe(topics.raw_image_available, snap_key(INSTRUMENT, GROUP, 4, 0),
                        replace(raw(settings, 4, 0), exposure_id=2026112600000 + 10_000 * flood + exposure))
        driver.run()
        writes.append(len(driver.messages(processor.changelog)))
        row = processor.stores[partition].get(key.encode())
        assert row is not None and len(row) < 1024
    assert writes[1] == writes[0], "raws beyond the limit change nothing"
    assert driver.read(topics.dead_letter) == [] and pipelines.times("dispatch") == dict.fromkeys(COMCAM, 1)
    driver.advance(settings.retention / 2 + 1)
    driver.run()
    assert driver.rows("detector") == {}
