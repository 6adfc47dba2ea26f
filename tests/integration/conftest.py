"""One real local cluster per test run, and per-test settings that isolate each test.

Each test gets its own application id (so its own consumer group and tables), its own topic
names and its own data directory, so tests never see each other's records.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from stack.cassandra import Cassandra, CassandraState
from stack.cluster import Cluster, ClusterState, Ports, Security
from streams.config import Settings
from streams.ops.workers import WorkerPool, free_port


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """A broker and a registry on free loopback ports, stopped when the run ends."""
    stack = Cluster("pytest", Ports(0, 0, 0), root=tmp_path_factory.mktemp("stack"), bound_to_parent=True)
    state = stack.up()
    yield state
    stack.down()


@pytest.fixture(scope="session")
def cassandra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CassandraState]:
    """One Cassandra node (the APDB at scale) on free loopback ports, stopped when the run ends (and killed with
    pytest)."""
    node = Cassandra("pytest", native_port=0, storage_port=0, root=tmp_path_factory.mktemp("cassandra"),
                     bound_to_parent=True)
    state = node.up()
    yield state
    node.down()


CHILE_USER, CHILE_PASSWORD = "bridge", secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def chile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterState]:
    """The Chile side of the SAL bridge: a second, independent cluster (broker and registry) whose only
    client listener is SASL_SSL with SCRAM-SHA-512 (user CHILE_USER), stopped when the run ends."""
    stack = Cluster("chile", Ports(0, 0, 0), root=tmp_path_factory.mktemp("chile"), bound_to_parent=True,
                    security=Security(secrets.token_urlsafe(16), ((CHILE_USER, CHILE_PASSWORD),)))
    state = stack.up()
    yield state
    stack.down()


@pytest.fixture
def settings(cluster: ClusterState, tmp_path: Path) -> Settings:
    """Settings for this test alone, pointing at the session's cluster."""
    tag = uuid.uuid4().hex[:8]
    return replace(
        Settings.from_env({}),
        app_id=f"test-{tag}",
        cluster=cluster.client(),
        topic_prefix=f"t{tag}.prompt",
        next_visit_topic=f"t{tag}.lsst.sal.ScriptQueue.logevent_nextVisit",
        next_visit_canceled_topic=f"t{tag}.lsst.sal.ScriptQueue.logevent_nextVisitCanceled",
        data_dir=str(tmp_path / "data"),
        alert_topic=f"t{tag}.lsst-alerts-v11",
        apdb_config=str(tmp_path / "apdb" / "apdb.yaml"),
        output_root=str(tmp_path / "outputs"),
        web_port=free_port(),
        detector_partitions=4,
    )


@pytest.fixture
def workers(settings: Settings, tmp_path: Path) -> Iterator[WorkerPool]:
    """Faust workers of this test's app, started with the faust CLI; all stopped afterwards."""
    pool = WorkerPool(settings, tmp_path / "logs")
    yield pool
    pool.stop_all()
