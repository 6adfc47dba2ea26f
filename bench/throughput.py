"""Cases 2 and 3: the gather step as fast as it goes, against the same gather in the peers.

The harness fills the gather's input topics once (per visit: its VisitExpected, then 189 per-CCD
outcomes, keyed and partitioned by visit as the topology does), then runs each contender in
turn on those same topics, from the beginning, in its own consumer group:

- Prompt Streams: one real worker (faust CLI); its gather (exactly-once) emits per-CCD results,
  metrics and the table's changelog as well as the summaries;
- Kafka Streams (bench/kstreams/, exactly_once_v2): count outcomes per visit key, emit one summary
  when the count reaches 189;
- Quix Streams (bench/quix_gather.py, exactly-once): the same count;
- the ceiling (bench/ceiling.py): confluent-kafka consuming the outcomes and producing each one
  unchanged, no processing, no transactions.

Every contender's output topic stamps records as the broker appends them (LogAppendTime); the
rate is (outputs - 1) / (last stamp - first stamp), so start-up and group joins are not counted.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from bench.harness import (
    LOG_APPEND_TIME,
    LSSTCAM_DETECTORS,
    SURVEY,
    bench_settings,
    create_topic,
    gather_visit,
    rss_bytes,
    start_process,
    stop_process,
)
from stack.cluster import PROJECT_ROOT, ClusterState
from stack.java import find_java
from streams.clock import tai_now
from streams.config import Settings
from streams.ops.workers import WorkerPool
from streams.runtime import admin
from streams.serde.records import CcdResult, VisitExpected
from streams.simulate.visits import Received, Visits
from topology.keys import visit_key
from topology.tables import changelogs

log = logging.getLogger(__name__)
KSTREAMS_LIB = PROJECT_ROOT / ".local" / "bench" / "kstreams" / "lib"
QUIX_PYTHON = PROJECT_ROOT / ".local" / "venv-quix" / "bin" / "python"
RUN_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Rate:
    """What one contender did with the same input."""

    name: str
    outputs: int
    """Records it emitted that count (summaries; for the ceiling, every record)."""
    per_output: int
    """CCD results each output stands for (189 for a summary, 1 for the ceiling)."""
    seconds: float
    rss_start: int = 0
    rss_end: int = 0

    @property
    def results_per_second(self) -> float:
        """CCD results through the step per second."""
        return (self.outputs - 1) * self.per_output / self.seconds if self.seconds > 0 else float("nan")

    @property
    def visits_per_second(self) -> float:
        """Visits through the step per second."""
        return self.results_per_second / LSSTCAM_DETECTORS


def fill(settings: Settings, visits: int) -> Visits:
    """Create the topology's topics and write `visits` visits of outcomes into the gather's inputs."""
    driver = Visits(settings, survey=SURVEY)
    topics = driver.topics
    summary = replace(topics.visit_summary, config={**topics.visit_summary.config, **LOG_APPEND_TIME})
    specs = [*(summary if spec.name == summary.name else spec for spec in topics.all()), *changelogs(settings)]
    admin.ensure_topics(settings, specs)
    admin.register_schemas(driver.codec, specs)
    now = tai_now()
    for number in range(visits):
        group, expected, outcomes = gather_visit(number, now)
        key = visit_key("LSSTCam", group).encode()
        _produce(driver, topics.visit_expected.name, key, expected, topics.visit_expected.partition_of(expected))
        for outcome in outcomes:
            _produce(driver, topics.ccd_outcome.name, key, outcome, topics.ccd_outcome.partition_of(outcome))
    driver.flush()
    return driver


def _produce(driver: Visits, topic: str, key: bytes, record: VisitExpected | CcdResult, partition: int) -> None:
    while True:
        try:
            driver.producer.produce(topic, key=key, value=driver.encode(topic, record), partition=partition)
            return
        except BufferError:  # the local queue is full: let deliveries drain it
            driver.producer.poll(0.1)


def _rate(name: str, received: list[Received], per_output: int) -> Rate:
    stamps = sorted(r.timestamp for r in received)
    return Rate(name, len(received), per_output, stamps[-1] - stamps[0] if len(stamps) > 1 else 0.0)


def _timed(name: str, driver: Visits, output: str, count: int, per_output: int,
           start: Callable[[], int], stop: Callable[[], None]) -> Rate:
    """Start a contender, wait for its `count` outputs, stop it; its rate and its memory."""
    started = time.monotonic()
    pid = start()
    rss_start = rss_bytes(pid)
    try:
        received = driver.receive(output, count, timeout=RUN_TIMEOUT_S, settle=1.0)
        rss_end = rss_bytes(pid)
    finally:
        stop()
    rate = replace(_rate(name, received, per_output), rss_start=rss_start, rss_end=rss_end)
    log.info("%s: %d outputs, %.0f results/s (%.0f s in all)", name, rate.outputs, rate.results_per_second,
             time.monotonic() - started)
    return rate


def prompt_streams(driver: Visits, root: Path, visits: int) -> Rate:
    """One Prompt Streams worker replays the filled topics through its exactly-once gather."""
    pool = WorkerPool(replace(driver.settings, pipeline_processes=1), root / "logs")

    def start() -> int:
        return pool.start("w1").process.pid

    return _timed("Prompt Streams", driver, driver.topics.visit_summary.name, visits, LSSTCAM_DETECTORS,
                  start, pool.stop_all)


def _peer(name: str, driver: Visits, root: Path, command: list[str], output: str, count: int,
          per_output: int) -> Rate:
    create_topic(driver.settings, output, driver.topics.ccd_outcome.partitions, LOG_APPEND_TIME)
    processes = []

    def start() -> int:
        processes.append(start_process(command, root / "logs" / f"{output}.log", driver.settings.to_env()))
        return processes[-1].pid

    def stop() -> None:
        for process in processes:
            stop_process(process)

    return _timed(name, driver, output, count, per_output, start, stop)


def kafka_streams(driver: Visits, root: Path, visits: int) -> Rate:
    """The Kafka Streams peer (bench/kstreams/), built by `make bench`."""
    settings = driver.settings
    output = f"{settings.topic_prefix}.kstreams-summary"
    command = [str(find_java(17)), "-Xms256m", "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
               "-cp", f"{KSTREAMS_LIB}/*", "org.lsst.promptstreams.bench.GatherCount", settings.cluster.bootstrap,
               driver.topics.ccd_outcome.name, output, str(LSSTCAM_DETECTORS), f"{settings.app_id}-kstreams",
               str(root / "kstreams-state")]
    return _peer("Kafka Streams", driver, root, command, output, visits, LSSTCAM_DETECTORS)


def quix_streams(driver: Visits, root: Path, visits: int) -> Rate:
    """The Quix Streams peer (bench/quix_gather.py), in its own virtualenv."""
    settings = driver.settings
    output = f"{settings.topic_prefix}.quix-summary"
    command = [str(QUIX_PYTHON), str(Path(__file__).with_name("quix_gather.py")),
               "--bootstrap", settings.cluster.bootstrap,
               "--input", driver.topics.ccd_outcome.name, "--output", output,
               "--expected", str(LSSTCAM_DETECTORS), "--group", f"{settings.app_id}-quix",
               "--state-dir", str(root / "quix-state")]
    return _peer("Quix Streams", driver, root, command, output, visits, LSSTCAM_DETECTORS)


def ceiling(driver: Visits, root: Path, visits: int) -> Rate:
    """confluent-kafka consuming and producing the same records, no processing."""
    settings = driver.settings
    output = f"{settings.topic_prefix}.ceiling"
    command = [sys.executable, "-m", "bench.ceiling", "--input", driver.topics.ccd_outcome.name,
               "--output", output, "--group", f"{settings.app_id}-ceiling"]
    return _peer("confluent-kafka ceiling", driver, root, command, output, visits * LSSTCAM_DETECTORS, 1)


CONTENDERS: dict[str, Callable[[Visits, Path, int], Rate]] = {
    "prompt-streams": prompt_streams, "kafka-streams": kafka_streams, "quix-streams": quix_streams,
    "ceiling": ceiling,
}


def run(state: ClusterState, root: Path, visits: int, contenders: list[str]) -> list[Rate]:
    """Fill the topics once, then time each contender on them."""
    folder = root / "gather"
    driver = fill(bench_settings(state, root, "gather"), visits)
    return [CONTENDERS[name](driver, folder / name, visits) for name in contenders]
