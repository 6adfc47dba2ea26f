"""Instrument and survey configuration."""

from __future__ import annotations

import pytest

from stack.cluster import PROJECT_ROOT
from streams.core.instruments import InstrumentConfigError, parse_detectors, parse_instruments
from streams.core.surveys import SurveyConfigError, parse_surveys


def test_shipped_instruments() -> None:
    """LSSTCam 0-188, LSSTComCam 0-8, LATISS 0."""
    instruments = parse_instruments((PROJECT_ROOT / "streams" / "instruments.toml").read_text())
    assert instruments["LSSTCam"].active == tuple(range(189))
    assert instruments["LSSTComCam"].active == tuple(range(9))
    assert instruments["LATISS"].active == (0,)


def test_disabled_detectors_are_not_active() -> None:
    """The configurable disabled list removes detectors from the fan-out."""
    cam = parse_instruments('[LSSTCam]\ndetectors = "0-188"\ndisabled = [0, 20, 27]\n')["LSSTCam"]
    assert len(cam.active) == 186 and 20 not in cam.active


@pytest.mark.parametrize("text", ['[X]\ndetectors = "0-3"\ndisabled = [7]\n', "[X]\n", "not toml ["])
def test_bad_instrument_files_are_refused(text: str) -> None:
    """Unknown disabled ids, missing detectors or broken TOML stop start-up with a reason."""
    with pytest.raises(InstrumentConfigError):
        parse_instruments(text)


def test_ranges() -> None:
    """Ranges and lists of detector ids."""
    assert parse_detectors("0-2, 5") == {0, 1, 2, 5} and parse_detectors(3) == {3}


def test_first_matching_survey_pattern_wins() -> None:
    """Patterns are tried in order; no match means no pipeline (ignored)."""
    table = parse_surveys('[surveys]\n"BLOCK-T454" = []\n"BLOCK-*" = ["ap", "isr"]\n')
    assert table.pipelines_for("BLOCK-365") == ("ap", "isr")
    assert table.pipelines_for("BLOCK-T454") == ()
    assert table.pipelines_for("CALIB") == ()
    with pytest.raises(SurveyConfigError):
        parse_surveys('[surveys]\n"X" = "ap"\n')
