"""A SASL_SSL + SCRAM-SHA-512 cluster: strangers are refused, a worker with credentials works."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from stack.cluster import Cluster, ClusterState, Ports, Security
from streams.ops.workers import WorkerPool
from streams.simulate.visits import Visits
from tests.integration.settings import isolated_settings

USER, PASSWORD = "prompt", secrets.token_urlsafe(16)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A cluster whose only client listener is SASL_SSL with SCRAM-SHA-512."""
    cluster = Cluster("secure", Ports(0, 0, 0), root=tmp_path_factory.mktemp("secure"), bound_to_parent=True,
                      security=Security(secrets.token_urlsafe(16), ((USER, PASSWORD),)))
    state = cluster.up()
    yield state
    cluster.down()


def metadata(config: dict[str, str | int]) -> list[int]:
    """The brokers a client sees (raises if it cannot connect)."""
    return list(AdminClient(config | {"log_level": 0}).list_topics(timeout=6).brokers)


def test_unauthenticated_and_wrong_password_are_refused(secure: ClusterState) -> None:
    """Plaintext, TLS without SASL and a wrong password all fail; the right credentials work."""
    tls = {"bootstrap.servers": secure.bootstrap, "security.protocol": "SASL_SSL", "ssl.ca.location": secure.ca_file,
           "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": USER}
    tls_only = {"bootstrap.servers": secure.bootstrap, "security.protocol": "SSL", "ssl.ca.location": secure.ca_file}
    for refused in ({"bootstrap.servers": secure.bootstrap}, tls_only, tls | {"sasl.password": "not-" + PASSWORD}):
        with pytest.raises(KafkaException):
            metadata(refused)
    assert metadata(tls | {"sasl.password": PASSWORD}) == [1]


def test_worker_runs_a_visit_over_sasl_ssl(secure: ClusterState, tmp_path: Path) -> None:
    """Agents (aiokafka) and the gather (librdkafka) connect with the settings from the environment."""
    plain = isolated_settings(secure, tmp_path)
    settings = plain.on(replace(plain.cluster, security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                                sasl_username=USER, sasl_password=PASSWORD, ssl_cafile=secure.ca_file))
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        worker = pool.start("w1")
        visits = Visits(settings)
        visits.next_visit("2026-11-25T05:00:00.000", instrument="LATISS", survey="BLOCK-T454")
        [summary] = visits.summaries(1)
    finally:
        pool.stop_all()
    assert summary.counts["ignored"] == 1
    assert PASSWORD not in worker.text(), "secrets never appear in logs"
