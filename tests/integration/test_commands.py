"""The operators' command line, run as a person runs it, against one real worker started with the faust CLI:
the app commands (`faust -A streams.app <command>`) and the README's kcat recipes, run as written in bash.

The deployment uses the default topic names and surveys file, as the recipes do (no other test uses
those topics on the test cluster); the recipes get only the test cluster's address in place of the local
stack's, and run from a directory whose `.local/repo` is the worker's data root, as in a clone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer

from stack.cluster import PROJECT_ROOT, ClusterState
from streams.config import Settings
from streams.ops.workers import FAUST, WorkerPool
from streams.runtime import admin
from streams.serde.codec import Codec
from streams.serde.records import RawImageAvailable
from streams.serde.registry import ConfluentRegistry
from streams.simulate.visits import Visits
from tests.integration.command_line import faust, faust_until, until
from tests.integration.settings import isolated_settings
from topology.topics import declare

GROUP = "2026-11-25T04:00:00.000"
SURVEY = "STAND-IN-1"
"""The command-line visit's survey: the stand-in pipeline, for raws that are not there."""
RECIPE_GROUP = "2026-11-25T03:14:15.926"
SECTION = "## Events from the command line: kcat and the app commands"
LACKS_AVRO = "This build of kcat lacks Avro/Schema-Registry support"


@pytest.fixture(scope="module")
def deployment(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One worker of a deployment with the default topic names, its data root under `<root>/.local/repo`."""
    root = tmp_path_factory.mktemp("commands")
    defaults = Settings.from_env({})
    settings = replace(isolated_settings(cluster, root), app_id=f"commands-{uuid.uuid4().hex[:8]}",
                       topic_prefix=defaults.topic_prefix, next_visit_topic=defaults.next_visit_topic,
                       next_visit_canceled_topic=defaults.next_visit_canceled_topic,
                       data_root=str(root / ".local" / "repo"), surveys_file=defaults.surveys_file)
    pool = WorkerPool(settings, root / "logs")
    pool.start()
    yield settings
    pool.stop_all()


def status_when(settings: Settings, needle: str) -> str:
    """`visit-status` of the test's visit, once it says `needle`."""
    return faust_until(settings, needle, "visit-status", GROUP, "--instrument", "LSSTComCam")


def test_a_visit_sent_and_followed_from_the_command_line(deployment: Settings) -> None:
    """send-next-visit, send-raw, visits-in-flight and visit-status follow one visit to its summary."""
    sent = faust(deployment, "send-next-visit", "--group", GROUP, "--instrument", "LSSTComCam",
                 "--survey", SURVEY, "--nimages", "1", "--duration", "30")
    assert json.loads(sent.stdout.strip().splitlines()[-1])["groupId"] == GROUP

    uri = f"file://{deployment.data_root}/raw/{GROUP}/{{detector}}.fits"
    faust(deployment, "send-raw", "--group", GROUP, "--instrument", "LSSTComCam", "--detectors", "0-3",
          "--exposure-id", "2026112500400", "--uri", uri)
    shown = status_when(deployment, "success 4")
    assert f"visit LSSTComCam/{GROUP}: in flight: 4/9 results" in shown
    assert "  success: 0 1 2 3" in shown and "  waiting: 4 5 6 7 8" in shown
    [row] = [line for line in faust(deployment, "visits-in-flight").stdout.splitlines() if GROUP in line]
    assert row.split()[:4] == ["LSSTComCam", GROUP, SURVEY, "4/9"]

    faust(deployment, "send-raw", "--group", GROUP, "--instrument", "LSSTComCam", "--detectors", "4-8",
          "--exposure-id", "2026112500400", "--uri", uri)
    shown = status_when(deployment, "summarised")
    assert "summarised (9 results)" in shown and "  success: 0 1 2 3 4 5 6 7 8" in shown
    assert GROUP not in faust(deployment, "visits-in-flight").stdout


def test_dead_letters_show_where_from_and_why(deployment: Settings) -> None:
    """dead-letters lists each unusable input with its origin and the reason."""
    visits = Visits(deployment)
    topic = visits.topics.next_visit_canceled.name
    visits.send_bytes(topic, [b"\x07not avro", b'{"groupId": 42}'])
    shown = faust_until(deployment, "2 dead letter(s)", "dead-letters")
    first, second = (line for line in shown.splitlines() if topic in line)
    assert f"{topic} [0] @0" in first and "WireFormatError" in first and "magic byte" in first
    assert f"{topic} [0] @1" in second and "SchemaMismatchError" in second and '{"groupId": 42}' in second


def test_a_wrong_topic_gets_a_clear_error(deployment: Settings) -> None:
    """A wrong topic name is refused with the list of known topics, not a traceback."""
    done = faust(deployment, "consume", "no-such-topic", fails=True)
    assert "is not an Avro topic of this deployment" in done.stderr and "visit-summary" in done.stderr


def recipes() -> list[str]:
    """The sh blocks of the README's kcat section, in order."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION):]
    section = section[:section.index("\n### ")]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def run(recipe: str, settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One recipe in bash, with the test cluster's address instead of the local stack's."""
    script = (recipe.replace("127.0.0.1:9092", settings.cluster.bootstrap)
              .replace("http://127.0.0.1:8081/apis/ccompat/v7", settings.cluster.registry_url))
    env = os.environ | settings.to_env() | {"PATH": f"{FAUST.parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-o", "pipefail", "-ec", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)


def test_kcat_recipes_as_written(deployment: Settings) -> None:
    """write-visit writes the raws the recipe names; nextVisit and raws typed into kcat then give a result of the
    science pipelines (the default surveys file's) and a summary that the reading recipes show."""
    clone = Path(deployment.data_root).parent.parent
    write_visit, next_visit, raws, reading, kcat_avro = recipes()
    done = run(write_visit, deployment, clone)
    assert done.returncode == 0, done.stderr
    named = sorted(set(re.findall(r"/(\.local/repo/raw/367/0-)'\$snap'(\.fits)", raws)))
    assert named == [(".local/repo/raw/367/0-", ".fits")], "the raw arrivals name the files write-visit writes"
    assert done.stdout.split() == [str(clone / f".local/repo/raw/367/0-{snap}.fits") for snap in (0, 1)]
    for recipe in (next_visit, raws):
        done = run(recipe, deployment, clone)
        assert done.returncode == 0, done.stderr

    def read_back() -> str | None:
        done = run(reading, deployment, clone)
        return done.stdout if done.returncode == 0 and f"key LATISS/{RECIPE_GROUP}/0" in done.stdout \
            and f'"group_id": "{RECIPE_GROUP}", "survey": "BLOCK-365", "reason": "complete"' in done.stdout else None

    lines = until(read_back, "the LATISS visit's result and summary from the reading recipe").splitlines()
    [listed] = [line for line in lines if f"key LATISS/{RECIPE_GROUP}/0" in line]
    assert re.fullmatch(rf"{deployment.topic('ccd-result')} \[0\] @\d+ key LATISS/{RECIPE_GROUP}/0: \d+ bytes", listed)
    decoded = [json.loads(line) for line in lines if line.startswith("{")]
    [result] = [r for r in decoded if r["group_id"] == RECIPE_GROUP and "detector" in r]
    [summary] = [s for s in decoded if s["group_id"] == RECIPE_GROUP and "reason" in s]
    assert (result["instrument"], result["detector"], result["status"]) == ("LATISS", 0, "success"), result
    assert result["pipeline"] == "ap"
    assert result["exposure_ids"] == [2026112500367, 2026112500368]
    assert (summary["counts"]["success"], summary["reason"]) == (1, "complete")

    avro = run(kcat_avro, deployment, clone)
    if LACKS_AVRO in avro.stderr:  # Debian's kcat: the README says so
        assert avro.returncode != 0
    else:
        assert avro.returncode == 0, avro.stderr
        assert RECIPE_GROUP in avro.stdout


def test_consume_last_counts_records_not_transaction_markers(settings: Settings) -> None:
    """`consume --last 1` on a partition written in transactions prints its last record: each commit marker
    takes an offset, and the last offset is a marker, not a record."""
    spec = declare(settings).raw_image_available
    admin.ensure_topics(settings, [spec])
    codec = Codec(ConfluentRegistry(settings.registry_config()))
    producer = Producer(settings.kafka_config() | {"transactional.id": f"test-{uuid.uuid4().hex}"})
    producer.init_transactions()
    for snap in range(3):
        producer.begin_transaction()
        raw = RawImageAvailable(instrument="LATISS", group_id=GROUP, detector=0, snap=snap,
                                exposure_id=2026112500500 + snap, uri=f"file:///repo/{snap}.fits")
        producer.produce(spec.name, codec.encode(spec.name, raw), key=b"LATISS/0", partition=0)
        producer.commit_transaction()

    def snaps(last: int) -> list[int]:
        shown = faust(settings, "consume", spec.name, "--last", str(last)).stdout.splitlines()
        return [json.loads(line)["snap"] for line in shown if line.startswith("{")]

    assert snaps(1) == [2]
    assert snaps(2) == [1, 2]
    assert snaps(5) == [0, 1, 2]
