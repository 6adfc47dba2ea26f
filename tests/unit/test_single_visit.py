"""`write-visit`: one simulated visit with chosen ids, its raws where a recipe names them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.clock import tai_now
from streams.data import repository
from streams.data.repository import UnsafePath
from streams.science import isr
from streams.science.geometry import CcdShape
from streams.simulate.single_visit import ChosenVisit, write_chosen_visit

LATISS = ChosenVisit("LATISS", "2026-11-25T03:14:15.926", (0,), (2026112500367, 2026112500368), 150.1, 2.2)
"""The README's kcat recipe's visit."""


def test_the_readme_visit_is_written_where_its_raw_arrivals_point(tmp_path: Path) -> None:
    """raw/367/0-{0,1}.fits: LATISS raws of detector 0 whose headers say the recipe's group and exposures, with
    their sidecars; the calibrations the pipelines look up for a visit now are there too."""
    written = write_chosen_visit(tmp_path, LATISS, CcdShape(128, 128), "raw/367/{detector}-{snap}.fits")
    assert written == [tmp_path / "raw" / "367" / f"0-{snap}.fits" for snap in (0, 1)]
    for snap, path in enumerate(written):
        raw = isr.read_raw(path)
        assert (raw.instrument, raw.detector, raw.header["GROUPID"]) == ("LATISS", 0, LATISS.group_id)
        assert raw.header["OBSID"] == f"AT_O_20261125_00036{7 + snap}"
        assert json.loads(path.with_suffix(".json").read_text())["GROUPID"] == LATISS.group_id
    for kind in repository.CALIB_TYPES:
        assert repository.find_calibration(tmp_path, "LATISS", kind, 0, "r_57", tai_now()).path.exists()


def test_without_a_path_the_raws_keep_the_cameras_naming(tmp_path: Path) -> None:
    """No path: raw/<instrument>/<day>/<obs id>/<obs id>_<detector name>.fits."""
    written = write_chosen_visit(tmp_path, LATISS, CcdShape(128, 128))
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        f"raw/LATISS/20261125/AT_O_20261125_00036{n}/AT_O_20261125_00036{n}_R00_S00.fits" for n in (7, 8)]


def test_a_path_outside_the_data_root_or_a_group_that_is_no_time_is_refused(tmp_path: Path) -> None:
    """`..` out of the data root, or a group id the raws' times cannot count from: nothing is written there."""
    with pytest.raises(UnsafePath):
        write_chosen_visit(tmp_path / "repo", LATISS, CcdShape(128, 128), "../{detector}-{snap}.fits")
    assert not list(tmp_path.glob("*.fits"))
    with pytest.raises(ValueError, match="isoformat"):
        write_chosen_visit(tmp_path / "other", ChosenVisit("LATISS", "not-a-time", (0,), (1,)), CcdShape(128, 128))
    assert not (tmp_path / "other").exists()
