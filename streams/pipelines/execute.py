"""What runs inside a pipeline process: build the pipelines once, then preload and run on demand.

Pipelines are built once per process (their configuration and any compiled plans are prepared
once, not per visit); failures become a `failed` CcdResult with the error's class and message.
"""

from __future__ import annotations

import ctypes
import importlib
import resource
import signal
import time
import traceback
from collections.abc import Callable
from functools import cache
from pathlib import Path

from streams.clock import tai_now
from streams.config import Settings
from streams.core.surveys import parse_surveys
from streams.errors import NonRetriableError, RetriableError
from streams.pipelines.base import Pipeline, PipelineUnavailable
from streams.pipelines.shell import ShellPipeline, parse_shell_pipelines
from streams.secrets import scrub
from streams.serde.records import CcdResult, DetectorProgress

PR_SET_PDEATHSIG = 1
_settings = Settings()


def init_process(settings: Settings) -> None:
    """Executor initializer: remember the settings, die with the worker (no orphans), and map at most
    `pipeline_memory_limit` MiB, soft and hard limit alike (a pipeline cannot raise it again), so a CCD that
    needs more fails (MemoryError, or the process dies) instead of taking the host's memory."""
    global _settings
    _settings = settings
    ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if settings.pipeline_memory_limit:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]  # a lower one already set stays: it cannot be raised
        limit = settings.pipeline_memory_limit << 20 if hard == resource.RLIM_INFINITY \
            else min(settings.pipeline_memory_limit << 20, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _built_in(module: str, attribute: str, *args: str) -> Callable[[Settings], Pipeline]:
    """A pipeline builder that imports its module when called: the science stack takes seconds to load,
    and only the pipeline processes need it, not the worker, its commands or its tools."""
    def build(settings: Settings) -> Pipeline:
        built: Pipeline = getattr(importlib.import_module(f"streams.pipelines.{module}"), attribute)(*args, settings)
        return built
    return build


PIPELINES: dict[str, Callable[[Settings], Pipeline]] = {
    "ap": _built_in("science", "AlertProduction"),
    "single-frame": _built_in("science", "SingleFrame"),
    "isr": _built_in("science", "IsrOnly"),
    "stand-in": _built_in("standin", "StandIn"),
    **{f"calib-{kind}": _built_in("calibration", "CalibrationPipeline", kind) for kind in ("bias", "dark", "flat")},
}
"""Every pipeline a survey can name, by name."""


def known_pipelines(settings: Settings) -> list[str]:
    """Every pipeline name a survey or a job may use: the built-in ones and the surveys file's shell pipelines."""
    return sorted([*PIPELINES, *parse_shell_pipelines(Path(settings.surveys_file).read_text())])


@cache
def pipeline(name: str) -> Pipeline:
    """The pipeline of that name, built once per process: built-in, or a shell pipeline configured
    in the surveys file."""
    if name in PIPELINES:
        return PIPELINES[name](_settings)
    shells = parse_shell_pipelines(Path(_settings.surveys_file).read_text())
    if name not in shells:
        raise PipelineUnavailable(f"no pipeline named {name!r} (known: {', '.join(known_pipelines(_settings))})")
    return ShellPipeline(shells[name], _settings)


def preload(progress: DetectorProgress) -> dict[str, float]:
    """Preload for the first pipeline that knows how; an error only costs the preload."""
    for name in progress.pipelines:
        try:
            return pipeline(name).preload(progress)
        except PipelineUnavailable:
            continue
    return {}


def run(progress: DetectorProgress) -> CcdResult:
    """Run the first pipeline of the fallback list that can run; the outcome as a CcdResult."""
    base = CcdResult(instrument=progress.instrument, group_id=progress.group_id, detector=progress.detector,
                     status="failed", exposure_ids=[s.exposure_id for s in progress.snaps],
                     snaps_processed=len(progress.snaps), process_start_time=tai_now())
    reasons = []
    for name in progress.pipelines:
        started = tai_now()
        try:
            outcome = pipeline(name).run(progress)
        except PipelineUnavailable as why:
            reasons.append(f"{name}: {why}")
            continue
        except (RetriableError, NonRetriableError) as error:
            return _failed(base, name, started, error, retriable=isinstance(error, RetriableError))
        except Exception as error:  # a bug in a pipeline: the CCD fails, the worker goes on
            return _failed(base, name, started, error, retriable=False,
                           detail="".join(traceback.format_exception_only(error)).strip())
        return CcdResult.from_dict(base.to_dict() | {
            "status": "success", "pipeline": name, "process_start_time": started, "process_end_time": tai_now(),
            "metrics": outcome.metrics, "output_uris": outcome.output_uris, "output_log": outcome.log,
        })
    return CcdResult.from_dict(base.to_dict() | {
        "error_class": "NoPipelineCouldRun", "process_end_time": tai_now(),
        "error_message": "; ".join(reasons) or "no pipeline configured",
    })


def _failed(base: CcdResult, name: str, started: float, error: BaseException, *, retriable: bool,
            detail: str = "") -> CcdResult:
    """The failed result; the message goes to ccd-result, the SAL bridge and the jobs' error endpoint, so the
    configured secrets are masked in it (before it is cut, so no part of one survives)."""
    return CcdResult.from_dict(base.to_dict() | {
        "pipeline": name, "process_start_time": started, "process_end_time": tai_now(), "retriable": retriable,
        "error_class": type(error).__name__, "error_message": scrub(detail or str(error), _settings.secrets())[:2000],
    })


def warm_up() -> float:
    """Build every pipeline the surveys name now, so the first visit does not wait for its imports."""
    for name in {name for _pattern, names in parse_surveys(Path(_settings.surveys_file).read_text()).rules
                 for name in names}:
        try:
            pipeline(name)
        except PipelineUnavailable:
            continue  # the worker's survey check reports unknown names
    return time.perf_counter()
