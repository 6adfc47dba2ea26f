"""A run of visits through workers that are killed, retired, added, and a broker that bounces.

    .local/venv/bin/python -m tests.chaos.run --visits 1000 --kill-every 20     (make chaos)

It starts its own cluster and three workers, sends visits (early, duplicate and late raws,
cancellations, detectors that never get raws) while a chaos schedule SIGKILLs and restarts
workers, retires one for good and adds another, and bounces the broker once; a supervisor
restarts any worker that dies by itself. Then the independent verifier prints its verdict.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from stack.cluster import Cluster, ClusterState, Ports
from streams.config import Settings
from streams.ops.workers import READY, WorkerPool, free_port
from streams.simulate.visits import Visits
from tests.chaos.verifier import Verdict, Wiring, verify
from topology.tables import gather_changelog
from topology.topics import declare

INSTRUMENTS = '[LSSTComCam]\ndetectors = "0-8"\n'
DIA_SOURCES = 3
"""DIA sources the stand-in finds per CCD: each goes through association, the APDB and the alert stream."""
FIELDS = 50
"""Visit i points at field i mod FIELDS: sources come back, so alerts carry history (bounded: a 1000-visit run
revisits each field 20 times)."""


def settings_for(state: ClusterState, root: Path) -> Settings:
    """A deployment of its own on the chaos cluster, sized so that three workers keep up on two cores.

    One detector per partition, so each worker runs three CCDs of a visit. On this project's 2-core machine a CCD
    costs its pipeline process about 0.13 s of CPU (the stand-in's 0.02 s, then association, the APDB and the
    alerts of its DIA sources: measured 0.11 s), and each restart after a SIGKILL about 8 s (the worker's start
    and its pipeline process's imports); with a visit every 2 s (`--interval`) that leaves a quarter of the
    machine for the workers, the broker and the registry. Faster than the machine can process, every visit
    queues behind the last and ends at its deadline as `timeout`: a capacity limit, not a delivery fault."""
    instruments = root / "instruments.toml"
    instruments.write_text(INSTRUMENTS)
    surveys = root / "surveys.toml"
    surveys.write_text('[surveys]\n"BLOCK-*" = ["stand-in"]\n')
    return replace(Settings.from_env({}), app_id="chaos", cluster=state.client(),
                   data_dir=str(root / "data"), data_root=str(root / "repo"), output_root=str(root / "out"),
                   instruments_file=str(instruments), surveys_file=str(surveys), detector_partitions=9,
                   pipeline_processes=1, standin_preload_seconds=0.01, standin_run_seconds=0.02,
                   standin_dia_sources=DIA_SOURCES, apdb_config=str(root / "apdb" / "apdb.yaml"),
                   image_timeout=4.0, process_timeout=60.0, web_port=free_port())


class Supervisor:
    """Keeps the wanted workers running, as Kubernetes would restart a crashed pod."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.wanted: dict[str, object] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.restarts = 0

    def start(self, name: str) -> None:
        with self.lock:
            self.wanted[name] = self.pool.start(name, wait=False)

    def kill(self, name: str) -> None:
        """SIGKILL a worker; the supervisor brings it back."""
        with self.lock:
            worker = self.wanted[name]
        worker.stop(signal.SIGKILL)  # type: ignore[attr-defined]

    def retire(self, name: str) -> None:
        """Stop a worker for good (a scale-down)."""
        with self.lock:
            worker = self.wanted.pop(name)
        worker.stop(signal.SIGTERM)  # type: ignore[attr-defined]

    def watch(self) -> None:
        while not self.stop.wait(0.5):
            with self.lock:
                for name, worker in list(self.wanted.items()):
                    if worker.process.poll() is not None:  # type: ignore[attr-defined]
                        self.wanted[name] = self.pool.start(name, wait=False)
                        self.restarts += 1


def send_visits(visits: Visits, count: int, interval: float, rng: random.Random, sent: dict[str, float]) -> None:
    """Visits with every kind of trouble the generator knows; `sent` records when each group started."""
    for index in range(count):
        group = f"2026-11-25T{4 + index // 3600:02d}:{index // 60 % 60:02d}:{index % 60:02d}.000"
        sent[group] = time.monotonic()
        first = 1 + 2 * index
        arrivals = [visits.raw(group, d, s, first + s) for d in range(9) for s in (0, 1)]
        kind = index % 6
        field = [10.0 + 2.0 * (index % FIELDS), -5.0]
        if kind == 1:  # raws before their nextVisit
            visits.raws(arrivals)
            visits.next_visit(group, duration=1.0, position=field)
        else:
            visits.next_visit(group, duration=1.0, position=field)
            if kind == 2:  # duplicates
                arrivals += rng.sample(arrivals, 6)
            if kind == 3:  # a detector that never gets its raws
                arrivals = [a for a in arrivals if a.detector != 4]
            if kind == 4:  # canceled half way
                visits.raws(arrivals[:8])
                visits.cancel(group)
                arrivals = arrivals[8:]
            visits.raws(arrivals)
            if kind == 5:  # a late raw of another exposure, after dispatch
                visits.raws([visits.raw(group, 0, 0, first + 9000)])
        time.sleep(interval)


def wait_quiet(settings: Settings, topics: list[str], deadline: float, quiet: float = 20.0) -> None:
    """Until no output topic has grown for `quiet` seconds (the workers caught up), or the deadline."""
    consumer = Consumer(settings.kafka_config() | {"group.id": "chaos-watch"})
    try:
        partitions = [TopicPartition(t, p) for t in topics
                      for p in consumer.list_topics(t, timeout=30).topics[t].partitions]
        last: list[int] = []
        since = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet:
            try:
                ends = [consumer.get_watermark_offsets(tp, 30)[1] for tp in partitions]
            except KafkaException:  # leadership still moving after the broker bounce: not quiet yet
                ends = []
            if ends != last or not ends:
                last, since = ends, time.monotonic()
            time.sleep(2.0)
    finally:
        consumer.close()


def run(visits_count: int, kill_every: float, interval: float, root: Path, settle: float = 900.0) -> Verdict:
    """The whole chaos run; returns the verdict."""
    cluster = Cluster("chaos", Ports(0, 0, 0), root=root / "stack", bound_to_parent=True)
    state = cluster.up()
    settings = settings_for(state, root)
    pool = WorkerPool(settings, root / "logs")
    supervisor = Supervisor(pool)
    rng = random.Random(7)
    try:
        for name in ("w1", "w2", "w3"):
            supervisor.start(name)
        pool.started[0].wait_for(READY, 120)
        threading.Thread(target=supervisor.watch, daemon=True).start()
        visits = Visits(settings, patience=600.0)  # the broker bounce must not stop the generator
        sent: dict[str, float] = {}
        started, actions = time.monotonic(), 0
        sender = threading.Thread(target=send_visits, args=(visits, visits_count, interval, rng, sent), daemon=True)
        sender.start()
        retired = bounced = False
        while sender.is_alive() or not bounced:  # a short run, too, gets a kill, a retire/add and a bounce
            time.sleep(kill_every)
            actions += 1
            if not retired and actions == 2:
                supervisor.retire("w3")
                supervisor.start("w4")
                retired = True
                print(f"[{time.monotonic() - started:5.1f} s] retired w3, added w4", flush=True)
            elif not bounced and actions == 3:
                state = cluster.bounce_broker(pause=2.0)
                bounced = True
                print(f"[{time.monotonic() - started:5.1f} s] bounced the broker", flush=True)
            else:
                victim = rng.choice(sorted(supervisor.wanted))
                supervisor.kill(victim)
                print(f"[{time.monotonic() - started:5.1f} s] SIGKILL {victim}", flush=True)
        topics = declare(settings)
        wiring = Wiring(settings.kafka_config(), settings.cluster.registry_url, topics.next_visit.name,
                        topics.next_visit_canceled.name, topics.raw_image_available.name, topics.ccd_result.name,
                        topics.visit_summary.name, gather_changelog(settings).name, Path(settings.instruments_file),
                        topics.alerts.name, Path(settings.apdb_config).with_name("apdb.db"))
        deadline = time.monotonic() + settle
        outputs = [topics.ccd_result.name, topics.visit_summary.name, topics.alerts.name]
        verdict = Verdict()
        while time.monotonic() < deadline:
            wait_quiet(settings, outputs, deadline)
            print(f"[{time.monotonic() - started:5.1f} s] outputs quiet; verifying", flush=True)
            verdict = verify(wiring)
            if not (verdict.lost or verdict.missing_summaries or verdict.missing_alerts):
                break
            print(f"[{time.monotonic() - started:5.1f} s] {len(verdict.lost)} results, "
                  f"{len(verdict.missing_summaries)} summaries and the alerts of {len(verdict.missing_alerts)} CCDs "
                  "not out yet", flush=True)
        print(f"[{time.monotonic() - started:5.1f} s] verified", flush=True)
        for group, detector in verdict.deadline_timeouts:  # to tie each to the chaos action before it
            print(f"  deadline timeout: {group} detector {detector}, sent at {sent[group] - started:5.1f} s",
                  flush=True)
        print(f"workers restarted by the supervisor: {supervisor.restarts}", flush=True)
        return verdict
    finally:
        supervisor.stop.set()
        pool.stop_all(signal.SIGKILL)
        cluster.down()


def main() -> int:
    """Run and print the verdict."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visits", type=int, default=1000)
    parser.add_argument("--kill-every", type=float, default=20.0, help="seconds between chaos actions")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between visits")
    parser.add_argument("--keep", type=Path, help="a folder for the run's files (logs/ per worker), kept after it")
    args = parser.parse_args()
    if args.keep:  # the workers' logs and the stack's files stay there, to read after a failed verdict
        shutil.rmtree(args.keep, ignore_errors=True)
        verdict = run(args.visits, args.kill_every, args.interval, args.keep)
    else:
        with tempfile.TemporaryDirectory() as folder:
            verdict = run(args.visits, args.kill_every, args.interval, Path(folder))
    print(verdict.line())
    for name in ("lost", "duplicated_results", "unexpected_results", "wrong_status", "missing_summaries",
                 "duplicated_summaries", "wrong_counts", "table_mismatches", "missing_alerts", "wrong_alert_counts",
                 "duplicated_alerts", "stored_not_alerted", "alerted_not_stored", "deadline_timeouts"):
        if getattr(verdict, name):
            print(f"  {name}: {getattr(verdict, name)[:10]}")
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
