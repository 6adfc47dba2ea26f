"""The gather's CPU cost per input record, in process, without Kafka: where case 2's time goes.

    .local/venv/bin/python -m bench.gather_cpu [--visits 100] [--repeat 3] [--profile] [--real-producer]
                                               [--gc-threshold N]

Builds the same input as `bench.throughput.fill` (per visit: its VisitExpected, then 189 outcomes),
encodes it with the codec on an in-memory registry, then drives the real `GatherProcessor` through
the engine's own cycle (`_cycle`: consume, transform, encode, commit) with a stand-in consumer and
producer (with `--real-producer`, a real non-transactional librdkafka producer to nowhere, to count
produce's own cost). It prints the CPU time of this thread per input record: first each piece alone
(one cold pass: decode, logging labels, the core, the outputs' encoding, the engine's per-output
checks), then the whole cycle (best of `--repeat`). For a profile, `--profile` (cProfile), or a
sampling one: `py-spy record --format raw -- .local/venv/bin/python -m bench.gather_cpu`.
No broker: what it leaves out is the transactions' round trips, the GIL shared with the worker's
other threads, and the fetch (see the report of `make bench`).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

from bench.harness import gather_visit
from streams.config import Connection, Settings
from streams.processors.gather import GatherProcessor
from streams.runtime.driver import MemoryRegistry
from streams.serde.codec import Codec
from streams.serde.records import CcdResult, VisitExpected
from topology.keys import visit_key


class FakeProducer:
    """Counts what the transactions would produce."""

    def __init__(self) -> None:
        self.produced: dict[str, int] = {}

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None, **_: Any) -> None:
        self.produced[topic] = self.produced.get(topic, 0) + 1

    def begin_transaction(self) -> None:
        pass

    def send_offsets_to_transaction(self, *_: Any) -> None:
        pass

    def commit_transaction(self, *_: Any) -> None:
        pass


class RealProducer(FakeProducer):
    """A real librdkafka producer to nowhere: `produce` pays its own cost, nothing is sent."""

    def __init__(self) -> None:
        super().__init__()
        from confluent_kafka import Producer
        self.producer = Producer({"bootstrap.servers": "127.0.0.1:1", "queue.buffering.max.messages": 10_000_000,
                                  "queue.buffering.max.kbytes": 2_000_000, "linger.ms": 2, "log_level": 0})

    def produce(self, topic: str, key: bytes | None = None, value: bytes | None = None, **kwargs: Any) -> None:
        kwargs.pop("partition", None)  # metadata is never known: let librdkafka queue it unassigned
        self.producer.produce(topic, key=key, value=value, **kwargs)
        super().produce(topic)


class FakeConsumer:
    """Hands out the prepared messages, `consume` by `consume`, and answers the engine's other calls."""

    def __init__(self, queue: list[Message]) -> None:
        self.queue, self.at = queue, 0

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[Message]:
        chunk = self.queue[self.at:self.at + num_messages]
        self.at += len(chunk)
        return chunk

    def assignment(self) -> list[Any]:
        return []

    def position(self, tps: list[Any]) -> list[Any]:
        return tps

    def get_watermark_offsets(self, *_: Any, **__: Any) -> tuple[int, int]:
        return 0, 0

    def consumer_group_metadata(self) -> None:
        return None


def messages(processor: GatherProcessor, visits: int) -> list[Message]:
    """The bench's input, encoded, in the order one partition's consumer sees it (visit by visit)."""
    codec, topics = processor.codec, processor.topics
    now = time.time()
    out: list[Message] = []
    for number in range(visits):
        group, expected, outcomes = gather_visit(number, now)
        key = visit_key("LSSTCam", group).encode()
        spec = topics.visit_expected
        out.append(Message(topic=spec.name, partition=spec.partition_of(expected), offset=len(out), key=key,
                           value=codec.encode(spec.name, expected)))
        spec = topics.ccd_outcome
        for outcome in outcomes:
            out.append(Message(topic=spec.name, partition=spec.partition_of(outcome), offset=len(out), key=key,
                               value=codec.encode(spec.name, outcome)))
    return out


def processor(real_producer: bool) -> GatherProcessor:
    """A gather processor on an in-memory registry, its Kafka clients stand-ins."""
    settings = Settings.from_env({}).on(Connection(registry_url="http://127.0.0.1:1"))
    gather = GatherProcessor(settings)
    gather.codec = Codec(MemoryRegistry())
    gather._producer = (RealProducer() if real_producer else FakeProducer())  # type: ignore[assignment]
    return gather


def drive(gather: GatherProcessor, inputs: list[Message]) -> tuple[float, int]:
    """Run every input through the engine's own cycle (consume, transform, encode, commit); (CPU seconds of this
    thread, summaries produced)."""
    consumer = FakeConsumer(inputs)
    gather._consumer = consumer  # type: ignore[assignment]
    started = time.thread_time()
    while consumer.at < len(inputs):
        gather._cycle(consumer)  # type: ignore[arg-type]
    seconds = time.thread_time() - started
    produced: dict[str, int] = gather._producer.produced  # type: ignore[union-attr]
    return seconds, produced.get(gather.topics.visit_summary.name, 0)


def stage(name: str, count: int, work: Callable[[], object]) -> None:
    """Time one piece of the path over `count` records."""
    started = time.thread_time()
    work()
    print(f"  {name:<44} {1e6 * (time.thread_time() - started) / count:8.2f} us/input")


def stages(gather: GatherProcessor, inputs: list[Message]) -> None:
    """The path's pieces, each on its own, per input record (with the codec `inputs` were encoded by)."""
    codec, topics = gather.codec, gather.topics
    n = len(inputs)
    outcome_topic = topics.ccd_outcome.name
    decoded: list[Any] = []

    def decode() -> None:
        for m in inputs:
            decoded.append(codec.decode(m.value(), CcdResult if m.topic() == outcome_topic else VisitExpected))
    stage("decode (codec.decode)", n, decode)
    from streams.observability import logs
    stage("logs.bind", n, lambda: list(map(logs.bind, decoded)))
    from streams.core import gather as core
    steps: list[Any] = []

    def cores() -> None:
        states: dict[str, Any] = {}
        now = time.time()
        for record in decoded:
            key = visit_key(record.instrument, record.group_id)
            if isinstance(record, CcdResult):
                state, outputs = core.on_outcome(states.get(key), record, now)
            else:
                state, outputs = core.on_expected(states.get(key), record, now)
            states[key] = state
            steps.append(outputs)
    stage("core (on_expected / on_outcome)", n, cores)
    outputs = [o for s in steps for o in s]
    print(f"  ({len(outputs) / n:.2f} outputs per input)")
    records = [getattr(o, "result", None) or getattr(o, "metric", None) or getattr(o, "summary", None)
               for o in outputs]
    spec_of = {"CcdResult": topics.ccd_result, "Metric": topics.metrics, "VisitSummary": topics.visit_summary}
    pairs = [(spec_of[type(r).__name__], r) for r in records if r is not None]
    stage("encode of the outputs (codec.encode)", n, lambda: [codec.encode(s.name, r) for s, r in pairs])
    stage("partition_of of the outputs", n, lambda: [s.partition_of(r) for s, r in pairs])
    stage("may_write of the outputs", n, lambda: [gather.spec.may_write(s.name) for s, _r in pairs])


def main() -> int:
    """Measure, and optionally profile, the gather's path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=100)
    parser.add_argument("--profile", action="store_true", help="cProfile the whole drive, top functions")
    parser.add_argument("--real-producer", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--gc-threshold", type=int, default=0, help="gc.set_threshold(N) first (0: Python's)")
    args = parser.parse_args()
    if args.gc_threshold:
        gc.set_threshold(args.gc_threshold)
    gather = processor(args.real_producer)
    inputs = messages(gather, args.visits)
    print(f"{len(inputs)} inputs, {args.visits} visits")
    stages(gather, inputs)
    best = float("inf")
    for _ in range(args.repeat):
        gather = processor(args.real_producer)
        inputs = messages(gather, args.visits)
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
        seconds, summaries = drive(gather, inputs)
        if args.profile:
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(30)
            args.profile = False
            continue
        assert summaries == args.visits, summaries
        best = min(best, seconds)
    produced = sum(gather._producer.produced.values())  # type: ignore[union-attr]
    print(f"engine cycle (consume, transform, encode, commit): {1e6 * best / len(inputs):.2f} us/input, "
          f"{len(inputs) / best:.0f} inputs/s, {produced / len(inputs):.2f} produced per input")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
