"""Running a replay (see `streams.ops.replay_plan`): read the live inputs, copy the selection, wait for the visits.

Live topics are only read (no consumer group, no commit); everything written goes to the replay's
own topics, and the workers it starts run with the replay's settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from confluent_kafka import Message, Producer, TopicPartition

from streams.config import Settings
from streams.core.instruments import parse_instruments
from streams.errors import DecodeError
from streams.ops.progress import progress_bar
from streams.ops.replay_plan import (
    Event,
    Filters,
    ReplayError,
    Report,
    Selection,
    instruments_toml,
    pace,
    replay_settings,
    select,
    window,
)
from streams.ops.workers import READY, WorkerPool
from streams.runtime import admin
from streams.runtime.topic_reader import offsets, partitions_of, read_range, read_to_end, reader
from streams.serde.codec import Codec
from streams.serde.records import NextVisit, NextVisitCanceled, RawImageAvailable, VisitSummary
from streams.serde.registry import ConfluentRegistry
from topology.topics import TopicSpec, declare

PROVENANCE = "prompt-streams-replay-of"
"""Header on each copied record: the live topic, partition and offset it came from."""


@dataclass(frozen=True)
class Range:
    """The nextVisit records to start from: Kafka timestamps [since, until) in ms, and/or offsets [first, end)."""

    since_ms: int | None = None
    until_ms: int | None = None
    first_offset: int | None = None
    end_offset: int | None = None


class Replayer:
    """One replay of a live deployment's inputs into a deployment of its own."""

    def __init__(self, live: Settings, name: str, filters: Filters) -> None:
        self.live = live
        self.filters = filters
        self.settings = replay_settings(live, name)  # checks the name before it becomes a folder
        self.folder = Path(live.data_dir) / name
        if filters.detectors:
            self.folder.mkdir(parents=True, exist_ok=True)
            derived = self.folder / "instruments.toml"
            instruments = parse_instruments(Path(live.instruments_file).read_text())
            derived.write_text(instruments_toml(instruments, filters.detectors))
            self.settings = replay_settings(live, name, str(derived))
        self.live_topics = declare(live)
        self.topics = declare(self.settings)
        self.codec = Codec(ConfluentRegistry(live.registry_config()))

    def _events(self, spec: TopicSpec, messages: Sequence[Message],
                record_type: type[NextVisit] | type[NextVisitCanceled] | type[RawImageAvailable]) -> list[Event]:
        events = []
        for message in messages:
            try:
                record = self.codec.decode(message.value(), record_type, accept_json=spec.accepts_json)
            except DecodeError:
                continue  # it went to the dead letters live; there is nothing to replay
            headers = message.headers() or []
            events.append(Event(message.topic() or "", message.partition() or 0, message.offset() or 0,
                                message.timestamp()[1], message.key(), message.value(),
                                list(headers.items() if isinstance(headers, dict) else headers), record))
        return events

    def _ranges(self, spec: TopicSpec, start_ms: int | None, end_ms: int | None) -> list[tuple[str, int, int, int]]:
        """(topic, partition, first offset, end offset) of the records with timestamps in [start_ms, end_ms)."""
        consumer = reader(self.live)
        try:
            ranges = []
            for partition in partitions_of(consumer, spec.name):
                low, high = offsets(consumer, spec.name, partition)
                wanted = [TopicPartition(spec.name, partition, ms) for ms in (start_ms, end_ms) if ms is not None]
                found = iter(consumer.offsets_for_times(wanted, timeout=30) if wanted else [])
                first = max(low, next(found).offset) if start_ms is not None else low
                end = next(found).offset if end_ms is not None else high
                ranges.append((spec.name, partition, first if first >= 0 else high, end if end >= 0 else high))
            return ranges
        finally:
            consumer.close()

    def select(self, chosen: Range) -> Selection:
        """The events to replay."""
        spec = self.live_topics.next_visit
        [(topic, partition, first, end)] = self._ranges(spec, chosen.since_ms, chosen.until_ms)
        first = max(first, chosen.first_offset or 0)
        end = min(end, chosen.end_offset) if chosen.end_offset is not None else end
        visits = self._events(spec, list(read_range(self.live, [(topic, partition, first, end)])), NextVisit)
        visits = [e for e in visits if isinstance(e.record, NextVisit) and self.filters.visit(e.record)]
        if not visits:
            return Selection([], frozenset(), (0, 0))
        start_ms, end_ms = window(visits, self.live.image_timeout)
        others: list[Event] = []
        for other, record_type in ((self.live_topics.raw_image_available, RawImageAvailable),
                                   (self.live_topics.next_visit_canceled, NextVisitCanceled)):
            messages = list(read_range(self.live, self._ranges(other, start_ms, end_ms)))
            others += self._events(other, messages, record_type)
        return select(visits, others, self.filters, self.live.image_timeout,
                      self.live_topics.raw_image_available.partitions)

    def check_unused(self) -> None:
        """Refuse a name used before: its workers would resume where they stopped and skip visits they summarised."""
        consumer = reader(self.live)
        try:
            existing = consumer.list_topics(timeout=30).topics
        finally:
            consumer.close()
        if self.topics.next_visit.name in existing:
            raise ReplayError(f"replay name {self.settings.app_id!r} was used before (topic "
                              f"{self.topics.next_visit.name} exists): choose another name")

    def prepare(self) -> None:
        """Create the replay's topics and register their schemas, as its workers would."""
        admin.prepare(self.settings, Codec(ConfluentRegistry(self.settings.registry_config())))

    def copy(self, selection: Selection, speed: float, show: Callable[[int, int], None]) -> dict[str, int]:
        """Send the selected events to the replay's input topics, in order; return the counts by topic."""
        to = {self.live_topics.next_visit.name: self.topics.next_visit.name,
              self.live_topics.next_visit_canceled.name: self.topics.next_visit_canceled.name,
              self.live_topics.raw_image_available.name: self.topics.raw_image_available.name}
        producer = Producer(self.live.kafka_config() | {"enable.idempotence": True, "linger.ms": 5})
        counts = dict.fromkeys(to.values(), 0)
        started = time.monotonic()
        for index, (event, when) in enumerate(zip(selection.events, pace(selection.events, speed), strict=True)):
            time.sleep(max(0.0, started + when - time.monotonic()))
            origin = f"{event.topic}/{event.partition}/{event.offset}".encode()
            producer.produce(to[event.topic], value=event.value, key=event.key, partition=event.partition,
                             headers=[*event.headers, (PROVENANCE, origin)])
            producer.poll(0)
            counts[to[event.topic]] += 1
            show(index + 1, len(selection.events))
        if producer.flush(60) != 0:
            raise TimeoutError("the replayed events were not all acknowledged within 60 s")
        return counts

    def summaries(self) -> set[tuple[str, str]]:
        """The visits the replay has summarised so far."""
        spec = self.topics.visit_summary
        found = (self.codec.decode(m.value(), VisitSummary) for m in read_to_end(self.settings, spec.name))
        return {(s.instrument, s.group_id) for s in found}

    def workers(self) -> WorkerPool:
        """A pool of workers with the replay's settings (logs under the replay's folder)."""
        return WorkerPool(self.settings, self.folder / "logs")


def run(replayer: Replayer, chosen: Range, *, speed: float, workers: int, wait: float,
        say: Callable[[str], None]) -> Report:
    """The whole replay: select, start workers, copy, wait for the visits' summaries, stop the workers."""
    started = time.monotonic()
    selection = replayer.select(chosen)
    if not selection.visits:
        say("no nextVisit in the range matches the filters: nothing to replay")
        return Report({}, 0, 0, time.monotonic() - started)
    replayer.check_unused()
    say(f"replaying {len(selection.visits)} visit(s), {len(selection.events)} events, as "
        f"app {replayer.settings.app_id} (topics {replayer.settings.topic_prefix}.*)")
    replayer.prepare()
    pool = replayer.workers()
    try:
        if workers:
            say(f"starting {workers} replay worker(s); logs in {pool.log_dir}")
            for index in range(workers):
                pool.start(f"replay-{index + 1}", wait=False)
            for worker in pool.started:
                worker.wait_for(READY, timeout=180)
        else:
            say("start the replay's workers with these settings (as well as the live ones):")
            changed = {k: v for k, v in replayer.settings.to_env().items() if replayer.live.to_env()[k] != v}
            say("  " + " ".join(f"{k}={v}" for k, v in changed.items()))
        copy_started = time.monotonic()
        counts = replayer.copy(selection, speed, lambda done, total: progress_bar(
            "events replayed", done, total, started=copy_started))
        done = _wait(replayer, selection.visits, wait, pool)
    finally:
        pool.stop_all()
    missing = sorted(f"{instrument}/{group}" for instrument, group in selection.visits - done)
    return Report(counts, len(selection.visits), len(done & selection.visits), time.monotonic() - started, missing)


def _wait(replayer: Replayer, visits: frozenset[tuple[str, str]], wait: float, pool: WorkerPool
          ) -> set[tuple[str, str]]:
    """The visits summarised before `wait` seconds passed, with a progress bar."""
    started = time.monotonic()
    done: set[tuple[str, str]] = set()
    while True:
        done = replayer.summaries() & visits
        progress_bar("visits completed", len(done), len(visits), started=started)
        if done == visits or time.monotonic() - started > wait:
            if done != visits:
                progress_bar("visits completed", len(visits), len(visits), started=started)
            return done
        for worker in pool.started:
            if worker.process.poll() is not None:
                raise RuntimeError(f"a replay worker exited ({worker.process.returncode}); see {worker.log}")
        time.sleep(2.0)
