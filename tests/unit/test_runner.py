"""The pipeline runner with real pipeline processes: a process that dies, or runs past its time, costs only the CCD
it was running; the CCDs queued behind it on the same process go on in a new one."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from streams.config import Settings, SettingsError
from streams.pipelines.runner import PipelineRunner
from streams.serde.records import CcdResult, DetectorProgress

SURVEYS = f"""
[surveys]

[pipelines.die]
kind = "shell"
command = ["sh", "-c", "kill -KILL $PPID"]   # the pipeline process that started it

[pipelines.ok]
kind = "shell"
command = ["true"]

[pipelines.limits]
kind = "shell"
command = ["sh", "-c", "ulimit -v"]

[pipelines.hog]
kind = "shell"
command = ["{sys.executable}", "-c", "bytearray(4 << 30)"]
"""


def run_ccds(tmp_path: Path, ccds: dict[int, list[str]], **settings: Any) -> dict[int, CcdResult]:
    """Dispatch each detector, in order, with its pipelines to a runner of one process (so every CCD queues on
    the same one); each detector's result."""
    surveys = tmp_path / "surveys.toml"
    surveys.write_text(SURVEYS)
    config = Settings(surveys_file=str(surveys), data_root=str(tmp_path), output_root=str(tmp_path / "out"),
                      **settings)

    async def main() -> dict[int, CcdResult]:
        results: dict[int, CcdResult] = {}
        finished = asyncio.Event()

        async def on_done(result: CcdResult) -> None:
            results[result.detector] = result
            if len(results) == len(ccds):
                finished.set()

        runner = PipelineRunner(1, config, "test-worker", on_done)
        try:
            for detector, pipelines in ccds.items():
                runner.dispatch(DetectorProgress(instrument="LSSTCam", group_id="g", detector=detector,
                                                 pipelines=pipelines))
            await asyncio.wait_for(finished.wait(), 120)  # a guard: a hung runner fails here rather than hangs
        finally:
            runner.stop()
        return results

    return asyncio.run(main())


def test_a_killed_pipeline_process_fails_only_its_own_ccd(tmp_path: Path) -> None:
    """Detector 1's pipeline SIGKILLs its process while detectors 2 and 3 wait behind it on that process: 1 fails,
    not retriable, saying its process died; 2 and 3 run in a new process and succeed (a BrokenProcessPool used
    to fail all three)."""
    results = run_ccds(tmp_path, {1: ["die"], 2: ["ok"], 3: ["ok"]})
    died = results[1]
    assert (died.status, died.retriable, died.error_class) == ("failed", False, "PipelineProcessDiedError")
    assert "process died while running this CCD" in died.error_message
    assert [(results[d].status, results[d].pipeline) for d in (2, 3)] == [("success", "ok"), ("success", "ok")]


def test_a_built_in_pipeline_past_the_process_timeout_is_stopped(tmp_path: Path) -> None:
    """The stand-in would run for an hour: after PROCESS_TIMEOUT its process is killed and its CCD fails with
    that reason, and the CCD queued behind it runs."""
    results = run_ccds(tmp_path, {1: ["stand-in"], 2: ["ok"]}, process_timeout=1.0, standin_run_seconds=3600.0)
    stopped = results[1]
    assert (stopped.status, stopped.retriable, stopped.error_class) == ("failed", False, "PipelineTimeoutError")
    assert "still running after 1.0 s" in stopped.error_message
    assert results[2].status == "success"


def test_pipeline_processes_and_their_commands_have_the_memory_limit(tmp_path: Path) -> None:
    """With PIPELINE_MEMORY_LIMIT 1024 (MiB), a pipeline process and what it starts map at most 1 GiB: a command
    asking for 4 GiB fails its CCD alone, and the next CCD sees the limit."""
    results = run_ccds(tmp_path, {1: ["hog"], 2: ["limits"]}, pipeline_memory_limit=1024)
    hog, limits = results[1], results[2]
    assert (hog.status, hog.error_class) == ("failed", "NonRetriableError") and "MemoryError" in hog.error_message
    assert limits.status == "success" and limits.output_log.split() == [str(1024 * 1024)]


def test_a_negative_memory_limit_is_refused() -> None:
    """PIPELINE_MEMORY_LIMIT is MiB, or 0 for none: -1 stops the worker at start, naming the variable."""
    with pytest.raises(SettingsError, match="PROMPT_STREAMS_PIPELINE_MEMORY_LIMIT"):
        Settings.from_env({"PROMPT_STREAMS_PIPELINE_MEMORY_LIMIT": "-1"})
