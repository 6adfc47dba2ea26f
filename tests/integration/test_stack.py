"""The stack module: a cluster comes up ready, a second up finds it, down leaves no process."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from stack.cluster import Cluster, ClusterState, Ports, _jvms_from


def listening(port: int) -> bool:
    """Whether something accepts connections on this loopback port."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_up_is_ready_idempotent_and_down_leaves_nothing(tmp_path: Path) -> None:
    """Broker and registry answer after up; up again is a no-op; down stops every JVM."""
    cluster = Cluster("own", Ports(0, 0, 0), root=tmp_path / "own", bound_to_parent=True)
    state = cluster.up()
    try:
        metadata = AdminClient({"bootstrap.servers": state.bootstrap}).list_topics(timeout=10)
        assert list(metadata.brokers) == [1]
        with urllib.request.urlopen(f"{state.registry_url}/subjects", timeout=5) as response:
            assert response.status == 200

        started = time.monotonic()
        again = Cluster("own", Ports(0, 0, 0), root=tmp_path / "own").up()
        assert again == state, "a second up must find the running cluster, not start another"
        assert time.monotonic() - started < 2
        assert sorted(_jvms_from(cluster.root)) == sorted([state.broker_pid, state.registry_pid])
    finally:
        cluster.down()
    assert list(_jvms_from(cluster.root)) == []
    assert not listening(state.ports.broker) and not listening(state.ports.registry)
    assert cluster.status() is None


def test_two_clusters_run_side_by_side(tmp_path: Path, cluster: ClusterState) -> None:
    """A second, independent cluster (the Chile side) runs next to the session's one."""
    chile = Cluster("chile", Ports(0, 0, 0), root=tmp_path / "chile", bound_to_parent=True)
    state = chile.up()
    try:
        chile_admin = AdminClient({"bootstrap.servers": state.bootstrap})
        main_admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
        for future in chile_admin.create_topics([NewTopic("only-in-chile", 1, 1)]).values():
            future.result()
        assert "only-in-chile" in chile_admin.list_topics(timeout=10).topics
        assert "only-in-chile" not in main_admin.list_topics(timeout=10).topics
        assert chile_admin.list_topics(timeout=10).cluster_id != main_admin.list_topics(timeout=10).cluster_id
    finally:
        chile.down()
