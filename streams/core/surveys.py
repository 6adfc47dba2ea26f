"""Which pipelines run for a survey: an ordered fallback list, first matching pattern wins."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from fnmatch import fnmatchcase

from streams.errors import ConfigurationError


class SurveyConfigError(ConfigurationError):
    """The survey-to-pipeline configuration cannot be used."""


@dataclass(frozen=True)
class SurveyTable:
    """Patterns (shell-style, e.g. `BLOCK-*`) to pipeline lists, in the order they were written."""

    rules: tuple[tuple[str, tuple[str, ...]], ...]

    def pipelines_for(self, survey: str) -> tuple[str, ...]:
        """The fallback list for `survey`; empty (the visit is ignored) when nothing matches."""
        for pattern, pipelines in self.rules:
            if fnmatchcase(survey, pattern):
                return pipelines
        return ()


def parse_surveys(text: str) -> SurveyTable:
    """A survey table from TOML: `[surveys]` with `"pattern" = ["pipeline", ...]` entries.

    Raises:
        SurveyConfigError: unreadable TOML or a value that is not a list of names.
    """
    try:
        surveys = tomllib.loads(text)["surveys"]
        rules = tuple((str(pattern), tuple(str(p) for p in pipelines)) for pattern, pipelines in surveys.items()
                      if isinstance(pipelines, list))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as error:
        raise SurveyConfigError(f"bad survey configuration: {error!r}") from error
    if len(rules) != len(surveys):
        raise SurveyConfigError("every survey pattern must map to a list of pipeline names")
    return SurveyTable(rules)
