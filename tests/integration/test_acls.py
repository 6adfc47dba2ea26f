"""Kafka ACLs and the registry's basic auth on a secure cluster: each role does its part and no more.

The cluster is the one `stack up --secure` makes (SASL_SSL, SCRAM-SHA-512, StandardAuthorizer, one
user per role), with the ACLs derived from this module's own settings.
"""

from __future__ import annotations

import secrets
import signal
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from stack.acls import ClientRole, bindings, role_grants, role_security
from stack.cluster import Cluster, ClusterState, Ports
from streams.config import Settings
from streams.errors import RegistryError
from streams.ops.workers import WorkerPool
from streams.runtime import admin
from streams.serde.codec import Codec
from streams.serde.registry import ConfluentRegistry
from streams.simulate.visits import Visits
from tests.integration.settings import isolated_settings
from tests.integration.test_sal_bridge import Bridge
from topology.topics import declare

PASSWORDS = {user: secrets.token_urlsafe(16) for user in ("admin", *ClientRole)}
SUMMIT, WORKERS, BRIDGE, OPERATORS = ClientRole


@dataclass(frozen=True)
class Guarded:
    """The secure cluster and this module's deployment on it (its names; no credentials)."""

    state: ClusterState
    settings: Settings

    def as_role(self, role: ClientRole, password: str | None = None, on: ClusterState | None = None) -> Settings:
        """The deployment's settings with a role's credentials, for Kafka and for the registry (of this cluster,
        or of the one given)."""
        password = PASSWORDS[role] if password is None else password
        cluster = on or self.state
        return self.settings.on(replace(cluster.client(), security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                        sasl_username=role, sasl_password=password, ssl_cafile=cluster.ca_file,
                                        registry_user=role, registry_password=password))

    def bridge(self, chile: ClusterState) -> Settings:
        """The SAL bridge's settings: as `bridge` on both clusters."""
        return replace(self.as_role(BRIDGE), chile=self.as_role(BRIDGE, on=chile).cluster)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Guarded]:
    """A secure cluster started with this deployment's ACLs, whose topics the workers' user has created."""
    root = tmp_path_factory.mktemp("guarded")
    names = isolated_settings(ClusterState("guarded", "", "", Ports(), 0, 0), root)  # the addresses come with up
    cluster = Cluster("guarded", Ports(0, 0, 0), root=root / "stack", bound_to_parent=True,
                      security=role_security(PASSWORDS, bindings(role_grants(names))))
    state = cluster.up()
    try:
        guarded = Guarded(state, names.on(state.client()))
        workers = guarded.as_role(WORKERS)
        admin.prepare(workers, Codec(ConfluentRegistry(workers.registry_config())))  # as a worker does at start
        yield guarded
    finally:
        cluster.down()


@pytest.fixture(scope="module")
def chile(guarded: Guarded, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """The Chile side, started as `stack up --secure --as-chile` would: the bridge's ACLs there."""
    root = tmp_path_factory.mktemp("guarded-chile")
    acls = bindings(role_grants(guarded.settings, chile=True))
    cluster = Cluster("guarded-chile", Ports(0, 0, 0), root=root, bound_to_parent=True,
                      security=role_security(PASSWORDS, acls, chile=True))
    try:
        yield cluster.up()
    finally:
        cluster.down()


def produce(settings: Settings, topic: str) -> KafkaError | None:
    """Produce one record; the broker's answer (None: written)."""
    answers: list[KafkaError | None] = []
    producer = Producer(settings.kafka_config() | {"message.timeout.ms": 30_000})
    producer.produce(topic, value=b"{}", on_delivery=lambda error, _message: answers.append(error))
    producer.flush(60)
    [answer] = answers
    return answer


def registry_status(url: str, user: str = "", password: str = "") -> int:
    """The HTTP status of a GET of the registry's subjects, with or without basic auth."""
    headers = {"Authorization": "Basic " + b64encode(f"{user}:{password}".encode()).decode()} if user else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}/subjects", headers=headers), timeout=10) as done:
            return int(done.status)
    except urllib.error.HTTPError as refused:
        return refused.code


def test_strangers_are_refused_by_kafka_and_by_the_registry(guarded: Guarded) -> None:
    """Plaintext, a wrong password or no credentials: no metadata, no schemas."""
    workers = guarded.as_role(WORKERS)
    for refused in ({"bootstrap.servers": guarded.state.bootstrap},
                    guarded.as_role(WORKERS, password="not-" + PASSWORDS[WORKERS]).kafka_config()):
        with pytest.raises(KafkaException):
            AdminClient(refused | {"log_level": 0}).list_topics(timeout=6)
    assert list(AdminClient(workers.kafka_config()).list_topics(timeout=10).brokers) == [1]
    url = guarded.state.registry_url
    assert registry_status(url) == 401
    assert registry_status(url, WORKERS, "not-" + PASSWORDS[WORKERS]) == 401
    assert registry_status(url, WORKERS, PASSWORDS[WORKERS]) == 200


WRITES = [
    (SUMMIT, "next_visit", True), (SUMMIT, "next_visit_canceled", True), (SUMMIT, "raw_image_available", True),
    (SUMMIT, "s3_notifications", True), (SUMMIT, "detector_commands", False), (SUMMIT, "ocps_job_events", False),
    (SUMMIT, "metrics", False), (SUMMIT, "calibration_products", False),
    (OPERATORS, "next_visit", True), (OPERATORS, "detector_commands", False), (OPERATORS, "ocps_job_events", False),
    (BRIDGE, "visit_summary", False), (BRIDGE, "metrics", False), (BRIDGE, "next_visit", False),
]


@pytest.mark.parametrize(("role", "topic", "allowed"), WRITES)
def test_each_role_writes_its_own_topics_only(guarded: Guarded, role: ClientRole, topic: str, allowed: bool) -> None:
    """The summit announces visits but cannot command a detector, run an OCPS job or send a metric to Chile."""
    settings = guarded.as_role(role)
    answer = produce(settings, getattr(declare(settings), topic).name)
    if allowed:
        assert answer is None
    else:
        assert answer is not None and answer.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_the_registry_enforces_roles(guarded: Guarded) -> None:
    """The bridge reads the processing cluster's schemas but may not register one; the summit may."""
    schema = {"type": "record", "name": "Probe", "fields": [{"name": "x", "type": "int"}]}
    bridge = ConfluentRegistry(guarded.as_role(BRIDGE).registry_config())
    assert f"{guarded.settings.next_visit_topic}-value" in bridge.subjects()
    with pytest.raises(RegistryError):
        bridge.register("probe-value", schema)
    assert ConfluentRegistry(guarded.as_role(SUMMIT).registry_config()).register("probe-value", schema) > 0


def test_a_visit_end_to_end_each_client_as_its_role(guarded: Guarded, chile: ClusterState, tmp_path: Path) -> None:
    """The summit announces a visit and its raws, workers (as `workers`) process it, an operator reads its summary,
    and the SAL bridge (as `bridge` on both clusters) carries the summary to Chile."""
    pool = WorkerPool(guarded.as_role(WORKERS), tmp_path / "logs")
    bridge = Bridge(guarded.bridge(chile), tmp_path / "bridge.log")
    group = "2026-11-30T03:00:00.000"
    try:
        worker = pool.start("w1")
        bridge.start()
        bridge.wait_running(1)
        summit = Visits(guarded.as_role(SUMMIT))
        summit.next_visit(group, instrument="LSSTComCam", survey="BLOCK-365")
        summit.raws([summit.raw(group, detector, snap, 1 + snap) for detector in range(9) for snap in (0, 1)])
        [summary] = Visits(guarded.as_role(OPERATORS)).summaries(1)
        sal_topic = f"lsst.{guarded.settings.chile_sal_subname}.PromptProcessing.logevent_visitSummary"
        [sal_summary] = Visits(guarded.as_role(OPERATORS, on=chile)).read(sal_topic, 1)
        bridge.alive()
    finally:
        bridge.kill(signal.SIGTERM)
        pool.stop_all()
    assert summary.group_id == group and summary.reason == "complete" and summary.counts["success"] == 9
    assert group.encode() in sal_summary
    assert PASSWORDS[WORKERS] not in worker.text(), "secrets never appear in logs"
