"""The README's kcat recipes, run as written in bash against the test cluster, with a real worker.

The recipes use the default topic names and the local stack's address; the test runs a deployment
with the default names on its own cluster (no other test uses them), replaces only the address,
and runs each block from a directory whose `.local/repo` is the worker's data root (as in a clone).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from dataclasses import replace
from pathlib import Path

from stack.cluster import ClusterState
from stack.workers import FAUST, WorkerPool
from streams.config import PROJECT_ROOT, Settings
from tests.integration.command_line import until
from tests.integration.settings import isolated_settings

SECTION = "## Events from the command line: kcat and the app commands"
GROUP = "2026-11-25T03:14:15.926"
LACKS_AVRO = "This build of kcat lacks Avro/Schema-Registry support"


def recipes() -> list[str]:
    """The sh blocks of the README's kcat section, in order."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION):]
    section = section[:section.index("\n### ")]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)


def run(recipe: str, settings: Settings, cwd: Path) -> subprocess.CompletedProcess[str]:
    """One recipe in bash, with the test cluster's address instead of the local stack's."""
    script = (recipe.replace("127.0.0.1:9092", settings.bootstrap)
              .replace("http://127.0.0.1:8081/apis/ccompat/v7", settings.registry_url))
    env = os.environ | settings.to_env() | {"PATH": f"{FAUST.parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-o", "pipefail", "-ec", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=180, check=False, stdin=subprocess.DEVNULL)


def test_kcat_recipes_as_written(cluster: ClusterState, tmp_path: Path) -> None:
    """nextVisit and raws typed into kcat give a result and a summary that the reading recipes show."""
    defaults = Settings.from_env({})
    settings = replace(isolated_settings(cluster, tmp_path), app_id=f"readme-{uuid.uuid4().hex[:8]}",
                       topic_prefix=defaults.topic_prefix, next_visit_topic=defaults.next_visit_topic,
                       next_visit_canceled_topic=defaults.next_visit_canceled_topic,
                       data_root=str(tmp_path / ".local" / "repo"))
    workers = WorkerPool(settings, tmp_path / "logs")
    workers.start()
    try:
        next_visit, raws, reading, kcat_avro = recipes()
        for recipe in (next_visit, raws):
            done = run(recipe, settings, tmp_path)
            assert done.returncode == 0, done.stderr

        def read_back() -> str | None:
            done = run(reading, settings, tmp_path)
            complete = f"key LATISS/{GROUP}/0" in done.stdout and '"reason": "complete"' in done.stdout
            return done.stdout if done.returncode == 0 and complete else None

        shown = until(read_back, "the LATISS visit's summary from the reading recipe", timeout=180)
    finally:
        workers.stop_all()
    lines = shown.splitlines()
    assert f"{settings.topic('ccd-result')} [0] @0 key LATISS/{GROUP}/0: " in lines[0]
    decoded = [json.loads(line) for line in lines[1:]]
    result, summary = decoded
    assert (result["group_id"], result["detector"], result["status"]) == (GROUP, 0, "success")
    assert result["exposure_ids"] == [2026112500367, 2026112500368]
    assert (summary["group_id"], summary["counts"]["success"], summary["reason"]) == (GROUP, 1, "complete")

    avro = run(kcat_avro, settings, tmp_path)
    if LACKS_AVRO in avro.stderr:  # Debian's kcat: the README says so
        assert avro.returncode != 0
    else:
        assert avro.returncode == 0, avro.stderr
        assert json.loads(avro.stdout.splitlines()[0])["group_id"] == GROUP
