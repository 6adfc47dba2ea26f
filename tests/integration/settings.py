"""Settings that isolate one test (or one module) on the shared test cluster."""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path

from stack.cluster import ClusterState
from streams.config import Settings
from streams.ops.workers import free_port


def isolated_settings(cluster: ClusterState, root: Path, **changes: object) -> Settings:
    """Settings of their own (app id, topics, data) on the test cluster."""
    tag = uuid.uuid4().hex[:8]
    base = replace(
        Settings.from_env({}), app_id=f"test-{tag}", cluster=cluster.client(), topic_prefix=f"t{tag}.prompt",
        next_visit_topic=f"t{tag}.lsst.sal.ScriptQueue.logevent_nextVisit",
        next_visit_canceled_topic=f"t{tag}.lsst.sal.ScriptQueue.logevent_nextVisitCanceled",
        data_dir=str(root / "data"), data_root=str(root / "repo"), web_port=free_port(), detector_partitions=4,
        pipeline_processes=2, standin_preload_seconds=0.01, standin_run_seconds=0.01,
        surveys_file=str(Path(__file__).with_name("surveys.toml")), output_root=str(root / "outputs"),
        alert_topic=f"t{tag}.lsst-alerts-v11", apdb_config=str(root / "apdb" / "apdb.yaml"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]
