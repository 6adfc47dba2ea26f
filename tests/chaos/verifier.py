"""The exactly-once verifier: reads what went in and what came out, and judges, independently.

It shares no code with the topology (only the instruments file and the topic names): inputs and
outputs are read with `read_committed` and decoded with confluent-kafka's own Avro deserializer
against the schema registry; the expectations are recomputed here from the inputs alone. DIA sources
are judged from the alert stream and the APDB's own SQLite file: each source a result counted is
alerted once and stored once.
"""

from __future__ import annotations

import json
import sqlite3
import time
import tomllib
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext


@dataclass(frozen=True)
class Wiring:
    """Where to read: the cluster, the registry and the topic names of one deployment."""

    kafka: dict[str, Any]
    registry_url: str
    next_visit: str
    next_visit_canceled: str
    raws: str
    results: str
    summaries: str
    gather_changelog: str
    instruments_file: Path
    alerts: str
    apdb: Path
    """The SQLite file of the APDB."""


@dataclass
class Verdict:
    """What the verifier found."""

    visits: int = 0
    results: int = 0
    summaries: int = 0
    lost: list[tuple[str, int]] = field(default_factory=list)
    duplicated_results: list[tuple[str, int]] = field(default_factory=list)
    unexpected_results: list[tuple[str, int]] = field(default_factory=list)
    wrong_status: list[tuple[str, int, str]] = field(default_factory=list)
    missing_summaries: list[str] = field(default_factory=list)
    duplicated_summaries: list[str] = field(default_factory=list)
    wrong_counts: list[str] = field(default_factory=list)
    table_mismatches: list[str] = field(default_factory=list)
    alerts: int = 0
    missing_alerts: list[tuple[str, int]] = field(default_factory=list)
    """Successful detectors with fewer alerts on the stream than their result counted (yet)."""
    wrong_alert_counts: list[tuple[str, int]] = field(default_factory=list)
    """Detectors with more alerts on the stream than their result counted."""
    duplicated_alerts: list[int] = field(default_factory=list)
    stored_not_alerted: list[int] = field(default_factory=list)
    alerted_not_stored: list[int] = field(default_factory=list)
    stored_abandoned: int = 0
    """DIA sources stored by a CCD whose result is the visit deadline's timeout (its worker died after the store,
    and no attempt finished it before the deadline): not alerted; counted, not failed (see the README)."""
    deadline_timeouts: list[tuple[str, int]] = field(default_factory=list)
    """(group, detector) of detectors whose raws came but whose result did not before the visit deadline
    (legitimate after a long outage: the gather times them out; counted, not failed)."""

    @property
    def ok(self) -> bool:
        """No loss, no duplicate, nothing unexpected."""
        return not any((self.lost, self.duplicated_results, self.unexpected_results, self.wrong_status,
                        self.missing_summaries, self.duplicated_summaries, self.wrong_counts,
                        self.table_mismatches, self.missing_alerts, self.wrong_alert_counts, self.duplicated_alerts,
                        self.stored_not_alerted, self.alerted_not_stored))

    def line(self) -> str:
        """The one-line verdict."""
        counts = (f"{self.visits} visits, {self.results} results, {self.summaries} summaries; lost {len(self.lost)}, "
                  f"duplicated results {len(self.duplicated_results)}, unexpected {len(self.unexpected_results)}, "
                  f"wrong status {len(self.wrong_status)}, missing summaries {len(self.missing_summaries)}, "
                  f"duplicated summaries {len(self.duplicated_summaries)}, wrong counts {len(self.wrong_counts)}, "
                  f"table mismatches {len(self.table_mismatches)}; {self.alerts} alerts: missing for "
                  f"{len(self.missing_alerts)} CCDs, too many for {len(self.wrong_alert_counts)}, duplicated "
                  f"alerts {len(self.duplicated_alerts)}, stored not "
                  f"alerted {len(self.stored_not_alerted)}, alerted not stored {len(self.alerted_not_stored)}; "
                  f"deadline timeouts {len(self.deadline_timeouts)} (their stored, unalerted DIA sources "
                  f"{self.stored_abandoned})")
        return f"ALL-RESULTS-DELIVERED-ONCE ({counts})" if self.ok else f"FAILED ({counts})"


def read_topic(wiring: Wiring, topic: str, *, latest_per_key: bool = False) -> list[tuple[bytes | None, Any]]:
    """Every committed (key, decoded value) of a topic, up to its current end."""
    registry = SchemaRegistryClient({"url": wiring.registry_url, "timeout": 10})
    # The subject is `<topic>-value`, as ts_salobj's: said explicitly, since confluent-kafka 2.16 first asks the
    # registry for topic associations, an endpoint Apicurio (the local stack's registry) sometimes never answers.
    deserializer = AvroDeserializer(registry, conf={"subject.name.strategy.type": "TOPIC"})
    consumer = Consumer(wiring.kafka | {"group.id": f"verifier-{uuid.uuid4().hex}", "enable.auto.commit": False,
                                        "isolation.level": "read_committed", "enable.partition.eof": True})
    try:
        partitions = _partitions(consumer, topic)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending, records = set(partitions), []
        deadline = time.monotonic() + 120
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: partitions {sorted(pending)} not read to their end in 120 s")
            message = consumer.poll(0.5)
            if message is None:
                continue
            if (error := message.error()) is not None:
                if error.fatal():
                    raise KafkaException(error)
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                continue  # a transient error (the broker out of reach): librdkafka retries
            value = message.value()
            if value is not None and value[:1] == b"{":
                decoded: Any = json.loads(value)
            elif value is not None:
                decoded = deserializer(value, SerializationContext(topic, MessageField.VALUE))
            else:
                decoded = None
            records.append((message.key(), decoded))
        if latest_per_key:
            latest = {key: value for key, value in records}
            return list(latest.items())
        return records
    finally:
        consumer.close()


def _partitions(consumer: Consumer, topic: str, patience: float = 120.0) -> list[int]:
    """The topic's partitions, asking again while the broker is out of reach (it may have just been bounced)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def verify(wiring: Wiring) -> Verdict:
    """Recompute the expected results from the inputs and compare with the outputs and the table."""
    instruments = tomllib.loads(wiring.instruments_file.read_text())

    def active(instrument: str) -> set[int]:
        spec = instruments[instrument]
        low, _, high = str(spec["detectors"]).partition("-")
        return set(range(int(low), int(high or low) + 1)) - set(spec.get("disabled", []))

    visits = {(v["instrument"], v["groupId"]) for _, v in read_topic(wiring, wiring.next_visit)}
    canceled = {v["groupId"] for _, v in read_topic(wiring, wiring.next_visit_canceled)}
    raws: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    group_of: dict[int, str] = {}
    """exposure id -> its group (a visit's id is its first exposure's)"""
    for _, raw in read_topic(wiring, wiring.raws):
        raws[(raw["instrument"], raw["group_id"], raw["detector"])].add(raw["snap"])
        group_of[raw["exposure_id"]] = raw["group_id"]
    expected = {(instrument, group, d) for instrument, group in visits for d in active(instrument)}
    results = [value for _, value in read_topic(wiring, wiring.results)]
    summaries = [value for _, value in read_topic(wiring, wiring.summaries)]
    verdict = Verdict(visits=len(visits), results=len(results), summaries=len(summaries))
    seen = Counter((r["instrument"], r["group_id"], r["detector"]) for r in results)
    verdict.lost = sorted((g, d) for i, g, d in expected - set(seen))
    verdict.duplicated_results = sorted((g, d) for (i, g, d), n in seen.items() if n > 1)
    verdict.unexpected_results = sorted((g, d) for i, g, d in set(seen) - expected)
    for r in results:
        key = (r["instrument"], r["group_id"], r["detector"])
        allowed = {"success"} if raws.get(key) else {"timeout"}
        if r["group_id"] in canceled:
            allowed |= {"canceled"}
        if r["status"] == "timeout" and r["error_class"] == "VisitDeadline" and "timeout" not in allowed:
            verdict.deadline_timeouts.append((r["group_id"], r["detector"]))
        elif r["status"] not in allowed:
            verdict.wrong_status.append((r["group_id"], r["detector"], r["status"]))
    per_visit = Counter((s["instrument"], s["group_id"]) for s in summaries)
    verdict.missing_summaries = sorted(g for i, g in visits - set(per_visit))
    verdict.duplicated_summaries = sorted(g for (i, g), n in per_visit.items() if n > 1)
    statuses: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
    for r in results:
        statuses[(r["instrument"], r["group_id"])][r["status"]] += 1
    for s in summaries:
        if {k: v for k, v in s["counts"].items() if v} != dict(statuses[(s["instrument"], s["group_id"])]):
            verdict.wrong_counts.append(s["group_id"])
    table = {key.decode(): value for key, value in read_topic(wiring, wiring.gather_changelog, latest_per_key=True)
             if key is not None and value is not None}
    for instrument, group in visits:
        row = table.get(f"{instrument}/{group}")
        reported = {o["detector"] for o in row["outcomes"]} if row else set()
        if row is None or not row["summary_time"] or reported != active(instrument):
            verdict.table_mismatches.append(group)
    judge_alerts(wiring, results, group_of, verdict)
    return verdict


def judge_alerts(wiring: Wiring, results: list[dict[str, Any]], group_of: dict[int, str], verdict: Verdict) -> None:
    """Each DIA source a successful result counted is on the alert stream, and each DIA source in the APDB is
    alerted once, except those of a CCD whose pipeline stored them and was then abandoned (its result is the
    visit deadline's `timeout`): counted apart."""
    sources = [alert["diaSource"] for _, alert in read_topic(wiring, wiring.alerts)]
    verdict.alerts = len(sources)
    alerted = Counter(source["diaSourceId"] for source in sources)
    verdict.duplicated_alerts = sorted(i for i, n in alerted.items() if n > 1)
    per_detector = Counter((source["visit"], source["detector"]) for source in sources)
    for r in results:
        if r["status"] != "success":
            continue  # a detector that ended after its visit's deadline still alerts what it stored: judged below
        counted = int(r["metrics"].get("alertCount", 0))
        found = per_detector[(r["exposure_ids"][0], r["detector"])] if r["exposure_ids"] else 0
        if found < counted:
            verdict.missing_alerts.append((r["group_id"], r["detector"]))
        elif found > counted:
            verdict.wrong_alert_counts.append((r["group_id"], r["detector"]))
    with sqlite3.connect(f"file:{wiring.apdb}?mode=ro", uri=True) as db:
        rows = list(db.execute('SELECT "diaSourceId", visit, detector FROM "DiaSource"'))
    stored = Counter(row[0] for row in rows)
    verdict.duplicated_alerts += sorted(i for i, n in stored.items() if n > 1)
    status = {(r["group_id"], r["detector"]): (r["status"], r["error_class"]) for r in results}
    for source, visit, detector in rows:
        if source in alerted:
            continue
        if status.get((group_of.get(visit, ""), detector)) == ("timeout", "VisitDeadline"):
            verdict.stored_abandoned += 1
        else:
            verdict.stored_not_alerted.append(source)
    verdict.alerted_not_stored = sorted(set(alerted) - set(stored))
