"""A real worker fed a few hundred hostile events between two good visits: each hostile event the
agents cannot use has one dead letter with a typed reason and its original bytes; the worker
never crashes or logs a bug, and the visits around the hostile events complete.

What must become of each input is decided by the same decode-and-check chain as the agents, with
the real schema registry (so framed junk meets real unknown ids); tests/unit/test_fuzz_inputs.py
checks that chain's decisions on thousands more.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from stack.cluster import ClusterState
from streams.clock import tai_now
from streams.core.instruments import parse_instruments
from streams.core.surveys import parse_surveys
from streams.ops.workers import WorkerPool
from streams.serde.codec import Codec
from streams.serde.records import NextVisit, NextVisitCanceled, RawImageAvailable
from streams.serde.registry import ConfluentRegistry
from streams.simulate.visits import Visits
from tests.fuzzing import (
    DEAD_LETTER_CLASSES,
    Chain,
    Hostile,
    avro_encoder,
    draw_corpus,
    good_cancel,
    good_next_visit,
    good_raw,
    hostile,
    notifications,
)
from tests.integration.settings import isolated_settings

BROKER_LIMIT = 1_000_000
"""Bigger values are refused by the broker itself (message.max.bytes), before any worker sees them."""


def test_hostile_events_are_dead_lettered_and_the_visits_around_them_complete(cluster: ClusterState,
                                                                               tmp_path: Path) -> None:
    """Every unusable hostile event is one dead letter with a reason; nothing crashes; both visits complete."""
    settings = isolated_settings(cluster, tmp_path)
    pool = WorkerPool(settings, tmp_path / "logs")
    worker = pool.start("w1")
    try:
        visits = Visits(settings)
        topics, now = visits.topics, tai_now()
        codec = Codec(ConfluentRegistry(settings.registry_config()))
        chain = Chain(codec, parse_instruments(Path(settings.instruments_file).read_text()),
                      parse_surveys(Path(settings.surveys_file).read_text()), settings.policy(), settings.data_root,
                      now)
        group, root = "2026-11-25T05:00:00.000", settings.data_root
        corpus: dict[str, list[Hostile]] = {
            topics.next_visit.name: draw_corpus(hostile(good_next_visit(group, now), root, avro_encoder(
                codec, topics.next_visit.name, NextVisit)), 90),
            topics.next_visit_canceled.name: draw_corpus(hostile(good_cancel(group, now), root, avro_encoder(
                codec, topics.next_visit_canceled.name, NextVisitCanceled)), 40),
            topics.raw_image_available.name: draw_corpus(hostile(good_raw(group, root, now), root, avro_encoder(
                codec, topics.raw_image_available.name, RawImageAvailable)), 120),
            topics.s3_notifications.name: draw_corpus(notifications(), 40),
        }
        kinds = {topics.next_visit.name: "next_visit", topics.next_visit_canceled.name: "next_visit_canceled",
                 topics.raw_image_available.name: "raw_image_available",
                 topics.s3_notifications.name: "s3_notification"}
        expected: Counter[bytes] = Counter()
        outcomes: Counter[str] = Counter()
        for topic, items in corpus.items():
            sendable = []
            for item in items:
                outcome = chain.outcome(kinds[topic], item.data)
                if len(item.data) >= BROKER_LIMIT or outcome == "needs storage":
                    continue  # refused by the broker; or up to storage, tested with S3 in test_s3_connector
                sendable.append(item.data)
                outcomes[outcome] += 1
                if outcome == "dead-letter":
                    expected[item.data] += 1
            visits.send_bytes(topic, sendable)

        before, after = "2026-11-25T04:00:00.000", "2026-11-25T06:00:00.000"
        for good in (before, after):
            visits.next_visit(good)
            visits.raws([visits.raw(good, d, s, 1 + s) for d in range(9) for s in (0, 1)])

        letters = visits.dead_letters(sum(expected.values()), timeout=120, settle=3.0)
        print(f"fuzz on a real worker: {sum(outcomes.values())} hostile events sent ({dict(outcomes)})")
        got = Counter(d.value for d in letters)
        assert got == expected, (f"not dead-lettered: {list(expected - got)[:5]}; unexpected dead letters: "
                                 f"{[(d.reason, d.value[:200]) for d in letters if d.value in got - expected][:5]}")
        assert all(d.reason and d.error_class in DEAD_LETTER_CLASSES for d in letters), \
            Counter(d.error_class for d in letters)
        assert outcomes["dead-letter"] > 200, outcomes

        summaries = {s.group_id: s for s in visits.summaries(2, timeout=120)}
        assert {before, after} <= set(summaries)
        assert all({k: n for k, n in summaries[g].counts.items() if n} == {"success": 9} for g in (before, after)), \
            summaries
        assert worker.process.poll() is None, "the worker is still running"
        assert "unexpected error" not in worker.text()
    finally:
        pool.stop_all()
