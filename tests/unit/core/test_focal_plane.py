"""Detector names and ids."""

from __future__ import annotations

import pytest

from streams.core.focal_plane import detector_id, detector_name
from streams.errors import InvalidEventError


@pytest.mark.parametrize(("name", "expected"), [("R01_S00", 0), ("R01_S10", 3), ("R02_S00", 9),
                                                ("R22_S11", 94), ("R43_S22", 188)])
def test_lsstcam_ids_follow_the_reference(name: str, expected: int) -> None:
    """The examples of the focal-plane reference."""
    assert detector_id("LSSTCam", name) == expected


def test_names_and_ids_are_inverse_for_every_detector() -> None:
    """189 LSSTCam, 9 ComCam and 1 LATISS detectors round-trip."""
    for instrument, count in (("LSSTCam", 189), ("LSSTComCam", 9), ("LATISS", 1)):
        assert [detector_id(instrument, detector_name(instrument, d)) for d in range(count)] == list(range(count))


@pytest.mark.parametrize(("instrument", "name"), [("LSSTCam", "R00_S00"), ("LSSTComCam", "R21_S00"),
                                                  ("LATISS", "R22_S11"), ("LSSTCam", "R22-S11")])
def test_names_a_camera_lacks_are_invalid(instrument: str, name: str) -> None:
    """Corner rafts, other rafts and malformed names are refused."""
    with pytest.raises(InvalidEventError):
        detector_id(instrument, name)
