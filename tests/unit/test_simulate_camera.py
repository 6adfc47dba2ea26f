"""The simulator writes what LSSTCam writes: the camera's keywords and segment layout, DM's frame behind DETSEC, the
nominal boresight in the header with the sky seen through a pointing error, and a reference catalogue of its sky.

The layout is checked from the HDUs themselves (DETSEC, DTV/DTM, the reference's tables), not through the ISR.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.wcs import WCS

from streams.core.focal_plane import detector_name
from streams.data import refcat
from streams.science.amplifiers import SEGMENTS, vendor
from streams.science.geometry import CcdShape
from streams.simulate import night as simulated
from streams.simulate.camera import Detector, expose, make_detector, primary_header, raw_hdus

SMALL = CcdShape(256, 256)
NIGHT = CcdShape(512, 512)
"""The written nights' CCDs: enough bright stars to measure."""
PRIMARY_KEYS = {"INSTRUME", "TELESCOP", "CAMCODE", "CONTRLLR", "DAYOBS", "SEQNUM", "OBSID", "GROUPID", "CURINDEX",
                "MAXINDEX", "IMGTYPE", "DATE-OBS", "MJD-OBS", "TIMESYS", "EXPTIME", "DARKTIME", "RA", "DEC", "ROTPA",
                "ROTCOORD", "RADESYS", "RAFTBAY", "CCDSLOT", "CCD_MANU", "CCD_TYPE", "FILTBAND", "FILTER", "BUNIT",
                "FILENAME"}
SEGMENT_KEYS = {"CHANNEL", "EXTNAME", "CCDSUM", "DATASEC", "DETSEC", "DETSIZE", "DTV1", "DTV2", "DTM1_1", "DTM2_2",
                "DTM1_2", "DTM2_1"}
STRUCTURE = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "CHECKSUM",
             "DATASUM", "BSCALE", "BZERO"}
FORBIDDEN = {"BIASSEC", "GAIN", "RDNOISE", "DETECTOR", "DETNAME", "CTYPE1", "CTYPE2", "CRVAL1", "CRPIX1", "CD1_1",
             "LTV1", "LTM1_1"}
SECTION = re.compile(r"\[(\d+):(\d+),(\d+):(\d+)\]")
START = datetime(2026, 11, 25, 3, tzinfo=UTC)


def section(text: str) -> tuple[int, int, int, int]:
    """x1, x2, y1, y2 of a FITS section as written (reversed ranges kept)."""
    match = SECTION.fullmatch(text)
    assert match is not None, text
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    return x1, x2, y1, y2


DETECTORS = {"ITL": 29, "E2V": 94}
"""R10_S02 and R22_S11, as the reference's real ITL and E2V files."""
_WRITTEN: dict[tuple[str, CcdShape | None, bool], tuple[Path, Detector, list[tuple[int, int]]]] = {}


def markers_of(shape: CcdShape) -> list[tuple[int, int]]:
    """(x, y) in DM's frame of the bright marker pixels: each corner of the CCD and a few inside."""
    height, width = shape.height, shape.width
    return [(0, 0), (width - 1, 0), (0, height - 1), (width - 1, height - 1), (7, 5), (width // 2 + 3, 2),
            (width // 3, height // 2 + 1), (width // 2 - 2, height // 2 - 1)]


@pytest.fixture(scope="module")
def raw_of(tmp_path_factory: pytest.TempPathFactory
           ) -> Callable[..., tuple[Path, Detector, list[tuple[int, int]]]]:
    """One snap per vendor, size and compression written once for the module (full-size raws take seconds): a flat
    sky of 100 e- with 150000 e- markers; the path, the detector's truth and the markers."""
    folder = tmp_path_factory.mktemp("raws")

    def written(vendor_name: str, shape: CcdShape | None, compress: bool = True
                ) -> tuple[Path, Detector, list[tuple[int, int]]]:
        if (vendor_name, shape, compress) not in _WRITTEN:
            detector = DETECTORS[vendor_name]
            rng = np.random.default_rng(detector)
            truth = make_detector(rng, vendor_name, shape)
            electrons = np.full((truth.shape.height, truth.shape.width), 100.0, np.float32)
            markers = markers_of(truth.shape)
            for x, y in markers:
                electrons[y, x] = 150_000.0
            header = primary_header("LSSTCam", detector, exposure_id=2026112500042,
                                    group_id="2026-11-25T03:00:00.000", snap=0, snaps=2, image_type="SCIENCE",
                                    start=START, exposure_time=15.0, boresight=(150.0, -20.0, 30.0),
                                    filter_name="r_57")
            path = folder / f"raw_{vendor_name}_{'full' if shape is None else 'small'}_{compress}.fits"
            raw_hdus(expose(rng, truth, electrons, 15.0), truth, header, compress).writeto(path)
            _WRITTEN[vendor_name, shape, compress] = path, truth, markers
        return _WRITTEN[vendor_name, shape, compress]

    return written


def dm_pixel_to_raw(header: fits.Header, dm_x: int, dm_y: int) -> tuple[int, int] | None:
    """The raw (row, column), 0-based, where the camera put DM's pixel (dm_x, dm_y), 0-based, by the reference's
    rules: DETSEC y = NY + 1 - DM y (1-based), det = DTV + DTM * raw; None if the segment does not hold it."""
    nx, ny = section(header["DETSIZE"])[1], section(header["DETSIZE"])[3]
    det_x, det_y = dm_x + 1, ny + 1 - (dm_y + 1)
    assert 1 <= det_x <= nx
    raw_x = (det_x - header["DTV1"]) / header["DTM1_1"]
    raw_y = (det_y - header["DTV2"]) / header["DTM2_2"]
    x1, x2, y1, y2 = section(header["DATASEC"])
    if x1 <= raw_x <= x2 and y1 <= raw_y <= y2:
        return int(raw_y) - 1, int(raw_x) - 1
    return None


SIZES = [("ITL", SMALL), ("E2V", SMALL), ("ITL", None), ("E2V", None)]
RawOf = Callable[..., tuple[Path, Detector, list[tuple[int, int]]]]


@pytest.mark.parametrize(("vendor_name", "shape"), SIZES)
def test_a_raw_has_exactly_the_cameras_keywords_and_segments(raw_of: RawOf, vendor_name: str,
                                                             shape: CcdShape | None) -> None:
    """The primary has the camera's keys and no WCS, detector keyword or pixels; then 16 RICE-compressed segments
    in the camera's order with CHANNEL 1..16 and only the camera's keys; then REB_COND and CONFIG_COND."""
    path, truth, _ = raw_of(vendor_name, shape)
    detector = DETECTORS[vendor_name]
    assert vendor("LSSTCam", detector) == vendor_name
    with fits.open(path) as hdus:
        primary = hdus[0].header
        assert hdus[0].data is None and primary["NAXIS"] == 0
        assert set(primary) - STRUCTURE == PRIMARY_KEYS
        assert not FORBIDDEN & set(primary)
        assert primary["INSTRUME"] == "lsstCam" and primary["TELESCOP"] == "Simonyi Survey Telescope"
        assert (primary["CAMCODE"], primary["CONTRLLR"], primary["TIMESYS"], primary["BUNIT"]) == ("MC", "O", "TAI",
                                                                                                  "adu")
        name = detector_name("LSSTCam", detector)
        assert (primary["RAFTBAY"], primary["CCDSLOT"]) == (name[:3], name[4:])
        assert primary["CCD_MANU"] == vendor_name
        assert primary["CCD_TYPE"] == {"ITL": "3800C", "E2V": "CCD250"}[vendor_name]
        assert (primary["FILTBAND"], primary["FILTER"], primary["OBSID"]) == ("r", "r_57", "MC_O_20261125_000042")
        assert (primary["DAYOBS"], primary["SEQNUM"]) == ("20261125", 42)
        assert primary["FILENAME"] == f"MC_O_20261125_000042_{name}.fits"
        assert (primary["RA"], primary["DEC"], primary["ROTPA"]) == (150.0, -20.0, 30.0)
        assert [hdu.name for hdu in hdus[1:]] == [*SEGMENTS, "REB_COND", "CONFIG_COND"]
        assert [hdu.header["EXTNAME"] for hdu in hdus[1:17]] == list(SEGMENTS)
        for channel, hdu in enumerate(hdus[1:17], start=1):
            assert isinstance(hdu, fits.CompImageHDU)
            assert set(hdu.header) - STRUCTURE == SEGMENT_KEYS, hdu.name
            assert hdu.header["CHANNEL"] == channel and hdu.header["CCDSUM"] == "1 1"
            assert hdu.data.dtype.kind == "i" and hdu.data.shape == (truth.layout.naxis2, truth.layout.naxis1)
            assert hdu.header["DETSIZE"] == f"[1:{truth.shape.width},1:{truth.shape.height}]"
        assert all(isinstance(hdu, fits.BinTableHDU) and hdu.header["NAXIS2"] == 0 for hdu in hdus[17:])
    with fits.open(path, disable_image_compression=True) as stored:
        tiles = {(hdu.header["ZCMPTYPE"], hdu.header["ZBITPIX"], hdu.header["ZTILE1"], hdu.header["ZTILE2"])
                 for hdu in stored[1:17]}
    assert tiles == {("RICE_1", 32, truth.layout.naxis1, 1)}


@pytest.mark.parametrize("vendor_name", ["ITL", "E2V"])
def test_full_size_segments_are_the_references(raw_of: RawOf, vendor_name: str) -> None:
    """NAXIS 576 x 2048, DATASEC, DETSIZE, DETSEC and DTV/DTM as the reference's table gives them, e.g. ITL Segment13
    [2036:1528,1:2000] and E2V Segment00 [1:512,4004:2003]."""
    path, _, _ = raw_of(vendor_name, None)
    with fits.open(path) as hdus:
        segments = {hdu.header["EXTNAME"]: hdu.header for hdu in hdus[1:17]}
    for header in segments.values():
        assert (header["NAXIS1"], header["NAXIS2"]) == (576, 2048)
    if vendor_name == "ITL":
        assert segments["Segment13"]["DETSEC"] == "[2036:1528,1:2000]"
        assert segments["Segment10"]["DETSEC"] == "[509:1,1:2000]" and segments["Segment10"]["DTV1"] == 513
        for k in range(8):
            upper, lower = segments[f"Segment1{k}"], segments[f"Segment0{k}"]
            assert upper["DATASEC"] == lower["DATASEC"] == "[4:512,1:2000]"
            assert upper["DETSIZE"] == "[1:4072,1:4000]"
            assert upper["DETSEC"] == f"[{509 * (k + 1)}:{509 * k + 1},1:2000]"
            assert lower["DETSEC"] == f"[{509 * (k + 1)}:{509 * k + 1},4000:2001]"
            dtvs = [(h["DTV1"], h["DTV2"], h["DTM1_1"], h["DTM2_2"]) for h in (upper, lower)]
            assert dtvs == [(509 * (k + 1) + 4, 0, -1, 1), (509 * (k + 1) + 4, 4001, -1, -1)]
    else:
        assert segments["Segment00"]["DETSEC"] == "[1:512,4004:2003]"
        for k in range(8):
            upper, lower = segments[f"Segment1{k}"], segments[f"Segment0{k}"]
            assert upper["DATASEC"] == lower["DATASEC"] == "[11:522,1:2002]"
            assert upper["DETSIZE"] == "[1:4096,1:4004]"
            assert upper["DETSEC"] == f"[{512 * (k + 1)}:{512 * k + 1},1:2002]"
            assert lower["DETSEC"] == f"[{512 * k + 1}:{512 * (k + 1)},4004:2003]"
            dtvs = [(h["DTV1"], h["DTV2"], h["DTM1_1"], h["DTM2_2"]) for h in (upper, lower)]
            assert dtvs == [(512 * (k + 1) + 11, 0, -1, 1), (512 * k - 10, 4005, 1, -1)]


@pytest.mark.parametrize(("vendor_name", "shape"), SIZES)
def test_dtv_dtm_map_the_data_section_onto_detsec(raw_of: RawOf, vendor_name: str, shape: CcdShape | None) -> None:
    """det = DTV + DTM * raw takes DATASEC's corners to DETSEC's, and the 16 DETSECs tile DETSIZE once."""
    path, truth, _ = raw_of(vendor_name, shape)
    covered = np.zeros((truth.shape.height, truth.shape.width), dtype=int)
    with fits.open(path) as hdus:
        for hdu in hdus[1:17]:
            header = hdu.header
            assert header["DTM1_2"] == 0 and header["DTM2_1"] == 0
            x1, x2, y1, y2 = section(header["DATASEC"])
            d1, d2, e1, e2 = section(header["DETSEC"])
            assert (header["DTV1"] + header["DTM1_1"] * x1, header["DTV1"] + header["DTM1_1"] * x2) == (d1, d2)
            assert (header["DTV2"] + header["DTM2_2"] * y1, header["DTV2"] + header["DTM2_2"] * y2) == (e1, e2)
            assert x1 - 1 == truth.layout.prescan and x2 < header["NAXIS1"] and y2 < header["NAXIS2"]
            covered[min(e1, e2) - 1:max(e1, e2), min(d1, d2) - 1:max(d1, d2)] += 1
    assert (covered == 1).all()


@pytest.mark.parametrize(("vendor_name", "shape", "compress"), [*((v, s, True) for v, s in SIZES),
                                                                 ("ITL", SMALL, False), ("E2V", SMALL, False)])
def test_a_pixel_in_dms_frame_lands_where_dm_would_read_it(raw_of: RawOf, vendor_name: str, shape: CcdShape | None,
                                                           compress: bool) -> None:
    """Markers put in the DM-frame electrons are found in the segment and raw pixel the reference's rules give
    (DETSEC mirrored in y, det = DTV + DTM * raw), one per corner of the CCD and a few inside; the prescan and
    overscans carry the amplifier's level and read noise. Plain (uncompressed) segments hold the same."""
    path, truth, markers = raw_of(vendor_name, shape, compress)
    with fits.open(path) as hdus:
        assert all(isinstance(hdu, fits.CompImageHDU) == compress for hdu in hdus[1:17])
        segments = [(hdu.header, np.asarray(hdu.data)) for hdu in hdus[1:17]]
    found = 0
    for header, data in segments:
        gain, level = truth.gains[header["EXTNAME"]], truth.bias_levels[header["EXTNAME"]]
        x1, x2, y1, y2 = section(header["DATASEC"])
        expected = {place for x, y in markers if (place := dm_pixel_to_raw(header, x, y)) is not None}
        bright = {(int(r), int(c)) for r, c in np.argwhere(data > level + 50_000 / gain)}
        assert bright == expected, header["EXTNAME"]
        assert all(y1 - 1 <= r < y2 and x1 - 1 <= c < x2 for r, c in bright)
        found += len(bright)
        serial = data[:, x2:]
        # the overscans and prescan carry the level (which drifts by up to 3 ADU along the readout)
        assert abs(np.median(serial) - level) < 3 and abs(np.median(data[y2:, :]) - level) < 4.5
        assert abs(np.median(data[:y2, :x1 - 1]) - level) < 3
        noise = np.std(np.diff(serial[:, 1:], axis=0)) / np.sqrt(2)
        assert noise == pytest.approx(truth.read_noise[header["EXTNAME"]] / gain, rel=0.15)
    assert found == len(markers)


def test_the_bias_sequence_is_written_in_the_camera_format(tmp_path: Path) -> None:
    """IMGTYPE BIAS, EXPTIME 0, controller C, the same segments; no pixel above the bias level."""
    night = simulated.plan_night(1, (94,), SMALL, start=START)
    [[arrival]] = simulated.write_bias_sequence(tmp_path, night, "2026-11-25T02:00:00.000", 1, 2026112500900)
    path = Path(arrival.uri.removeprefix("file://"))
    assert path.name == "MC_C_20261125_000900_R22_S11.fits"
    with fits.open(path) as hdus:
        primary = hdus[0].header
        assert (primary["IMGTYPE"], primary["EXPTIME"], primary["CONTRLLR"]) == ("BIAS", 0.0, "C")
        assert set(primary) - STRUCTURE == PRIMARY_KEYS
        assert [hdu.header["EXTNAME"] for hdu in hdus[1:17]] == list(SEGMENTS)


def planned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, visits: int = 2, fields: int = 0,
            detectors: tuple[int, ...] = (94,)) -> tuple[simulated.Night, list[Table]]:
    """A small night written, and the tables it gave the reference catalogue (written for real too)."""
    night = simulated.plan_night(visits, detectors, NIGHT, start=START, fields=fields, seed=11)
    written: list[Table] = []
    store = refcat.write

    def capture(root: Path, table: Table) -> list[Path]:
        written.append(table.copy())
        return store(root, table)

    monkeypatch.setattr(refcat, "write", capture)
    simulated.write_night(tmp_path, night)
    return night, written


def assembled(path: Path, truth: Detector) -> np.ndarray:
    """The raw in electrons, DM's frame, by the reference's rules (overscan by row, gain, DETSEC mirrored)."""
    image = np.zeros((truth.shape.height, truth.shape.width), np.float32)
    with fits.open(path) as hdus:
        for hdu in hdus[1:17]:
            header, data = hdu.header, np.asarray(hdu.data, dtype=np.float32)
            x1, x2, y1, y2 = section(header["DATASEC"])
            level = np.median(data[y1 - 1:y2, x2:], axis=1, keepdims=True)
            pixels = (data[y1 - 1:y2, x1 - 1:x2] - level) * truth.gains[header["EXTNAME"]]
            d1, d2, e1, e2 = section(header["DETSEC"])
            rows = truth.shape.height - max(e1, e2), truth.shape.height - min(e1, e2) + 1  # the y mirror
            pixels = pixels[:, ::-1] if d1 > d2 else pixels
            pixels = pixels[::-1, :] if e1 < e2 else pixels  # DETSEC ascending in y is DM descending
            image[rows[0]:rows[1], min(d1, d2) - 1:max(d1, d2)] = pixels
    return image


def centroid(image: np.ndarray, x: float, y: float, half: int = 6) -> tuple[float, float, float]:
    """Background-subtracted centroid (x, y) and flux within a box around (x, y)."""
    x0, y0 = round(x), round(y)
    box = image[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
    ring = np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]])
    box = box - np.median(ring)
    yy, xx = np.mgrid[y0 - half:y0 + half + 1, x0 - half:x0 + half + 1]
    return float((box * xx).sum() / box.sum()), float((box * yy).sum() / box.sum()), float(box.sum())


def bright_isolated(night: simulated.Night, visit: simulated.PlannedVisit, detector: int,
                    brightest: int = 6) -> list[tuple[int, float, float]]:
    """(index in the detector's star list, x, y through the true WCS) of its brightest stars (above 40000 e-) well
    inside the CCD with no neighbour adding 2% to them within 20 pixels."""
    stars, _, _ = simulated._stars(night, visit, detector)
    shape = night.shape_of(detector)
    x, y = simulated.true_wcs(night, visit, detector).all_world2pix(stars.ra, stars.dec, 0)
    inside = (x > 12) & (x < shape.width - 13) & (y > 12) & (y < shape.height - 13)
    electrons = stars.flux / simulated.throughput(night, detector)
    chosen: list[tuple[int, float, float]] = []
    for i in np.argsort(-electrons)[:brightest * 3]:
        near = np.hypot(x - x[i], y - y[i]) < 20
        if inside[i] and electrons[i] > 40_000 and electrons[near].sum() < 1.02 * electrons[i]:
            chosen.append((int(i), float(x[i]), float(y[i])))
    return chosen[:brightest]


def test_the_sky_is_seen_through_the_true_pointing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each visit is off by a seeded pointing error of arcseconds; the raws say the nominal boresight (as nextVisit
    does), the stars sit where the true WCS puts them, and the truth file records that WCS and the throughput."""
    night, _ = planned(tmp_path, monkeypatch)
    errors = np.array([visit.pointing_error for visit in night.visits])
    assert (np.hypot(errors[:, 0], errors[:, 1]) > 0.05).all() and (np.abs(errors[:, :2]) < 10).all()
    assert np.hypot(errors[:, 0], errors[:, 1]).max() > 1.0, "the seed gives at least one error worth finding"
    assert (np.abs(errors[:, 2]) < 0.03).all() and len({tuple(e) for e in errors}) == len(night.visits)
    for visit in night.visits:
        nominal, true = simulated.nominal_wcs(night, visit, 94), simulated.true_wcs(night, visit, 94)
        centre = nominal.pixel_to_world(256, 256).separation(true.pixel_to_world(256, 256)).arcsec
        assert 0.05 < centre < 20
        key = simulated.raw_key(night, visit, 0, 94)
        header = fits.getheader(tmp_path / "raw" / key)
        assert (header["RA"], header["DEC"], header["ROTPA"]) == (visit.ra, visit.dec, visit.camera_angle)
        truth = simulated._detector(night, 94)
        image = assembled(tmp_path / "raw" / key, truth) / truth.flat
        offsets_true, offsets_nominal = [], []
        stars = bright_isolated(night, visit, 94)
        assert len(stars) >= 3
        for _, x, y in stars:
            cx, cy, _ = centroid(image, x, y)
            offsets_true.append(np.hypot(cx - x, cy - y))
            nx, ny = nominal.all_world2pix(*true.all_pix2world(x, y, 0), 0)
            offsets_nominal.append(np.hypot(cx - nx, cy - ny))
        assert np.median(offsets_true) < 0.15, offsets_true
        assert np.median(offsets_nominal) > 0.8 * centre / 0.2 - 0.15
        with fits.open(tmp_path / "truth" / f"{visit.group_id}.fits") as hdus:
            transients, detectors = Table(hdus["TRUTH"].data), Table(hdus["DETECTORS"].data)
            assert hdus[1].name == "TRUTH"
            assert (hdus[0].header["NOMRA"], hdus[0].header["TRUERA"]) == (visit.ra, visit.true_pointing[0])
        assert {"detector", "x", "y", "ra", "dec", "flux", "snr", "flux_njy"} <= set(transients.colnames)
        assert np.allclose(transients["flux_njy"], transients["flux"] * truth.njy_per_electron)
        [row] = detectors
        assert row["njy_per_electron"] == truth.njy_per_electron == simulated.throughput(night, 94)
        recorded = WCS(fits.Header.fromstring(row["wcs"]))
        assert np.allclose(recorded.wcs.crval, true.wcs.crval) and np.allclose(recorded.wcs.crpix, true.wcs.crpix)
        assert np.allclose(recorded.pixel_scale_matrix, true.wcs.cd, rtol=1e-9, atol=0)
        cd = [[row["cd1_1"], row["cd1_2"]], [row["cd2_1"], row["cd2_2"]]]
        assert np.allclose(cd, true.wcs.cd, rtol=1e-12, atol=0)
        assert np.allclose([row["crval1"], row["crval2"]], true.wcs.crval)
        x, y = true.all_world2pix(transients["ra"], transients["dec"], 0)
        assert np.allclose(x, transients["x"], atol=1e-6) and np.allclose(y, transients["y"], atol=1e-6)
        as_scored = Table.read(tmp_path / "truth" / f"{visit.group_id}.fits", hdu=1)  # as scoring reads it
        assert len(as_scored) == len(transients)


def test_the_reference_catalogue_holds_the_on_ccd_stars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One share per field and detector (a field visited twice is not written twice), every star on its CCD
    through the true WCS, r fluxes in nJy = the electrons measured on the raw x njy_per_electron, within noise."""
    night, written = planned(tmp_path, monkeypatch, visits=3, fields=2, detectors=(94, 0))
    assert len(written) == 1
    table = written[0]
    assert {"ra", "dec", "pm_ra", "pm_dec", "epoch", "r_flux", "r_flux_err"} <= set(table.colnames)
    assert (table["pm_ra"] == 0).all() and (table["pm_dec"] == 0).all() and (table["epoch"] == 2026.0).all()
    shares = {(visit.field, detector): simulated.reference_stars(night, visit, detector)
              for visit in night.visits[:2] for detector in night.detectors}
    assert len(table) == sum(len(share) for share in shares.values())
    assert len(vstack(list(shares.values()))) == len(table)
    for (field, detector), share in shares.items():
        visit = night.visits[field]
        stars, _, _ = simulated._stars(night, visit, detector)
        x, y = simulated.true_wcs(night, visit, detector).all_world2pix(share["ra"], share["dec"], 0)
        shape = night.shape_of(detector)
        assert ((x > -1) & (x < shape.width) & (y > -1) & (y < shape.height)).all()
        sx, sy = simulated.true_wcs(night, visit, detector).all_world2pix(stars.ra, stars.dec, 0)
        on = (sx >= -0.5) & (sx < shape.width - 0.5) & (sy >= -0.5) & (sy < shape.height - 0.5)
        assert len(share) == on.sum() < len(stars.flux), "only the stars on the CCD, not the whole list"
        scatter = np.hypot((share["ra"] - stars.ra[on]) * np.cos(np.radians(stars.dec[on])),
                           share["dec"] - stars.dec[on]) * 3.6e6
        assert 5 < np.median(scatter) < 20
        ratio = share["r_flux"] / stars.flux[on]
        assert abs(np.mean(ratio) - 1) < 0.01 and 0.005 < np.std(ratio) < 0.02
        assert np.allclose(share["r_flux_err"], 0.01 * stars.flux[on])
    truth = simulated._detector(night, 94)
    visit = night.visits[0]
    image = assembled(tmp_path / "raw" / simulated.raw_key(night, visit, 0, 94), truth) / truth.flat
    stars, _, _ = simulated._stars(night, visit, 94)
    x, y = simulated.true_wcs(night, visit, 94).all_world2pix(stars.ra, stars.dec, 0)
    on = np.flatnonzero((x >= -0.5) & (x < NIGHT.width - 0.5) & (y >= -0.5) & (y < NIGHT.height - 0.5))
    ratios = []
    for index, x, y in bright_isolated(night, visit, 94):
        _, _, electrons = centroid(image, x, y, half=7)
        ratios.append(electrons * truth.njy_per_electron / shares[(0, 94)]["r_flux"][np.searchsorted(on, index)])
    assert len(ratios) >= 3 and abs(np.median(ratios) - 1) < 0.02, ratios
    ra, dec = simulated.true_wcs(night, visit, 94).all_pix2world([0, NIGHT.width, NIGHT.width, 0],
                                                                 [0, 0, NIGHT.height, NIGHT.height], 0)
    loaded = refcat.load(tmp_path, ra, dec, "r", 2026.9)
    assert len(loaded.ra) >= len(shares[(0, 94)]), "the catalogue as stored holds the detector's stars"
    assert set(np.round(shares[(0, 94)]["r_flux"], 3)) <= set(np.round(loaded.flux, 3))


def test_night_sizes_follow_the_vendor_when_full_size() -> None:
    """shape None: each detector its vendor's CCD; a small shape is the same for both vendors."""
    full = simulated.plan_night(1, (0, 94), None, start=START)
    assert full.shape_of(0) == CcdShape(4000, 4072) and full.shape_of(94) == CcdShape(4004, 4096)
    small = simulated.plan_night(1, (0, 94), SMALL, start=START)
    assert small.shape_of(0) == small.shape_of(94) == SMALL
