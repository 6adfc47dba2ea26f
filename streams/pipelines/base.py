"""The pipeline interface and its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from streams.errors import PromptStreamsError
from streams.serde.records import DetectorProgress


class PipelineUnavailable(PromptStreamsError):  # noqa: N818 (a signal to fall back, not a failure)
    """This pipeline cannot run for this visit (e.g. no template): try the next in the fallback list."""


@dataclass(frozen=True)
class Outcome:
    """What a pipeline run produced."""

    metrics: dict[str, float] = field(default_factory=dict)
    output_uris: list[str] = field(default_factory=list)
    log: str = ""
    """What an external pipeline printed (its end)."""


class Pipeline(Protocol):
    """A per-detector pipeline."""

    name: str

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Fetch what the run will need (calibrations, templates); return timings in seconds."""
        ...

    def run(self, progress: DetectorProgress) -> Outcome:
        """Process the held snaps.

        Raises:
            PipelineUnavailable: cannot run for this visit; the next pipeline is tried.
            RetriableError, NonRetriableError: failed, before or after outside state changed.
        """
        ...
