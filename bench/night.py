"""Case 7: a night. Many LSSTCam visits through the whole topology on 2 workers: throughput, memory, correctness.

Real faust workers (the CLI, as users start them) run every processor with the stand-in pipeline
at zero cost and without DIA sources (so no APDB and no alerts): what is measured is the framework
carrying a night's worth of visits (nextVisit -> SAL intake -> 189 start commands; 378 raws ->
detector -> pipeline processes -> completions -> gather -> 189 per-CCD results and one summary).

Pacing: at most IN_FLIGHT visits wait for their summary. A visit's nextVisit is sent when a slot is
free; its 378 raws (189 detectors x 2 snaps) all at once as soon as the harness has read its 189
start commands (the camera's raws come after the fan-out, as on the summit); its slot frees when its
summary is readable. The queue in front of the workers is bounded (a sender at a fixed rate above
the system's throughput would grow it without end, one below would measure the sender), and with
IN_FLIGHT above the visits the topology works on at once it is never empty, so the rate measured
is what the topology sustains. One read_committed consumer of the harness reads the start commands
and the summaries from the beginning of their (fresh) topics; a thread samples the workers' memory,
CPU and /metrics every SAMPLE_S.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import LSSTCAM_DETECTORS, SURVEY, Spread, bench_settings, rss_bytes
from bench.overhead import SETTLE_S, SNAPS
from stack.cluster import ClusterState
from streams.config import Settings
from streams.ops.workers import WorkerPool
from streams.serde.records import CcdResult, DetectorCommand, VisitSummary
from streams.simulate.visits import Visits
from topology.keys import detector_partition

log = logging.getLogger(__name__)
WORKERS = 2
IN_FLIGHT = 4
"""Visits sent and not yet summarised, at most (see the module's docstring). On 2 cores, 2 left the cores idle
part of the time; with 4 they are busy throughout, and more would only lengthen each visit's wait."""
WARM_VISITS = 50
"""Memory is measured from the moment this many summaries were read (the workers are warm), to the end."""
DURATION_S = 30.0
"""nextVisit's duration: the image deadline is 2 x 30 s + image_timeout (120 s) after the fan-out, far beyond
the few seconds a visit waits for its raws here, so the pacing times no CCD out."""
VISIT_TIMEOUT_S = 120.0
"""A visit without a summary this long after its nextVisit is counted lost and frees its slot."""
DRAIN_S = 30.0
"""After the last visit is sent and done (or lost), how long late summaries are still read."""
SAMPLE_S = 3.0
RESULTS_QUIET_S = 5.0
"""Reading the results back ends at the topic's end, or when nothing more came for this long."""
MIDDLE = 0.8
"""The steady-state rate is measured over the summaries between the 10th and the 90th percentile."""


@dataclass
class Sample:
    """What the sampler saw at one moment of the run."""

    seconds: float
    """Since the first nextVisit."""
    visits: int
    """Summaries read by then."""
    rss: list[int]
    """Each worker's RSS [bytes]."""
    children_rss: list[int]
    """Each worker's child processes' RSS together (its pipeline processes) [bytes]."""


@dataclass
class Lag:
    """One processor's input topic, over the samples of the run (both workers, all partitions summed)."""

    processor: str
    topic: str
    max: int
    mean: float
    early: float = math.nan
    """Mean over the first half of the samples."""
    late: float = math.nan
    """Mean over the second half: a lag that grows marks the processor that falls behind."""


@dataclass
class NightRun:
    """What one night measured."""

    sent: int
    """Visits whose nextVisit was sent."""
    workers: int
    processes: int
    """Pipeline processes per worker."""
    seconds: float
    """First nextVisit sent -> last summary read (read_committed: committed)."""
    steady_rate: float
    """Visits per second over the middle MIDDLE of the summaries."""
    steady_visits: int
    """Visits that rate was measured over."""
    latency: Spread
    """Per visit: nextVisit sent -> its summary read."""
    summaries: int
    distinct_summaries: int
    summaries_all_success: int
    """Summaries with reason `complete` and every one of the 189 detectors `success`."""
    results: int
    distinct_results: int
    statuses: dict[str, int]
    """Per-CCD results of the visits sent, by status."""
    lost: int
    """Visits without a summary within VISIT_TIMEOUT_S of their nextVisit."""
    reasons: dict[str, int]
    """Summaries by reason: complete, or deadline (some CCD timed out) or canceled."""
    warm_visits: int
    """Summaries read when the memory's start was sampled."""
    end_visits: int
    rss_ready: list[int]
    rss_warm: list[int]
    rss_end: list[int]
    rss_max: list[int]
    children_warm: list[int]
    children_end: list[int]
    children_max: list[int] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    """CPU seconds between the first nextVisit and the last summary, by who spent them."""
    lags: list[Lag] = field(default_factory=list)
    processed: dict[str, float] = field(default_factory=dict)
    """Input records each processor consumed during the run (both workers)."""
    in_flight_max: int = IN_FLIGHT
    retention: float = 3600.0
    """How long the workers keep a finished visit's state (the setting)."""
    quarter_rates: list[float] = field(default_factory=list)
    """Visits per second in each quarter of the summaries: a rate that falls marks work that grows with the night."""
    rss_along: list[tuple[int, list[int]]] = field(default_factory=list)
    """(summaries read, each worker's RSS) at the sample that ends each quarter of the night."""

    @property
    def rate(self) -> float:
        """Visits per second over the whole night."""
        return self.distinct_summaries / self.seconds if self.seconds > 0 else math.nan

    @property
    def timeouts(self) -> int:
        """CCDs that timed out (their result says so) and summaries the visit deadline made."""
        return self.statuses.get("timeout", 0) + self.reasons.get("deadline", 0)

    @property
    def measured_visits(self) -> int:
        """Visits between the memory's start and end samples."""
        return self.end_visits - self.warm_visits

    def growth_per_1000(self, start: Sequence[int], end: Sequence[int]) -> list[float]:
        """Growth per 1000 visits [bytes], from what was measured over `measured_visits` (none: NaN)."""
        if self.measured_visits <= 0:
            return [math.nan for _ in start]
        return [(e - s) * 1000.0 / self.measured_visits for s, e in zip(start, end, strict=True)]


def steady_rate(times: Sequence[float], middle: float = MIDDLE) -> tuple[float, int]:
    """Visits per second between the summaries at the (1 - middle) / 2 and (1 + middle) / 2 quantiles of the
    run, so the start (workers filling up) and the end (draining) do not count; and how many visits that is."""
    ordered = sorted(times)
    if len(ordered) < 2:
        return math.nan, 0
    low = round((1 - middle) / 2 * (len(ordered) - 1))
    high = round((1 + middle) / 2 * (len(ordered) - 1))
    span = ordered[high] - ordered[low]
    return ((high - low) / span if span > 0 else math.nan), high - low


def all_success(summary: VisitSummary) -> bool:
    """The visit completed with every one of its 189 detectors a success (the counts list every status)."""
    return (summary.reason == "complete" and summary.counts.get("success") == LSSTCAM_DETECTORS
            and sum(summary.counts.values()) == LSSTCAM_DETECTORS)


def quarter_rates(times: Sequence[float]) -> list[float]:
    """Visits per second within each quarter of the summaries (between the summaries at 0, 25, 50, 75, 100 %)."""
    ordered = sorted(times)
    if len(ordered) < 5:
        return []
    cuts = [round(q * (len(ordered) - 1) / 4) for q in range(5)]
    return [(b - a) / (ordered[b] - ordered[a]) if ordered[b] > ordered[a] else math.nan
            for a, b in itertools.pairwise(cuts)]


def along(samples: Sequence[Sample], visits: int) -> list[tuple[int, list[int]]]:
    """The first sample at or after each quarter of `visits` (the last one if the night fell short)."""
    picked: list[tuple[int, list[int]]] = []
    for quarter in range(1, 5):
        at = next((s for s in samples if s.visits >= quarter * visits / 4), samples[-1] if samples else None)
        if at is not None:
            picked.append((at.visits, at.rss))
    return picked


def group_of(number: int) -> str:
    """The group id of the night's `number`th visit (one second apart: only their order matters)."""
    return f"2026-11-25T{number // 3600:02d}:{number // 60 % 60:02d}:{number % 60:02d}.000"


# -- processes: memory and CPU from /proc ----------------------------------------------------------
def descendants(pid: int) -> list[int]:
    """Every process under `pid` (its pipeline processes and multiprocessing's helper)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = [int(c) for c in Path(f"/proc/{parent}/task/{task}/children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every process of the machine spent so far (all cores; /proc/stat, without idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def _cpu_by_owner(pool: WorkerPool, state: ClusterState) -> dict[str, dict[int, float]]:
    """pid -> CPU seconds so far, of each kind of process the run involves."""
    workers = [w.process.pid for w in pool.started]
    return {
        "faust workers": {pid: cpu_seconds(pid) for pid in workers},
        "their pipeline processes": {pid: cpu_seconds(pid) for w in workers for pid in descendants(w)},
        "Kafka broker": {state.broker_pid: cpu_seconds(state.broker_pid)},
        "schema registry": {state.registry_pid: cpu_seconds(state.registry_pid)},
        "harness (this process)": {os.getpid(): time.process_time()},
        "machine": {0: machine_busy_seconds()},
    }


def _cpu_spent(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds per kind between two readings (a process that appeared counts whole), and the rest of the
    machine: other engineers' tests on a shared machine show here."""
    spent = {kind: sum(after[kind][pid] - before[kind].get(pid, 0.0) for pid in after[kind]) for kind in after}
    spent["everything else on the machine"] = max(spent.pop("machine") - sum(spent.values()), 0.0)  # ticks
    return spent


# -- the sampler ------------------------------------------------------------------------------------
class Sampler(threading.Thread):
    """Every SAMPLE_S: each worker's RSS and its children's, and its /metrics (consumer lag, records processed)."""

    def __init__(self, pool: WorkerPool, app_id: str) -> None:
        super().__init__(name="night-sampler", daemon=True)
        self.pool = pool
        self.prefix = f"{app_id}-"
        self.visits = 0
        """Summaries read so far (the driving loop sets it)."""
        self.started_at = time.monotonic()
        self.samples: list[Sample] = []
        self.lags: dict[tuple[str, str], list[int]] = {}
        """(processor, topic) -> the lag at each scrape, summed over workers and partitions."""
        self.processed: list[dict[str, float]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        """Sample until stopped."""
        while not self.stopping.wait(SAMPLE_S):
            self.sample()

    def sample(self) -> Sample:
        """Memory now, and the metrics."""
        pids = [w.process.pid for w in self.pool.started]
        taken = Sample(time.monotonic() - self.started_at, self.visits, [rss_bytes(p) for p in pids],
                       [sum(rss_bytes(c) for c in descendants(p)) for p in pids])
        self.samples.append(taken)
        lags: Counter[tuple[str, str]] = Counter()
        processed: dict[str, float] = {}
        for worker in self.pool.started:
            try:
                with urllib.request.urlopen(f"{worker.url}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                continue
            for family in text_string_to_metric_families(text):
                for metric in family.samples:
                    if metric.name == "prompt_streams_consumer_lag":
                        processor = metric.labels["group"].removeprefix(self.prefix)
                        lags[(processor, metric.labels["topic"])] += int(metric.value)
                    elif metric.name == "prompt_streams_records_processed_total":
                        name = metric.labels["processor"]
                        processed[name] = processed.get(name, 0.0) + metric.value
        for key, value in lags.items():
            self.lags.setdefault(key, []).append(value)
        self.processed.append(dict(processed))
        return taken

    def stop(self) -> None:
        """End the sampling."""
        self.stopping.set()
        self.join(10)


# -- the night --------------------------------------------------------------------------------------
@dataclass
class _Sent:
    number: int
    sent: float
    """When its nextVisit was sent (monotonic)."""
    starts: set[int] = field(default_factory=set)
    raws_sent: bool = False


@dataclass
class _Tally:
    """What the driving loop read."""

    done: dict[str, float] = field(default_factory=dict)
    """Group -> when its (first) summary was read (monotonic)."""
    latencies: list[float] = field(default_factory=list)
    summaries: Counter[str] = field(default_factory=Counter)
    all_success: int = 0
    lost: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    first_sent: float = 0.0


def run(state: ClusterState, root: Path, visits: int) -> NightRun:
    """Start the workers, send `visits` visits paced by IN_FLIGHT, and measure."""
    name = "night"
    settings = bench_settings(state, root, name)
    pool = WorkerPool(settings, root / name / "logs")
    sampler = Sampler(pool, settings.app_id)
    try:
        for index in range(WORKERS):
            pool.start(f"w{index + 1}")
        rss_ready = [rss_bytes(w.process.pid) for w in pool.started]
        driver = Visits(settings, survey=SURVEY)
        warm_visits = min(WARM_VISITS, visits // 2)
        tally = _Tally()
        warm: Sample | None = None

        def at_summary(count: int) -> None:
            nonlocal warm
            sampler.visits = count
            if count == warm_visits:
                warm = sampler.sample()

        consumer = _consumer(settings, driver)
        try:
            _settle(consumer, SETTLE_S)
            cpu_before = _cpu_by_owner(pool, state)
            sampler.started_at = time.monotonic()
            sampler.sample()  # the metrics' counters at the start
            sampler.start()
            _drive(driver, consumer, visits, tally, at_summary)
            end = sampler.sample()
            cpu_after = _cpu_by_owner(pool, state)
        finally:
            consumer.close()
            sampler.stop()
        last = max(tally.done.values(), default=tally.first_sent)
        sent_groups = {group_of(n) for n in range(visits)}
    finally:
        pool.stop_all()
    results, distinct, statuses = _count_results(settings, driver, sent_groups)
    times = [t - tally.first_sent for t in tally.done.values()]
    rate, steady_visits = steady_rate(times)
    samples = sorted(sampler.samples, key=lambda sample: sample.seconds)
    warm = warm or end
    return NightRun(
        sent=visits, workers=WORKERS, processes=settings.pipeline_processes, seconds=last - tally.first_sent,
        steady_rate=rate, steady_visits=steady_visits, latency=Spread.of(tally.latencies),
        summaries=sum(tally.summaries.values()), distinct_summaries=len(tally.summaries),
        summaries_all_success=tally.all_success, results=results, distinct_results=distinct, statuses=statuses,
        lost=tally.lost, reasons=dict(tally.reasons), warm_visits=warm.visits, end_visits=end.visits,
        rss_ready=rss_ready, rss_warm=warm.rss, rss_end=end.rss,
        rss_max=[max(s.rss[i] for s in sampler.samples) for i in range(WORKERS)],
        children_warm=warm.children_rss, children_end=end.children_rss,
        children_max=[max(s.children_rss[i] for s in sampler.samples) for i in range(WORKERS)],
        cpu=_cpu_spent(cpu_before, cpu_after), lags=_lags(sampler),
        processed=_processed(sampler), in_flight_max=IN_FLIGHT, retention=settings.retention,
        quarter_rates=quarter_rates(times), rss_along=along(samples, visits))


def _consumer(settings: Settings, driver: Visits) -> Consumer:
    """A read_committed consumer of the start commands and the summaries, from the beginning (fresh topics)."""
    consumer = Consumer(settings.kafka_config() | {
        "group.id": "bench-night-watch", "enable.auto.commit": False,
        "isolation.level": "read_committed", "fetch.wait.max.ms": 5})
    assigned = []
    for topic in (driver.topics.detector_commands.name, driver.topics.visit_summary.name):
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        assigned += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions]
    consumer.assign(assigned)
    return consumer


def _settle(consumer: Consumer, seconds: float) -> None:
    """Let the workers' last rebalance finish (and the consumer fetch) before the first visit."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        consumer.consume(500, 0.1)


def _drive(driver: Visits, consumer: Consumer, visits: int, tally: _Tally,
           at_summary: Callable[[int], None]) -> None:
    """Send the night, at most IN_FLIGHT visits without a summary; read fan-outs and summaries as they come."""
    commands, summaries = driver.topics.detector_commands.name, driver.topics.visit_summary.name
    codec = driver.codec
    pending: dict[str, _Sent] = {}
    number = 0
    tally.first_sent = time.monotonic()
    drained_at: float | None = None
    while drained_at is None or time.monotonic() - drained_at < DRAIN_S:
        while number < visits and len(pending) < IN_FLIGHT:
            group = group_of(number)
            pending[group] = _Sent(number, time.monotonic())
            driver.next_visit(group, instrument="LSSTCam", nimages=SNAPS, duration=DURATION_S)
            number += 1
        for message in consumer.consume(1000, 0.02):
            if message.error() is not None:
                continue
            if message.topic() == commands:
                command = codec.decode(message.value() or b"", DetectorCommand)
                sent = pending.get(command.group_id)
                if sent is None or command.action != "start":
                    continue
                sent.starts.add(command.detector)
                if len(sent.starts) == LSSTCAM_DETECTORS and not sent.raws_sent:
                    _raws(driver, command.group_id, sent.number)
                    sent.raws_sent = True
            elif message.topic() == summaries:
                summary = codec.decode(message.value() or b"", VisitSummary)
                tally.summaries[summary.group_id] += 1
                if tally.summaries[summary.group_id] > 1:
                    continue
                now = time.monotonic()
                tally.done[summary.group_id] = now
                tally.reasons[summary.reason] += 1
                tally.all_success += all_success(summary)
                if (sent := pending.pop(summary.group_id, None)) is not None:
                    tally.latencies.append(now - sent.sent)
                at_summary(len(tally.done))
                if len(tally.done) % 50 == 0:
                    log.info("night: %d summaries read", len(tally.done))
        for group, sent in list(pending.items()):
            if time.monotonic() - sent.sent > VISIT_TIMEOUT_S:
                log.warning("visit %s: no summary %.0f s after its nextVisit (%d start commands read)", group,
                            VISIT_TIMEOUT_S, len(sent.starts))
                tally.lost += 1
                del pending[group]
        if drained_at is None and number == visits and not pending:
            drained_at = time.monotonic()
            if len(tally.done) >= visits:
                return  # every summary is in: no late one to wait for


def _raws(driver: Visits, group: str, number: int) -> None:
    """A visit's 378 raws at once, each stamped as it is produced."""
    spec = driver.topics.raw_image_available
    for snap in range(SNAPS):
        for detector in range(LSSTCAM_DETECTORS):
            raw = driver.raw(group, detector, snap, number * SNAPS + snap + 1, instrument="LSSTCam")
            driver.producer.produce(spec.name, value=driver.encode(spec.name, raw),
                                    partition=detector_partition(detector, spec.partitions))
    driver.flush()


def _count_results(settings: Settings, driver: Visits, groups: set[str]) -> tuple[int, int, dict[str, int]]:
    """Every committed per-CCD result of the night's visits: how many, how many distinct keys, by status."""
    topic = driver.topics.ccd_result.name
    consumer = Consumer(settings.kafka_config() | {
        "group.id": "bench-night-results", "enable.auto.commit": False, "isolation.level": "read_committed"})
    keys: Counter[bytes] = Counter()
    statuses: Counter[str] = Counter()
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in partitions}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < RESULTS_QUIET_S:
            messages = consumer.consume(1000, 0.2)
            for message in messages:
                if message.error() is not None:
                    continue
                quiet_since = time.monotonic()
                result = driver.codec.decode(message.value() or b"", CcdResult)
                if result.group_id in groups:
                    keys[message.key() or b""] += 1
                    statuses[result.status] += 1
            if not messages and all(tp.offset >= ends[tp.partition] for tp in consumer.position(
                    [TopicPartition(topic, p) for p in partitions])):
                break
    finally:
        consumer.close()
    return sum(keys.values()), len(keys), dict(statuses)


def _lags(sampler: Sampler) -> list[Lag]:
    """Each processor's input lag over the run, the worst first (those never behind left out)."""
    lags = [Lag(processor, topic, max(values), _mean(values), _mean(values[:len(values) // 2]),
                _mean(values[len(values) // 2:]))
            for (processor, topic), values in sampler.lags.items() if max(values) > 0]
    return sorted(lags, key=lambda lag: -lag.mean)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _processed(sampler: Sampler) -> dict[str, float]:
    """Records each processor consumed between the first and the last scrape."""
    if not sampler.processed:
        return {}
    first, last = sampler.processed[0], sampler.processed[-1]
    return {name: last[name] - first.get(name, 0.0) for name in sorted(last)}



def lag_rows(run: NightRun) -> list[tuple[str, float, str]]:
    """(processor, records consumed, its topics' lags) for every processor that consumed or lagged, in the order
    of its worst mean lag."""
    names = [lag.processor for lag in run.lags]
    names += [name for name, count in run.processed.items() if count and name not in names]
    rows = []
    for name in dict.fromkeys(names):
        lags = "; ".join(f"{lag.topic.rsplit('.', 1)[-1]}: {lag.mean:.0f} / {lag.max} ({lag.early:.0f} -> "
                         f"{lag.late:.0f})" for lag in run.lags if lag.processor == name)
        rows.append((name, run.processed.get(name, 0.0), lags or "0"))
    return rows


# -- the report's section ---------------------------------------------------------------------------
MB = 1024 * 1024


def _mb(values: Sequence[float]) -> str:
    return ", ".join("-" if math.isnan(v) else f"{v / MB:.0f}" for v in values) or "-"


def section(run: NightRun) -> list[str]:
    """The markdown of the case: every figure from this run."""
    ok = (run.distinct_summaries == run.sent and run.summaries == run.sent and run.lost == run.timeouts == 0
          and run.results == run.distinct_results == LSSTCAM_DETECTORS * run.sent
          and run.statuses == {"success": run.results} and run.summaries_all_success == run.sent)
    statuses = ", ".join(f"{status} {count}" for status, count in sorted(run.statuses.items())) or "none"
    seconds = " / ".join("-" if math.isnan(v) else f"{v:.1f}" for v in (run.latency.p50, run.latency.p99,
                                                                          run.latency.max))
    busy = sum(run.cpu.values())
    retained = (f"The workers keep a finished visit's state for {run.retention:.0f} s (`retention`), longer than "
                "this night: at its end they still hold every visit's, where on a real night (a visit every ~36 s) "
                f"they would hold ~{run.retention / 36:.0f} visits'." if run.retention > run.seconds else "")
    verdict = ("every visit has one summary, all success, and 189 distinct per-CCD results, none twice" if ok else
               "**not as expected** (see the workers' logs under .local/bench/run/night/logs/)")
    return [
        "## 7. A night", "",
        f"{run.sent} LSSTCam visits (189 detectors x 2 snaps) through the whole topology on {run.workers} workers "
        f"({run.processes} pipeline processes each): nextVisit -> SAL intake -> start commands; raws -> detector -> "
        "pipeline -> completions -> gather -> per-CCD results and a summary per visit. The stand-in pipeline at zero "
        "cost and without DIA sources (no APDB, no alerts); every other setting is the production default. "
        f"Paced by at most {run.in_flight_max} visits in flight: a nextVisit (duration {DURATION_S:g} s) is sent when "
        f"fewer wait for their summary, its {2 * LSSTCAM_DETECTORS} raws all at once as soon as its "
        f"{LSSTCAM_DETECTORS} start commands are read; a bounded queue that keeps the workers busy, so the rate is "
        "what the topology sustains on this machine. Times from the first nextVisit sent to the last summary read by "
        "a `read_committed` consumer (committed).", "",
        "| visits | whole night [s] | visits/s | steady visits/s (visits) | nextVisit -> summary p50 / p99 / max [s] "
        "| summaries (distinct, all success) | per-CCD results (distinct) | by status | lost / timed out |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {run.sent} | {run.seconds:.1f} | {run.rate:.2f} | {run.steady_rate:.2f} ({run.steady_visits}) | "
        f"{seconds} | {run.summaries} ({run.distinct_summaries}, {run.summaries_all_success}) | {run.results} "
        f"({run.distinct_results}) | {statuses} | {run.lost} / {run.timeouts} |", "",
        f"Correctness: {verdict}. *Steady*: over the middle {MIDDLE:.0%} of the summaries (start-up and drain left "
        f"out). *Lost*: visits without a summary {VISIT_TIMEOUT_S:.0f} s after their nextVisit; *timed out*: CCDs "
        "whose result is `timeout`, and summaries the visit deadline made.", "",
        f"Memory (RSS, MB; per worker): from after the first {run.warm_visits} visits to the end, measured over "
        f"{run.measured_visits} visits. {retained}", "",
        "| process | at ready | after the warm-up | at the end | max (sampled every "
        f"{SAMPLE_S:g} s) | growth over {run.measured_visits} visits | growth per 1000 visits |",
        "|---|---|---|---|---|---|---|",
        f"| faust worker | {_mb(run.rss_ready)} | {_mb(run.rss_warm)} | {_mb(run.rss_end)} | {_mb(run.rss_max)} | "
        f"{_mb([e - s for s, e in zip(run.rss_warm, run.rss_end, strict=True)])} | "
        f"{_mb(run.growth_per_1000(run.rss_warm, run.rss_end))} |",
        f"| its pipeline processes, together | - | {_mb(run.children_warm)} | {_mb(run.children_end)} | "
        f"{_mb(run.children_max)} | "
        f"{_mb([e - s for s, e in zip(run.children_warm, run.children_end, strict=True)])} | "
        f"{_mb(run.growth_per_1000(run.children_warm, run.children_end))} |", "",
        "Along the night, by quarter of the summaries: visits/s " + ", ".join(
            f"{r:.2f}" for r in run.quarter_rates) + "; faust worker RSS [MB] " + "; ".join(
            f"after {visits} visits {_mb(rss)}" for visits, rss in run.rss_along) + ".", "",
        f"CPU during the night, {busy:.0f} s of the {run.seconds * (os.cpu_count() or 1):.0f} s its "
        f"{os.cpu_count()} cores had; per visit: " + "; ".join(
            f"{who} {spent / max(run.sent, 1) * 1000:.0f} ms" for who, spent in run.cpu.items())
        + " (*everything else*: processes not of this run, on a shared machine).", "",
        "Where visits wait: each processor's input lag (records not yet consumed, both workers, all partitions) "
        f"over the {SAMPLE_S:g}-second scrapes of /metrics, the worst first, and the records it consumed during "
        "the night.", "",
        "| processor | records consumed | input lag by topic: mean / max (mean, first half -> second half) |",
        "|---|---|---|",
        *(f"| {name} | {count:.0f} | {lags} |" for name, count, lags in lag_rows(run)), "",
    ]
