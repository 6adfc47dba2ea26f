"""The operators' app commands, run as a person runs them: `faust -A streams.app <command>` in a shell."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from stack.cluster import ClusterState
from stack.workers import WorkerPool
from streams.config import Settings
from streams.driver import Visits
from tests.integration.command_line import faust, faust_until
from tests.integration.settings import isolated_settings

GROUP = "2026-11-25T04:00:00.000"


@pytest.fixture(scope="module")
def deployment(cluster: ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One worker of a deployment of its own."""
    root = tmp_path_factory.mktemp("commands")
    settings = isolated_settings(cluster, root)
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
                 "--survey", "BLOCK-365", "--nimages", "1", "--duration", "30")
    assert json.loads(sent.stdout.strip().splitlines()[-1])["groupId"] == GROUP

    uri = f"file://{deployment.data_root}/raw/{GROUP}/{{detector}}.fits"
    faust(deployment, "send-raw", "--group", GROUP, "--instrument", "LSSTComCam", "--detectors", "0-3",
          "--exposure-id", "2026112500400", "--uri", uri)
    shown = status_when(deployment, "success 4")
    assert f"visit LSSTComCam/{GROUP}: in flight: 4/9 results" in shown
    assert "  success: 0 1 2 3" in shown and "  waiting: 4 5 6 7 8" in shown
    [row] = [line for line in faust(deployment, "visits-in-flight").stdout.splitlines() if GROUP in line]
    assert row.split()[:4] == ["LSSTComCam", GROUP, "BLOCK-365", "4/9"]

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
