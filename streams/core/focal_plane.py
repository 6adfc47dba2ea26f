"""Detector names and ids of the cameras (`R<raft>_S<sensor>`, as in raw file names).

LSSTCam: 21 science rafts of 3 x 3 CCDs, id = 9 x (raft index) + 3 x sensor row + sensor column.
LSSTComCam: the single raft R22 (ids 0-8). LATISS: one CCD, R00_S00 (id 0).
"""

from __future__ import annotations

import re

from streams.errors import InvalidEventError

LSSTCAM_RAFTS = ("R01", "R02", "R03", "R10", "R11", "R12", "R13", "R14", "R20", "R21", "R22",
                 "R23", "R24", "R30", "R31", "R32", "R33", "R34", "R41", "R42", "R43")
NAME = re.compile(r"^(R[0-4][0-4])_S([0-2])([0-2])$")


def detector_id(instrument: str, name: str) -> int:
    """The detector id of `name` (e.g. R22_S11) on `instrument`.

    Raises:
        InvalidEventError: a malformed name, or one the instrument does not have.
    """
    match = NAME.match(name)
    if match is None:
        raise InvalidEventError(f"{name!r} is not a detector name like R22_S11")
    raft, row, column = match.group(1), int(match.group(2)), int(match.group(3))
    sensor = 3 * row + column
    if instrument == "LSSTCam" and raft in LSSTCAM_RAFTS:
        return 9 * LSSTCAM_RAFTS.index(raft) + sensor
    if instrument == "LSSTComCam" and raft == "R22":
        return sensor
    if instrument == "LATISS" and name == "R00_S00":
        return 0
    raise InvalidEventError(f"{instrument} has no detector {name}")


def detector_name(instrument: str, detector: int) -> str:
    """The name of detector `detector` on `instrument` (the inverse of `detector_id`)."""
    if instrument == "LATISS":
        return "R00_S00"
    raft = "R22" if instrument == "LSSTComCam" else LSSTCAM_RAFTS[detector // 9]
    sensor = detector % 9
    return f"{raft}_S{sensor // 3}{sensor % 3}"


RAFT_PITCH_MM = 127.0
CCD_PITCH_MM = 42.25


def detector_centre(instrument: str, detector: int) -> tuple[float, float]:
    """Where a detector's centre lies in the focal plane [mm], R22_S11 at the origin (x, y)."""
    name = detector_name(instrument, detector)
    ry, rx, sy, sx = int(name[1]), int(name[2]), int(name[5]), int(name[6])
    return (RAFT_PITCH_MM * (rx - 2) + CCD_PITCH_MM * (sx - 1), RAFT_PITCH_MM * (ry - 2) + CCD_PITCH_MM * (sy - 1))
