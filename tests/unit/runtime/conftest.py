"""Fixtures of the driver tests: settings without a broker, the app's instrument and survey configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import Settings
from streams.core.instruments import Instrument, parse_instruments
from streams.core.surveys import SurveyTable, parse_surveys
from tests.unit.runtime.visits import driver_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings of one test, its tables in its own folder."""
    return driver_settings(tmp_path / "data")


@pytest.fixture
def instruments(settings: Settings) -> dict[str, Instrument]:
    """The instruments the app loads (`streams.runtime.context.Context.build`)."""
    return parse_instruments(Path(settings.instruments_file).read_text())


@pytest.fixture
def surveys(settings: Settings) -> SurveyTable:
    """The survey table the app loads."""
    return parse_surveys(Path(settings.surveys_file).read_text())
