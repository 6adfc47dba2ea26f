"""Case 6: alerts. Last raw -> alerts readable per CCD, and association and packaging per CCD.

Two runs, each with one real faust worker (the CLI, as users start them), its own topics, alert
topic and SQLite APDB (the worker creates it on start):
- the stand-in pipeline with `standin_dia_sources` synthetic DIA sources per CCD, which go through
  the real association, the real APDB and the real alert publisher: LSSTCam visits of all 189
  detectors x 2 snaps, sent as case 1 sends them (nextVisit, the fan-out, then every raw at once),
  all pointing at one field so association has history; one warm-up visit is not counted;
- the built-in Alert Production on a small simulated night (streams/simulate/night.py): two visits
  of one field, 3 detectors of 1024 x 1024 pixels, two pipeline processes.

What is timed, on this machine's one clock (TAI seconds): per CCD, from the later snap's raw arrival
event (`arrival_time`, stamped as the harness produces it) to the moment a `read_committed` consumer
of the alert topic (from its end) receives the last alert of that CCD (an alert's CCD is read from
its diaSourceId, the first field of the Avro body, without decoding the packet). Association and
packaging are the pipeline's own step times (`associateApdbTime`, `packageAlertsTime` of each
per-CCD result). A visit is complete when every CCD has its result and as many alerts as the
result's `alertCount`; a CCD still incomplete after VISIT_TIMEOUT_S is counted as lost.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from bench.harness import LSSTCAM_DETECTORS, SURVEY, Spread, bench_settings
from bench.overhead import PRELOAD_PAUSE_S, SETTLE_S, SNAPS, Watcher, announce
from stack.cluster import ClusterState
from streams.clock import tai_minus_utc, tai_now
from streams.config import Settings
from streams.ops.workers import WorkerPool
from streams.science.association import DETECTOR_BITS, SOURCE_BITS, visit_of
from streams.science.geometry import CcdShape
from streams.serde.records import CcdResult, DetectorCommand, RawImageAvailable
from streams.simulate.night import FILTER, Night, PlannedVisit, plan_night, write_night
from streams.simulate.visits import Visits, exposure_id
from topology.keys import detector_partition

log = logging.getLogger(__name__)
DIA_SOURCES = 10
"""Synthetic DIA sources per CCD of the stand-in run."""
WARM_UP_VISITS = 1
VISIT_TIMEOUT_S = 120.0
"""How long a visit's alerts may take before its incomplete CCDs are counted as lost."""
AP_DETECTORS = (0, 94, 188)
AP_SIZE = 1024
AP_VISITS = 2
AP_PROCESSES = 2
AP_LEAD_S = 3.0
"""Real payload: from the fan-out to the first snap's raws (the preload's time: calibrations, templates, APDB)."""
AP_SNAP_INTERVAL_S = 0.5
FRAMING = 5
"""Confluent framing: magic byte and schema id, before the Avro body."""


@dataclass
class AlertRun:
    """What one run (a pipeline) measured."""

    label: str
    visits: int
    ccds: int
    """CCDs whose every alert was read within the visit's timeout (those with alerts are the latency's sample)."""
    lost: int
    """CCDs of the measured visits without a successful result or with alerts missing at the timeout."""
    alerts: int
    """Alerts read of the measured visits."""
    raw_to_alerts: Spread
    associate: Spread
    package: Spread
    raw_to_start: Spread
    """Of the latency: last raw -> the pipeline's start (the queue of CCDs ahead, in the pipeline processes)."""
    end_to_readable: Spread
    """Of the latency: the pipeline's end -> its last alert received (outcome, publisher, transaction)."""
    preloaded: int = 0
    """Measured CCDs whose preload had finished before their last raw arrived."""
    processes: int = 0
    """The worker's pipeline processes."""
    seconds: float = 0.0


def dia_source_id(value: bytes) -> int:
    """The diaSourceId of a Confluent-framed alert: the first field of the Avro body, a zigzag varint long."""
    shift = result = 0
    for byte in value[FRAMING:FRAMING + 10]:
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
    raise ValueError("the alert's body does not start with a long")


def detector_of(source_id: int) -> int:
    """The detector packed in a DIA source id."""
    return (source_id >> SOURCE_BITS) & ((1 << DETECTOR_BITS) - 1)


class Tracker:
    """A read_committed consumer of the alert topic and the per-CCD results, from their ends: when each CCD's
    alerts are received (TAI), and its result."""

    def __init__(self, settings: Settings, driver: Visits) -> None:
        self.alert_topic = driver.topics.alerts.name
        self.result_topic = driver.topics.ccd_result.name
        self.codec = driver.codec
        self.consumer = Consumer(settings.kafka_config() | {
            "group.id": f"bench-watch-{self.alert_topic}", "enable.auto.commit": False,
            "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
        assigned = []
        for topic in (self.alert_topic, self.result_topic):
            partitions = self.consumer.list_topics(topic, timeout=30).topics[topic].partitions
            if not partitions:
                raise RuntimeError(f"topic {topic} does not exist (the worker creates it on start)")
            assigned += [TopicPartition(topic, p, OFFSET_END) for p in partitions]
        self.consumer.assign(assigned)
        self.offset = tai_minus_utc()
        self.received: dict[tuple[int, int], list[float]] = {}
        """(visit, detector) -> when each of its alerts was received (TAI)."""
        self.results: dict[tuple[str, int], CcdResult] = {}

    def poll(self, seconds: float) -> None:
        """Read what comes for `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            for message in self.consumer.consume(500, 0.05):
                if message.error() is not None:
                    continue
                if message.topic() == self.alert_topic:
                    source = dia_source_id(message.value() or b"")
                    key = (int(visit_of(np.array([source]))[0]), detector_of(source))
                    self.received.setdefault(key, []).append(time.time() + self.offset)
                else:
                    result = self.codec.decode(message.value() or b"", CcdResult)
                    self.results[(result.group_id, result.detector)] = result
            if time.monotonic() >= deadline:
                return

    def complete(self, group: str, visit: int, detector: int) -> bool:
        """The CCD has its result and every alert it announces."""
        result = self.results.get((group, detector))
        return result is not None and len(self.received.get((visit, detector), ())) >= _alert_count(result)

    def wait(self, group: str, visit: int, detectors: Iterable[int], timeout: float) -> set[int]:
        """Read until every CCD of the visit is complete or the timeout; the complete CCDs."""
        waiting = set(detectors)
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            self.poll(0.0)
            waiting = {d for d in waiting if not self.complete(group, visit, d)}
        done = {d for d in detectors if self.complete(group, visit, d)}
        if waiting:
            log.warning("visit %s: %d CCD(s) without all their alerts after %.0f s", group, len(waiting), timeout)
        return done

    def close(self) -> None:
        """Leave."""
        self.consumer.close()


def _alert_count(result: CcdResult) -> int:
    return int(result.metrics.get("alertCount", 0))


@dataclass
class _Visit:
    """A visit sent, and what was known of it when its wait ended."""

    group: str
    visit: int
    arrivals: dict[int, float]
    """Detector -> the later snap's arrival_time (TAI)."""
    complete: set[int]


def _summarise(label: str, settings: Settings, tracker: Tracker, measured: list[_Visit], started: float) -> AlertRun:
    """Per CCD of the measured visits: last raw -> last alert received, association and packaging."""
    latencies: list[float] = []
    to_start: list[float] = []
    to_readable: list[float] = []
    associate: list[float] = []
    package: list[float] = []
    alerts = ccds = lost = preloaded = 0
    for sent in measured:
        for detector, arrival in sent.arrivals.items():
            result = tracker.results.get((sent.group, detector))
            times = tracker.received.get((sent.visit, detector), [])
            alerts += len(times)
            if result is not None:  # the pipeline's step times, whether its alerts came in time or not
                associate += [result.metrics["associateApdbTime"]] if "associateApdbTime" in result.metrics else []
                package += [result.metrics["packageAlertsTime"]] if "packageAlertsTime" in result.metrics else []
            if result is None or result.status != "success" or detector not in sent.complete:
                lost += 1
                continue
            ccds += 1
            if times:  # a CCD with no DIA source has no alert to time
                latencies.append(max(times) - arrival)
                to_start.append(result.process_start_time - arrival)
                to_readable.append(max(times) - result.process_end_time)
                preloaded += 0 < result.preload_done_time <= arrival
    return AlertRun(label, len(measured), ccds, lost, alerts, Spread.of(latencies), Spread.of(associate),
                    Spread.of(package), Spread.of(to_start), Spread.of(to_readable),
                    preloaded, settings.pipeline_processes, time.monotonic() - started)


def run(state: ClusterState, root: Path, visits: int) -> list[AlertRun]:
    """Both runs: the stand-in, then the built-in AP."""
    return [standin(state, root, visits), real_payload(state, root)]


def _alert_settings(state: ClusterState, root: Path, name: str, **changes: object) -> Settings:
    """A case's settings with its own alert topic and APDB."""
    return bench_settings(state, root, name, alert_topic=f"bench-{name}.lsst-alerts-v11",
                          apdb_config=str(root / name / "apdb" / "apdb.yaml"), **changes)


def standin(state: ClusterState, root: Path, visits: int) -> AlertRun:
    """One worker, the stand-in pipeline with DIA_SOURCES per CCD, a warm-up visit then `visits` of one field."""
    name = "alerts-standin"
    settings = _alert_settings(state, root, name, standin_dia_sources=DIA_SOURCES)
    pool = WorkerPool(settings, root / name / "logs")
    started = time.monotonic()
    measured: list[_Visit] = []
    try:
        pool.start("w1")
        driver = Visits(settings, survey=SURVEY)
        commands = Watcher(settings, driver.topics.detector_commands.name)
        tracker = Tracker(settings, driver)
        try:
            tracker.poll(SETTLE_S)
            for number in range(WARM_UP_VISITS + visits):
                sent = _standin_visit(driver, commands, tracker, f"2026-11-25T06:00:{number:02d}.000", number)
                if number >= WARM_UP_VISITS:
                    measured.append(sent)
            return _summarise(f"stand-in, {DIA_SOURCES} DIA sources per CCD", settings, tracker, measured, started)
        finally:
            commands.close()
            tracker.close()
    finally:
        pool.stop_all()


def _standin_visit(driver: Visits, commands: Watcher, tracker: Tracker, group: str, number: int) -> _Visit:
    """nextVisit, the fan-out, every raw at once, then its alerts."""
    visit = exposure_id(number * SNAPS + 1)  # a visit is its first exposure id
    try:
        announce(driver, commands, group)
    except TimeoutError as error:  # every CCD of the visit is lost; the run goes on
        log.warning("visit %s: %s", group, error)
        return _Visit(group, visit, dict.fromkeys(range(LSSTCAM_DETECTORS), math.nan), set())
    time.sleep(PRELOAD_PAUSE_S)
    spec = driver.topics.raw_image_available
    arrivals: dict[int, float] = {}
    for snap in range(SNAPS):
        for detector in range(LSSTCAM_DETECTORS):  # each stamped as it is produced, not before the burst
            raw = driver.raw(group, detector, snap, number * SNAPS + snap + 1, instrument="LSSTCam")
            driver.producer.produce(spec.name, value=driver.encode(spec.name, raw),
                                    partition=detector_partition(detector, spec.partitions))
            arrivals[detector] = raw.arrival_time  # the later snap's stamp wins
    driver.flush()
    complete = tracker.wait(group, visit, range(LSSTCAM_DETECTORS), VISIT_TIMEOUT_S)
    log.info("visit %s: alerts of %d CCDs read", group, len(complete))
    return _Visit(group, visit, arrivals, complete)


def real_payload(state: ClusterState, root: Path) -> AlertRun:
    """One worker with AP_PROCESSES pipeline processes, the built-in AP on a simulated night of one field."""
    name = "alerts-ap"
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    instruments = folder / "instruments.toml"
    instruments.write_text(f'[LSSTCam]\ndetectors = "0-188"\n'
                           f"disabled = {sorted(set(range(LSSTCAM_DETECTORS)) - set(AP_DETECTORS))}\n")
    settings = _alert_settings(state, root, name, pipeline_processes=AP_PROCESSES, instruments_file=str(instruments))
    started = time.monotonic()
    shutil.rmtree(settings.data_root, ignore_errors=True)
    night = plan_night(AP_VISITS, AP_DETECTORS, CcdShape(AP_SIZE, AP_SIZE), fields=1,
                       start=datetime.now(UTC).replace(microsecond=0))
    arrivals = write_night(Path(settings.data_root), night)
    pool = WorkerPool(settings, folder / "logs")
    try:
        pool.start("w1")
        driver = Visits(settings, survey="BLOCK-365")
        commands = Watcher(settings, driver.topics.detector_commands.name)
        tracker = Tracker(settings, driver)
        try:
            tracker.poll(SETTLE_S)
            measured = [_ap_visit(driver, commands, tracker, night, planned, snaps)
                        for planned, snaps in zip(night.visits, arrivals, strict=True)]
            return _summarise(f"built-in AP, {AP_SIZE} px CCDs", settings, tracker, measured, started)
        finally:
            commands.close()
            tracker.close()
    finally:
        pool.stop_all()


def _ap_visit(driver: Visits, commands: Watcher, tracker: Tracker, night: Night, planned: PlannedVisit,
              snaps: list[list[RawImageAvailable]]) -> _Visit:
    """As streams.simulate.night.replay sends a visit (nextVisit, the lead time, the raws snap by snap, each
    snap stamped as it is sent), with the lead time counted from the fan-out; then its alerts."""
    driver.next_visit(planned.group_id, instrument=night.instrument, nimages=night.snaps,
                      duration=night.snaps * (night.conditions.exposure_time + 2.0), filters=FILTER,
                      position=[planned.ra, planned.dec], cameraAngle=planned.camera_angle)
    starts: set[int] = set()

    def fanned_out(value: bytes) -> bool:
        command = driver.codec.decode(value, DetectorCommand)
        if command.group_id == planned.group_id and command.action == "start":
            starts.add(command.detector)
        return len(starts) == len(night.detectors)

    try:
        commands.until(fanned_out, VISIT_TIMEOUT_S)
    except TimeoutError as error:  # every CCD of the visit is lost; the run goes on
        log.warning("visit %s: %s", planned.group_id, error)
        return _Visit(planned.group_id, planned.exposure_ids[0], dict.fromkeys(night.detectors, math.nan), set())
    time.sleep(AP_LEAD_S)
    stamped: dict[int, float] = {}
    for snap, raws in enumerate(snaps):
        now = tai_now()
        driver.raws([RawImageAvailable.from_dict(raw.to_dict() | {"arrival_time": now}) for raw in raws])
        stamped.update((raw.detector, now) for raw in raws)  # the later snap's stamp wins
        if snap + 1 < len(snaps):
            time.sleep(AP_SNAP_INTERVAL_S)
    complete = tracker.wait(planned.group_id, planned.exposure_ids[0], night.detectors, VISIT_TIMEOUT_S)
    log.info("visit %s: alerts of %d CCDs read", planned.group_id, len(complete))
    return _Visit(planned.group_id, planned.exposure_ids[0], stamped, complete)
