"""Bucket notifications from a real S3-compatible server (moto's standalone server) drive visits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from stack.cluster import ClusterState
from streams.core.focal_plane import detector_name
from streams.ops.workers import WorkerPool, free_port
from streams.simulate.visits import Visits
from tests.integration.settings import isolated_settings

BUCKET = "rubin-summit"
GROUP = "2026-11-25T06:00:00.000"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A local S3-compatible server on a free loopback port."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


def raw_key(sequence: int, detector: int) -> str:
    """The key of a ComCam raw as the camera writes it."""
    obs_id = f"CC_O_20261125_{sequence:06d}"
    return f"LSSTComCam/20261125/{obs_id}/{obs_id}_{detector_name('LSSTComCam', detector)}.fits"


def notification(key: str) -> bytes:
    """The S3 event JSON the storage emits for a new object."""
    record = {"eventName": "ObjectCreated:Put",
              "s3": {"bucket": {"name": BUCKET}, "object": {"key": key, "size": 2880}}}
    return json.dumps({"Records": [record]}).encode()


def test_notifications_become_processed_raws(cluster: ClusterState, s3_endpoint: str, tmp_path: Path) -> None:
    """Raws and sidecars in a bucket, notified on one topic: every detector processed with its group."""
    settings = isolated_settings(cluster, tmp_path, s3_endpoint_url=s3_endpoint, s3_access_key="test",
                                 s3_secret_key="test", sidecar_attempts=5)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    notes = []
    for snap, sequence in enumerate((101, 102)):
        for detector in range(9):
            key = raw_key(sequence, detector)
            s3.put_object(Bucket=BUCKET, Key=key, Body=b"SIMPLE  =                    T")
            sidecar = key.removesuffix(".fits") + ".json"
            s3.put_object(Bucket=BUCKET, Key=sidecar, Body=json.dumps({"GROUPID": GROUP, "CURINDEX": snap + 1}))
            notes += [notification(key), notification(sidecar)]
    notes.append(notification(raw_key(103, 0)))  # a raw whose sidecar never comes
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        pool.start("w1")
        visits = Visits(settings)
        visits.next_visit(GROUP)
        visits.send_bytes(visits.topics.s3_notifications.name, notes)
        results = visits.results(9, settle=3.0)
        summaries = visits.summaries(1)
        letters = visits.dead_letters(1)
    finally:
        pool.stop_all()
    assert sorted(r.detector for r in results) == list(range(9))
    assert all(r.status == "success" and r.exposure_ids == [2026112500101, 2026112500102] for r in results)
    assert len(summaries) == 1 and summaries[0].counts["success"] == 9
    [letter] = letters
    assert "sidecar" in letter.reason and "CC_O_20261125_000103" in letter.reason
