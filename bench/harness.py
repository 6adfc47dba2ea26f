"""What every benchmark case shares: isolated settings on the bench cluster, statistics, memory, processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stack.cluster import PROJECT_ROOT, ClusterState
from streams.config import Settings
from streams.ops.workers import free_port
from streams.serde.records import CcdResult, VisitExpected
from streams.simulate.visits import exposure_id

LSSTCAM_DETECTORS = 189
SURVEY = "STAND-IN-BENCH"
"""Matches `STAND-IN*` in streams/surveys.toml: the stand-in pipeline, here at zero cost (a no-op)."""
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
"""Output topics of the throughput runs stamp records when the broker appends them (Kafka Streams
would otherwise copy its input's timestamps to its output)."""


def bench_settings(state: ClusterState, root: Path, name: str, **changes: object) -> Settings:
    """Settings of one case: its own application id, topics and folders on the bench cluster."""
    base = replace(
        Settings.from_env({}), app_id=f"bench-{name}", cluster=state.client(),
        topic_prefix=f"bench-{name}.prompt",
        next_visit_topic=f"bench-{name}.lsst.sal.ScriptQueue.logevent_nextVisit",
        next_visit_canceled_topic=f"bench-{name}.lsst.sal.ScriptQueue.logevent_nextVisitCanceled",
        data_dir=str(root / name / "data"), data_root=str(root / name / "repo"),
        output_root=str(root / name / "outputs"), web_port=free_port(),
        standin_preload_seconds=0.0, standin_run_seconds=0.0,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def create_topic(settings: Settings, name: str, partitions: int, config: dict[str, str] | None = None) -> None:
    """Create one topic (the broker does not auto-create them)."""
    admin = AdminClient(settings.kafka_config())
    replication = settings.cluster.replication_factor
    futures = admin.create_topics([NewTopic(name, partitions, replication, config=config or {})])
    for future in futures.values():
        future.result()


@dataclass(frozen=True)
class Spread:
    """p50, p99 and max of a sample, in seconds."""

    count: int
    p50: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        """Percentiles by the nearest-rank method (no interpolation: every figure was observed)."""
        if not values:
            return cls(0, math.nan, math.nan, math.nan)
        ordered = sorted(values)

        def rank(q: float) -> float:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return cls(len(ordered), rank(0.50), rank(0.99), ordered[-1])


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (VmRSS), in bytes; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def start_process(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a peer in its own process group, its output in `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=os.environ | (env or {}), cwd=PROJECT_ROOT, start_new_session=True)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process group, then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def gather_visit(number: int, now: float) -> tuple[str, VisitExpected, list[CcdResult]]:
    """Visit `number` of the gather cases: its group id, its VisitExpected and one successful outcome per
    LSSTCam detector (what the gather consumes), the same for every contender."""
    group = f"2026-11-26T{number // 3600:02d}:{number // 60 % 60:02d}:{number % 60:02d}.000"
    detectors = list(range(LSSTCAM_DETECTORS))
    expected = VisitExpected(instrument="LSSTCam", group_id=group, survey=SURVEY, pipelines=["stand-in"],
                             detectors=detectors, nimages=2, next_visit_time=now, fanout_time=now,
                             deadline=now + 3600.0)
    outcomes = [CcdResult(
        instrument="LSSTCam", group_id=group, detector=detector, status="success", pipeline="stand-in",
        survey=SURVEY, exposure_ids=[exposure_id(2 * number + 1), exposure_id(2 * number + 2)],
        snaps_expected=2, snaps_processed=2, next_visit_time=now, fanout_time=now,
        preload_done_time=now, first_raw_time=now, process_start_time=now, process_end_time=now,
        result_time=now, worker="bench",
        metrics={"standInCpuTime": 0.0, "snapsProcessed": 2.0, "prep_butlerTotalTime": 0.0})
        for detector in detectors]
    return group, expected, outcomes
