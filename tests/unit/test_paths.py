"""Names from events and raw headers cannot put a pipeline's files outside their roots.

The finding: a flat sequence whose raws said FILTER="x/../../../../../../../tmp/pwned" made `calib-flat` write
its master to /tmp/pwned_<start>_<end>.fits. Filter names are now plain names, checked where they are read (a
typed failure naming the file and the value), and every path a pipeline writes is resolved and must stay under
its root.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from astropy.wcs import WCS

from streams.config import Settings
from streams.core.calibrations import calibration_name, plain_name
from streams.data import repository
from streams.pipelines import execute
from streams.science import amplifiers
from streams.science.geometry import CcdShape
from streams.serde.records import CcdResult, DetectorProgress, HeldSnap
from streams.simulate import night as simulated
from streams.simulate.camera import expose, make_detector, primary_header, raw_hdus

PAYLOAD = "x/../../../../../../../tmp/pwned"
GROUP = "2026-11-25T03:00:00.000"
WHEN = 1.796e9
"""The sequence's time (TAI seconds): the simulated calibrations are valid then."""


@pytest.fixture
def pipelines() -> Iterator[None]:
    """Pipelines built afresh for the test's settings, and not kept for the next test."""
    execute.pipeline.cache_clear()
    yield
    execute.pipeline.cache_clear()


def roots(tmp_path: Path) -> tuple[Path, Path]:
    """(data root, output root), two levels below tmp_path: the payload's seven `..` from a master's folder
    (<root>/calib/LSSTCam/flat/94/flat_x) land in tmp_path itself, so an escape would show there."""
    return tmp_path / "site" / "repo", tmp_path / "site" / "out"


def flat_sequence(root: Path, filter_name: str, exposures: int = 3) -> DetectorProgress:
    """A simulated LSSTCam detector 94 with its bias, dark, flat and ptc in the repository, and a flat sequence of
    camera raws whose headers say FILTER=`filter_name`: everything `calib-flat` needs to write a master."""
    night = simulated.plan_night(0, (94,), CcdShape(64, 128), start=datetime(2026, 11, 25, 3))
    simulated.write_calibrations(root, night, WHEN)
    electronics = make_detector(np.random.default_rng([night.seed, 94]), amplifiers.vendor("LSSTCam", 94),
                                night.shape, simulated.throughput(night, 94))
    rng = np.random.default_rng(7)
    sky = np.full((electronics.shape.height, electronics.shape.width), 20000.0, np.float32)
    snaps = []
    for index in range(exposures):
        exposure_id = 2026112500001 + index
        header = primary_header("LSSTCam", 94, exposure_id=exposure_id, group_id=GROUP, snap=index, snaps=exposures,
                                image_type="FLAT", start=datetime(2026, 11, 25, 3) + timedelta(seconds=5 * index),
                                exposure_time=1.0, boresight=(0.0, 0.0, 0.0), filter_name=filter_name,
                                controller="C")
        path = root / "raw" / f"{exposure_id}.fits"
        path.parent.mkdir(parents=True, exist_ok=True)
        raw_hdus(expose(rng, electronics, sky, 1.0), electronics, header).writeto(path)
        snaps.append(HeldSnap(snap=index, exposure_id=exposure_id, uri=path.as_uri(), arrival_time=1.0))
    return DetectorProgress(instrument="LSSTCam", group_id=GROUP, detector=94, survey="CALIB-FLAT", filters="",
                            pipelines=["calib-flat"], nimages=exposures, next_visit_time=WHEN, snaps=snaps)


def files_outside(tmp_path: Path, *inside: Path) -> list[Path]:
    """Every file or folder under tmp_path that is not under one of `inside` (nor one of their parents)."""
    return sorted(path for path in tmp_path.rglob("*")
                  if not any(path.is_relative_to(root) or root.is_relative_to(path) for root in inside))


def run(progress: DetectorProgress, data_root: Path, output_root: Path) -> CcdResult:
    """The pipeline run in-process, as a pipeline process runs it."""
    execute.init_process(Settings(data_root=str(data_root), output_root=str(output_root)))
    return execute.run(progress)


def test_a_flat_with_a_plain_filter_is_written_into_the_repository(tmp_path: Path, pipelines: None) -> None:
    """The control: the same sequence with FILTER r_57 makes a master under <root>/calib, so the refusal below
    is the filter's doing, not a missing input."""
    data_root, output_root = roots(tmp_path)
    result = run(flat_sequence(data_root, "r_57"), data_root, output_root)
    assert (result.status, result.pipeline) == ("success", "calib-flat"), result.error_message
    written = Path(result.output_uris[0].removeprefix("file://"))
    assert written.parent == data_root / "calib" / "LSSTCam" / "flat" / "94"
    assert written.name.startswith("flat_r_57_") and written.exists()
    assert files_outside(tmp_path, data_root, output_root) == []


def test_a_flat_whose_filter_climbs_out_fails_and_writes_nothing_outside(tmp_path: Path, pipelines: None) -> None:
    """The finding: FILTER="x/../../../../../../../tmp/pwned" fails the CCD, not retriable, the message naming the
    raw and the value; no file appears outside the repository (nor a `flat_x` folder inside it)."""
    data_root, output_root = roots(tmp_path)
    progress = flat_sequence(data_root, PAYLOAD)
    before = sorted(data_root.rglob("*"))
    result = run(progress, data_root, output_root)
    assert (result.status, result.retriable, result.error_class) == ("failed", False, "NonRetriableError")
    assert repr(PAYLOAD) in result.error_message and progress.snaps[0].uri in result.error_message
    assert files_outside(tmp_path, data_root, output_root) == []
    assert not [path for path in tmp_path.rglob("*") if "pwned" in path.name or path.name == "flat_x"]
    assert sorted(data_root.rglob("*")) == before, "nothing new in the repository either"


@pytest.mark.parametrize("pipeline", ["ap", "single-frame", "isr"])
def test_science_pipelines_refuse_the_raw_s_filter_too(tmp_path: Path, pipelines: None, pipeline: str) -> None:
    """The science pipelines look templates and flats up by the raw's FILTER: the same refusal, naming the file,
    and no output folder is made."""
    data_root, output_root = roots(tmp_path)
    progress = replace(flat_sequence(data_root, PAYLOAD, exposures=1), pipelines=[pipeline], filters="r_57")
    result = run(progress, data_root, output_root)
    assert (result.status, result.error_class) == ("failed", "NonRetriableError"), result.error_message
    assert repr(PAYLOAD) in result.error_message and progress.snaps[0].uri in result.error_message
    assert not output_root.exists() and files_outside(tmp_path, data_root) == []


def test_a_preload_with_a_bad_filter_looks_nothing_up(tmp_path: Path, pipelines: None) -> None:
    """A detector whose `filters` is not a plain name (not from a validated nextVisit) preloads nothing rather
    than reading an index.json wherever the name points."""
    data_root, output_root = roots(tmp_path)
    progress = replace(flat_sequence(data_root, "r_57", exposures=1), pipelines=["ap"], filters="../../../x")
    execute.init_process(Settings(data_root=str(data_root), output_root=str(output_root)))
    assert execute.preload(progress) == {}


@pytest.mark.parametrize("name", ["r_57", "any", "SDSSr_65mm", "g.2", "r" * 64])
def test_plain_filter_names(name: str) -> None:
    """What real filters are called passes."""
    assert plain_name(name)


@pytest.mark.parametrize("name", ["", PAYLOAD, "..", "a..b", "../x", "/tmp", "r/57", "-r", ".r", "r\n", "r 57",
                                  "r" * 65, "r\x00"])
def test_names_that_are_not_path_parts(name: str) -> None:
    """Separators, `..`, option-like or hidden names, whitespace, NUL and overlong names are refused, by the rule
    and by the naming of masters."""
    assert not plain_name(name)
    with pytest.raises(ValueError, match="filter"):
        calibration_name("flat", name, 0, 1)


def test_contained_follows_dots_and_links(tmp_path: Path) -> None:
    """A path is contained when it resolves under its root: `..` and symbolic links are followed."""
    root = tmp_path / "root"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    assert repository.contained(root, root / "inside" / "a.fits") == root / "inside" / "a.fits"
    assert repository.contained(root, root / "new" / ".." / "inside" / "b.fits") == root / "new" / ".." / "inside" \
        / "b.fits"
    for outside in (root / "inside" / ".." / ".." / "a.fits", root / "link" / "a.fits", Path("/tmp/pwned.fits")):
        with pytest.raises(repository.UnsafePath, match="outside"):
            repository.contained(root, outside)


def test_calibration_paths_refuse_bad_names_and_escapes(tmp_path: Path) -> None:
    """calibration_path refuses a filter that is not a plain name (naming it); write_calibration, given the root,
    refuses a path that resolves outside its calib folder, before making any folder."""
    root = tmp_path / "repo"
    with pytest.raises(repository.UnsafePath, match=r"filter 'x/\.\./"):
        repository.calibration_path(root, "LSSTCam", "flat", 94, PAYLOAD, 0, 1)
    with pytest.raises(repository.UnsafePath, match="instrument"):
        repository.calibration_path(root, "../LSSTCam", "flat", 94, "r_57", 0, 1)
    (root / "calib").mkdir(parents=True)
    (root / "calib" / "LSSTCam").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(repository.UnsafePath, match="outside"):
        repository.calibration_path(root, "LSSTCam", "flat", 94, "r_57", 0, 1)
    escape = root / "calib" / "Other" / "flat" / "94" / ".." / ".." / ".." / ".." / ".." / "flat_r_57_0_1.fits"
    with pytest.raises(repository.UnsafePath, match="outside"):
        repository.write_calibration(escape, np.zeros((2, 2)), "flat", 94, "r_57", 0, 1, root=root)
    with pytest.raises(repository.UnsafePath, match="filter"):
        repository.write_calibration(root / "calib" / "x.fits", np.zeros((2, 2)), "flat", 94, PAYLOAD, 0, 1)
    assert not escape.exists() and not (root / "calib" / "Other").exists()


def test_templates_refuse_bad_names_and_escapes(tmp_path: Path) -> None:
    """Template folders and tiles are plain names under <root>/templates: a filter or tile name that climbs out,
    or a filter folder that is a link elsewhere, is refused for writing and for looking up."""
    root = tmp_path / "repo"
    wcs = WCS(naxis=2)
    wcs.wcs.ctype, wcs.wcs.crval, wcs.wcs.cdelt = ["RA---TAN", "DEC--TAN"], [150.0, 2.0], [-5e-5, 5e-5]
    image = np.zeros((4, 4), np.float32)
    corners = np.array([149.9, 150.1]), np.array([1.9, 2.1])
    repository.write_template(root, "LSSTCam", "r_57", "tile", image, image, wcs, 1.5)
    assert repository.find_templates(root, "LSSTCam", "r_57", *corners) == [
        root / "templates" / "LSSTCam" / "r_57" / "tile.fits"]
    for filter_name, name in ((PAYLOAD, "tile"), ("../../..", "tile"), ("r_57", "../../../../pwned")):
        with pytest.raises(repository.UnsafePath, match="is not a plain name"):
            repository.write_template(root, "LSSTCam", filter_name, name, image, image, wcs, 1.5)
    with pytest.raises(repository.UnsafePath, match="is not a plain name"):
        repository.find_templates(root, "LSSTCam", "../../../etc", *corners)
    (tmp_path / "elsewhere").mkdir()
    (root / "templates" / "LSSTCam" / "g_6").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(repository.UnsafePath, match="outside"):
        repository.write_template(root, "LSSTCam", "g_6", "tile", image, image, wcs, 1.5)
    assert files_outside(tmp_path, root, tmp_path / "elsewhere") == []
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_output_folders_stay_under_the_output_root(tmp_path: Path) -> None:
    """Science.output_folder checks the folder resolves under the output root before making it: a group id that
    slipped past validation, or a link in the output tree, is refused."""
    from streams.pipelines.science import Science

    data_root, output_root = roots(tmp_path)
    science = Science(Settings(data_root=str(data_root), output_root=str(output_root)))
    progress = DetectorProgress(instrument="LSSTCam", group_id=GROUP, detector=94)
    assert science.output_folder(progress) == output_root / "LSSTCam" / GROUP / "94"
    with pytest.raises(repository.UnsafePath, match="outside"):
        science.output_folder(replace(progress, group_id="../../../../escaped"))
    (tmp_path / "elsewhere").mkdir()
    (output_root / "LSSTCam" / "linked").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(repository.UnsafePath, match="outside"):
        science.output_folder(replace(progress, group_id="linked"))
    assert not (tmp_path / "escaped").exists() and list((tmp_path / "elsewhere").iterdir()) == []
