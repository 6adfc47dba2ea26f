"""Case 1: the framework's own latency under a real LSSTCam burst (and case 5: worker memory).

Real faust workers (the CLI, as users start them) run the full topology with the stand-in
pipeline at zero cost, so every millisecond measured is the framework's. Per visit: nextVisit,
wait until all 189 detectors have their start command, then all 378 raws (189 detectors x 2
snaps) at once; the next visit starts when this one's summary is readable.

What is timed, all on this machine's one clock (TAI seconds):
- per CCD, arrival -> start: the raw arrival event's `arrival_time` (stamped as the harness
  produces it; the later of the two snaps) to the pipeline's `process_start_time` (stamped
  inside the pipeline process as it begins to run), both carried in the per-CCD result;
- per visit, last result -> summary: the last CCD's `process_end_time` to the summary's
  `summary_time` (the gather's decision, just before its transaction), and to the moment a
  `read_committed` consumer of the harness receives it (after the commit);
- after the measured visits, CANCELED_VISITS more whose raws never come: nextVisitCanceled produced
  (its own stamp) -> their summary (all 189 detectors `canceled`) readable by that consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from bench.harness import LSSTCAM_DETECTORS, SURVEY, Spread, bench_settings, rss_bytes
from stack.cluster import ClusterState
from streams.clock import tai_minus_utc
from streams.config import Settings
from streams.ops.workers import WorkerPool
from streams.serde.records import DetectorCommand, VisitSummary
from streams.simulate.visits import Visits
from topology.keys import detector_partition

log = logging.getLogger(__name__)
SNAPS = 2
WARM_UP_VISITS = 2
VISIT_TIMEOUT_S = 60.0
SETTLE_S = 5.0
"""After the workers start, time for their last rebalance to finish before the first visit."""
PRELOAD_PAUSE_S = 0.3
"""After the fan-out, time for the (no-op) preloads to pass through the pipeline processes."""
CANCELED_VISITS = 10
"""Visits canceled after their fan-out, once the measured ones are done."""


@dataclass
class Overhead:
    """What one configuration (a number of workers) measured."""

    workers: int
    visits: int
    arrival_to_start: Spread
    first_to_start: Spread
    """Per visit, the least arrival -> start of its CCDs: the overhead without the burst's queue."""
    result_to_summary: Spread
    result_to_readable: Spread
    cancel_to_readable: Spread
    """nextVisitCanceled produced -> the canceled visit's summary readable."""
    rss_start: list[int] = field(default_factory=list)
    rss_warm: list[int] = field(default_factory=list)
    rss_end: list[int] = field(default_factory=list)
    seconds: float = 0.0
    lost: int = 0
    """Measured visits whose summary did not come within VISIT_TIMEOUT_S (not counted above)."""

    def growth_per_1000(self) -> list[float]:
        """Each worker's RSS growth per 1000 visits after the warm-up, in bytes."""
        return [(end - warm) * 1000.0 / self.visits for warm, end in zip(self.rss_warm, self.rss_end, strict=True)]


class Watcher:
    """A read_committed consumer of one topic, from its end, that waits for one group's record."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.consumer = Consumer(settings.kafka_config() | {
            "group.id": f"bench-watch-{topic}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        partitions = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])

    def until(self, done: Callable[[bytes], bool], timeout: float) -> list[tuple[bytes, float]]:
        """Values (with the UTC time each was received) until `done(value)` is true for one."""
        seen: list[tuple[bytes, float]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.consumer.consume(500, 0.05):
                if message.error() is None:
                    seen.append((message.value() or b"", time.time()))
                    if done(seen[-1][0]):
                        return seen
        raise TimeoutError(f"nothing marked done after {timeout} s ({len(seen)} records seen)")

    def close(self) -> None:
        """Leave."""
        self.consumer.close()


def run(state: ClusterState, root: Path, workers: int, visits: int) -> Overhead:
    """Start `workers` workers, send warm-up visits then `visits` measured ones, and time them."""
    settings = bench_settings(state, root, f"overhead-{workers}w")
    pool = WorkerPool(settings, root / f"overhead-{workers}w" / "logs")
    started = time.monotonic()
    try:
        for index in range(workers):
            pool.start(f"w{index + 1}")
        rss_start = [rss_bytes(w.process.pid) for w in pool.started]
        driver = Visits(settings, survey=SURVEY)
        commands = Watcher(settings, driver.topics.detector_commands.name)
        summaries = Watcher(settings, driver.topics.visit_summary.name)
        arrivals: dict[tuple[str, int], float] = {}
        readable: dict[str, float] = {}
        groups: list[str] = []
        rss_warm: list[int] = []
        lost = 0
        time.sleep(SETTLE_S)
        try:
            for number in range(WARM_UP_VISITS + visits):
                if number == WARM_UP_VISITS:
                    rss_warm = [rss_bytes(w.process.pid) for w in pool.started]
                group = f"2026-11-25T0{workers}:{number // 60:02d}:{number % 60:02d}.000"
                try:
                    _visit(driver, commands, summaries, group, number, arrivals, readable)
                except TimeoutError as error:  # reported as a lost visit; the run goes on
                    log.warning("visit %s: %s", group, error)
                    lost += number >= WARM_UP_VISITS
                    continue
                if number >= WARM_UP_VISITS:
                    groups.append(group)
            rss_end = [rss_bytes(w.process.pid) for w in pool.started]
            canceled = [_canceled(driver, commands, summaries, f"2026-11-25T1{workers}:00:{number:02d}.000")
                        for number in range(CANCELED_VISITS)]
        finally:
            commands.close()
            summaries.close()
        results = [r for r in driver.results(LSSTCAM_DETECTORS * len(groups), timeout=120, settle=1.0)
                   if r.group_id in set(groups)]
        done = {s.group_id: s for s in driver.summaries(len(groups), timeout=60, settle=1.0)}
    finally:
        pool.stop_all()
    to_start = [r.process_start_time - arrivals[(r.group_id, r.detector)] for r in results]
    least: dict[str, float] = {}
    last_end: dict[str, float] = {}
    for r, latency in zip(results, to_start, strict=True):
        least[r.group_id] = min(least.get(r.group_id, latency), latency)
        last_end[r.group_id] = max(last_end.get(r.group_id, 0.0), r.process_end_time)
    to_summary = [done[g].summary_time - last_end[g] for g in groups]
    to_readable = [readable[g] - last_end[g] for g in groups]
    return Overhead(workers, len(groups), Spread.of(to_start), Spread.of(list(least.values())),
                    Spread.of(to_summary), Spread.of(to_readable), Spread.of(canceled),
                    rss_start, rss_warm, rss_end, time.monotonic() - started, lost)


def announce(driver: Visits, commands: Watcher, group: str) -> None:
    """An LSSTCam nextVisit, and the wait until all 189 detectors have their start command.

    Raises:
        TimeoutError: the fan-out did not complete within VISIT_TIMEOUT_S.
    """
    driver.next_visit(group, instrument="LSSTCam", nimages=SNAPS, duration=30.0)
    starts: set[int] = set()

    def fanned_out(value: bytes) -> bool:
        command = driver.codec.decode(value, DetectorCommand)
        if command.group_id == group and command.action == "start":
            starts.add(command.detector)
        return len(starts) == LSSTCAM_DETECTORS

    commands.until(fanned_out, VISIT_TIMEOUT_S)


def _canceled(driver: Visits, commands: Watcher, summaries: Watcher, group: str) -> float:
    """A visit canceled once fanned out, before any raw: seconds from the cancellation to its summary readable."""
    announce(driver, commands, group)
    time.sleep(PRELOAD_PAUSE_S)
    sent = driver.cancel(group)
    summary, readable = summary_of(driver, summaries, group)
    if summary.counts.get("canceled") != LSSTCAM_DETECTORS:
        raise AssertionError(f"canceled visit {group}: {summary.counts}")
    return readable - sent


def summary_of(driver: Visits, summaries: Watcher, group: str) -> tuple[VisitSummary, float]:
    """The group's visit summary, and when it became readable (TAI).

    Raises:
        TimeoutError: no summary within VISIT_TIMEOUT_S.
    """
    codec = driver.codec
    seen = summaries.until(lambda value: codec.decode(value, VisitSummary).group_id == group, VISIT_TIMEOUT_S)
    return codec.decode(seen[-1][0], VisitSummary), seen[-1][1] + tai_minus_utc()


def _visit(driver: Visits, commands: Watcher, summaries: Watcher, group: str, number: int,
           arrivals: dict[tuple[str, int], float], readable: dict[str, float]) -> None:
    """One visit: nextVisit, the fan-out, every raw at once, then its summary."""
    announce(driver, commands, group)
    time.sleep(PRELOAD_PAUSE_S)
    spec = driver.topics.raw_image_available
    for snap in range(SNAPS):
        for detector in range(LSSTCAM_DETECTORS):  # each stamped as it is produced, not before the burst
            raw = driver.raw(group, detector, snap, number * SNAPS + snap + 1, instrument="LSSTCam")
            driver.producer.produce(spec.name, value=driver.encode(spec.name, raw),
                                    partition=detector_partition(detector, spec.partitions))
            arrivals[(group, detector)] = raw.arrival_time  # the later snap's stamp wins
    driver.flush()
    readable[group] = summary_of(driver, summaries, group)[1]
    log.info("visit %s: summary readable", group)
