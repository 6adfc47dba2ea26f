"""Events that create OCPS jobs by themselves, e.g. the end of a calibration sequence.

A trigger watches visit summaries: when a visit of a matching survey ends (for the configured
reasons), it creates a job running its pipeline over that visit's exposures and the detectors that
did not fail, started at once. Its job id is derived from the trigger and the visit, so a summary
seen twice (after a restart) creates one job.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase

from streams.core.instruments import Instrument
from streams.core.job import job_of_group, triggered_job_id
from streams.errors import ConfigurationError
from streams.serde.records import OcpsJobEvent, VisitSummary

REASONS = ("complete", "deadline", "canceled")


class TriggerConfigError(ConfigurationError):
    """The trigger configuration cannot be used."""


@dataclass(frozen=True)
class Trigger:
    """Run `pipeline` over the exposures of each visit whose survey matches `survey`."""

    name: str
    survey: str
    """A shell-style pattern, e.g. CALIB-SEQ-BIAS*."""
    pipeline: str
    reasons: tuple[str, ...] = ("complete",)
    """Summary reasons that fire it (complete: every detector reported)."""


def parse_triggers(text: str, pipelines: Collection[str]) -> tuple[Trigger, ...]:
    """Triggers from TOML: `[[triggers]]` tables with name, survey, pipeline and optional reasons.

    Raises:
        TriggerConfigError: unreadable TOML, a missing key, an unknown pipeline or reason, a repeated name.
    """
    try:
        tables = tomllib.loads(text).get("triggers", [])
        triggers = tuple(Trigger(str(t["name"]), str(t["survey"]), str(t["pipeline"]),
                                 tuple(str(r) for r in t.get("reasons", ["complete"]))) for t in tables)
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as error:
        raise TriggerConfigError(f"bad trigger configuration: {error!r}") from error
    for trigger in triggers:
        if trigger.pipeline not in pipelines:
            raise TriggerConfigError(f"trigger {trigger.name!r}: unknown pipeline {trigger.pipeline!r}")
        if stray := set(trigger.reasons) - set(REASONS):
            raise TriggerConfigError(f"trigger {trigger.name!r}: unknown reasons {sorted(stray)}; use {REASONS}")
    if len({t.name for t in triggers}) != len(triggers):
        raise TriggerConfigError("trigger names must be unique")
    return triggers


def triggered(triggers: Collection[Trigger], summary: VisitSummary, instruments: Mapping[str, Instrument],
              now: float) -> list[OcpsJobEvent]:
    """The jobs a visit's summary creates (a job's own visit creates none)."""
    instrument = instruments.get(summary.instrument)
    if job_of_group(summary.group_id) or instrument is None or not summary.exposure_ids:
        return []
    detectors = [d for d in instrument.active if d not in set(summary.failed_detectors)]
    return [
        OcpsJobEvent(
            action="create", job_id=triggered_job_id(t.name, summary.instrument, summary.group_id), event_time=now,
            pipeline=t.pipeline, instrument=summary.instrument, detectors=detectors,
            exposures=list(summary.exposure_ids), owner=f"trigger:{t.name}", start=True,
            run_id=f"{t.name} {summary.group_id}", reference_time=summary.next_visit_time,
            parameters={"pipeline": t.pipeline, "instrument": summary.instrument,
                        "exposure": ",".join(map(str, summary.exposure_ids)),
                        "detector": ",".join(map(str, detectors))},
        )
        for t in triggers if fnmatchcase(summary.survey, t.survey) and summary.reason in t.reasons
    ]
