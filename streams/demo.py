"""`make demo`: start the local stack and a worker, send a nextVisit, show what the worker decoded.

The stack stays up afterwards for you to explore (`make down` stops it).
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace

from stack.cluster import LOCAL_DIR, Cluster
from stack.workers import WorkerPool
from streams.admin import ensure_topics
from streams.clock import tai_now, utc_from_tai
from streams.codec import Codec
from streams.config import Settings
from streams.records import NextVisit
from streams.registry import ConfluentRegistry
from streams.send import send_values
from topology.topics import declare


def sample_next_visit() -> NextVisit:
    """A nextVisit as the MainTel ScriptQueue would publish it now."""
    now = tai_now()
    return NextVisit(
        salIndex=1, private_sndStamp=now, private_efdStamp=utc_from_tai(now), private_kafkaStamp=now,
        private_seqNum=1, private_identity="ScriptQueue:1", scriptSalIndex=100001,
        groupId="2026-11-25T03:14:15.926", coordinateSystem=2, position=[150.1, 2.2], startTime=now + 20,
        rotationSystem=2, cameraAngle=0.0, filters="r_57", dome=2, duration=32.0, nimages=2,
        instrument="LSSTCam", survey="BLOCK-365",
    )


def main() -> int:
    """Run the demo; return the exit status."""
    state = Cluster("main").up()
    print(f"stack: Kafka at {state.bootstrap}, schema registry at {state.registry_url}")
    settings = replace(Settings.from_env(), bootstrap=state.bootstrap, registry_url=state.registry_url)
    topics = declare(settings)
    ensure_topics(settings, topics.all())
    pool = WorkerPool(settings, LOCAL_DIR / "logs" / "demo")
    try:
        worker = pool.start("demo-worker")
        print(f"worker: `faust -A streams.app worker` is ready (log: {worker.log})")
        visit = sample_next_visit()
        codec = Codec(ConfluentRegistry(settings.registry_config()))
        send_values(settings, topics.next_visit.name, [(None, codec.encode(topics.next_visit.name, visit))])
        print(f"sent: nextVisit for group {visit.groupId} to {topics.next_visit.name}")
        log = worker.wait_for("next_visit decoded")
        decoded = re.search(r"next_visit decoded: (.*)", log)
        print(f"decoded by the worker: {decoded.group(1) if decoded else '?'}")
    finally:
        pool.stop_all()
    print("the stack is still running: `make down` stops it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
