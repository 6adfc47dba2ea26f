"""ISR reads raws exactly as LSSTCam writes them, for E2V and ITL sensors.

The raws are built here from the project's reference (`lsstcam_raw_format.md`), independently of
`streams.simulate` and of `streams.science.amplifiers`' placements: the vendor layouts, the camera's
DETSEC/DTV/DTM table and cameraGeom's split of the CCD are written out literally below. A known image in
DM's orientation (a gradient plus an asymmetric marker per amplifier) is cut into segments as cameraGeom
says, turned into ADU with per-amplifier gains, given a bias level, prescan, overscan (with CTI trailing)
and read noise, and written in the camera's HDU order with the camera's keywords. ISR must give the image
back within the noise, every amplifier the right way round.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from streams.science import isr
from tests.fits_bombs import set_card

# ---------------------------------------------------------------------------------------------------------------
# The reference, written out


@dataclass(frozen=True)
class Geometry:
    """One segment in readout order: serial prescan, data columns x rows, serial and parallel overscan."""

    prescan: int
    columns: int
    rows: int
    serial: int
    parallel: int

    @property
    def naxis1(self) -> int:
        return self.prescan + self.columns + self.serial

    @property
    def naxis2(self) -> int:
        return self.rows + self.parallel

    @property
    def ccd(self) -> tuple[int, int]:
        """(rows, columns) of the assembled CCD: 2 x 8 amplifiers."""
        return 2 * self.rows, 8 * self.columns


FULL = {"E2V": Geometry(10, 512, 2002, 54, 46), "ITL": Geometry(3, 509, 2000, 64, 48)}
SMALL = {vendor: Geometry(full.prescan, 40, 60, 16, 8) for vendor, full in FULL.items()}
"""The project's small test layout: vendor prescan, 16 serial and 8 parallel overscan columns/rows."""
CAMERA_ORDER = [f"Segment1{k}" for k in range(8)] + [f"Segment0{k}" for k in range(7, -1, -1)]
"""The order the camera writes the HDUs in, CHANNEL 1..16."""
GAINS = {name: 1.45 + 0.005 * i for i, name in enumerate(CAMERA_ORDER)}
READ_NOISE = {name: 5.2 + 0.02 * i for i, name in enumerate(CAMERA_ORDER)}
BIAS_ADU = {name: 25000.0 + 37.0 * i for i, name in enumerate(CAMERA_ORDER)}
AMPS = isr.AmpCalibration(dict(GAINS), dict(READ_NOISE))
MARKER = ((2, 3, 5000.0), (2, 4, 3000.0), (3, 3, 2000.0))
"""An L in each amplifier's DM-frame region, near its lower-left corner: (row, column, e-)."""
DETECTORS = {"E2V": ("R22", "S22", 98), "ITL": ("R10", "S02", 29)}
"""Where the reference's test files come from: R22_S22 = det098 (E2V), R10_S02 = det029 (ITL)."""


def camera_keywords(name: str, vendor: str, g: Geometry) -> dict[str, str | int]:
    """The amplifier keywords as the camera writes them: the reference's table with k, W = data columns,
    H = data rows, P = prescan (at full size: ITL Segment1k [509(k+1):509k+1,1:2000], DTV1 509(k+1)+4...)."""
    half, k = int(name[-2]), int(name[-1])
    w, h, p = g.columns, g.rows, g.prescan
    if half == 1:  # both vendors: [W(k+1):Wk+1, 1:H]; DTV W(k+1)+P+1, 0; DTM -1, +1
        detsec, dtv, dtm = f"[{w * (k + 1)}:{w * k + 1},1:{h}]", (w * (k + 1) + p + 1, 0), (-1, 1)
    elif vendor == "ITL":  # [W(k+1):Wk+1, 2H:H+1]; DTV W(k+1)+P+1, 2H+1; DTM -1, -1
        detsec, dtv, dtm = f"[{w * (k + 1)}:{w * k + 1},{2 * h}:{h + 1}]", (w * (k + 1) + p + 1, 2 * h + 1), (-1, -1)
    else:  # E2V: [Wk+1:W(k+1), 2H:H+1]; DTV Wk-P, 2H+1; DTM +1, -1
        detsec, dtv, dtm = f"[{w * k + 1}:{w * (k + 1)},{2 * h}:{h + 1}]", (w * k - p, 2 * h + 1), (1, -1)
    return {"EXTNAME": name, "CHANNEL": CAMERA_ORDER.index(name) + 1, "CCDSUM": "1 1",
            "DATASEC": f"[{p + 1}:{p + w},1:{h}]", "DETSEC": detsec, "DETSIZE": f"[1:{8 * w},1:{2 * h}]",
            "DTV1": dtv[0], "DTV2": dtv[1], "DTM1_1": dtm[0], "DTM2_2": dtm[1], "DTM1_2": 0, "DTM2_1": 0}


def dm_cut(name: str, vendor: str, g: Geometry) -> tuple[slice, slice, bool, bool]:
    """cameraGeom (obs_lsst cameraHeader.yaml): C1k at column k of the upper half, flipped in x and y; C0k at
    column k of the lower half, flipped in x for ITL only. (rows, columns, flip x, flip y), 0-based."""
    half, k = int(name[-2]), int(name[-1])
    columns = slice(k * g.columns, (k + 1) * g.columns)
    if half == 1:
        return slice(g.rows, 2 * g.rows), columns, True, True
    return slice(0, g.rows), columns, vendor == "ITL", False


def readout_order(image: np.ndarray, name: str, vendor: str, g: Geometry) -> np.ndarray:
    """An amplifier's part of a DM-frame image in the order it is read out (raw column 0 first)."""
    rows, columns, flip_x, flip_y = dm_cut(name, vendor, g)
    ordered: np.ndarray = image[rows, columns][::-1 if flip_y else 1, ::-1 if flip_x else 1]
    return ordered


# ---------------------------------------------------------------------------------------------------------------
# Building raws


def known_image(g: Geometry) -> np.ndarray:
    """The truth in DM's frame [e-]: a smooth gradient plus an L marker at the same place of every amplifier."""
    height, width = g.ccd
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image: np.ndarray = 1000.0 + 0.5 * x + 0.3 * y
    for r in range(2):
        for c in range(8):
            for row, column, value in MARKER:
                image[r * g.rows + row, c * g.columns + column] += value
    return image


def camera_raw(vendor: str, g: Geometry, *, compressed: bool = False, seed: int = 1) -> fits.HDUList:
    """The known image as the camera would write it (primary header, 16 segments in camera order, then the
    REB_COND and CONFIG_COND tables)."""
    rng = np.random.default_rng(seed)
    truth = known_image(g)
    raft, slot, _ = DETECTORS[vendor]
    primary = fits.PrimaryHDU(header=fits.Header({
        "INSTRUME": "lsstCam", "TELESCOP": "Simonyi Survey Telescope", "RAFTBAY": raft, "CCDSLOT": slot,
        "CCD_MANU": vendor, "CCD_TYPE": "CCD250" if vendor == "E2V" else "3800C", "FILTBAND": "r",
        "FILTER": "r_57", "EXPTIME": 30.0, "RA": 150.25, "DEC": -2.5, "ROTPA": 12.0, "BUNIT": "adu"}))
    hdus = [primary]
    rows = np.arange(g.naxis2, dtype=np.float32)[:, None]
    for name in CAMERA_ORDER:
        gain, noise_adu = GAINS[name], READ_NOISE[name] / GAINS[name]
        drift = BIAS_ADU[name] + 3.0 * np.sin(rows / 17.0)  # a bias level wandering along the readout
        segment = drift + noise_adu * rng.standard_normal((g.naxis2, g.naxis1), dtype=np.float32)
        signal = readout_order(truth, name, vendor, g) / gain
        data_columns = slice(g.prescan, g.prescan + g.columns)
        segment[:g.rows, data_columns] += signal
        last = signal[:, -1]  # CTI: the last pixel read in a row leaves a trail in the first overscan columns
        segment[:g.rows, g.prescan + g.columns] += 0.05 * last
        segment[:g.rows, g.prescan + g.columns + 1] += 0.01 * last
        header = fits.Header(camera_keywords(name, vendor, g))
        pixels = np.rint(segment).astype(np.int32)
        if compressed:
            hdus.append(fits.CompImageHDU(pixels, header=header, compression_type="RICE_1",
                                          tile_shape=(1, g.naxis1)))
        else:
            hdus.append(fits.ImageHDU(pixels, header=header))
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(f"TEMP{i}", "E") for i in range(1, 11)], name="REB_COND"))
    hdus.append(fits.BinTableHDU.from_columns([fits.Column("CHECKSUM", "20A")], name="CONFIG_COND"))
    return fits.HDUList(hdus)


def to_bytes(hdus: fits.HDUList) -> bytes:
    """The file as it would arrive."""
    buffer = io.BytesIO()
    hdus.writeto(buffer)
    return buffer.getvalue()


def segment(hdus: fits.HDUList, name: str) -> fits.ImageHDU:
    """The HDU of a segment, by EXTNAME."""
    return next(hdu for hdu in hdus[1:] if hdu.header.get("EXTNAME") == name)


def check_against_truth(raw: isr.Raw, vendor: str, g: Geometry, threads: int = 1) -> None:
    """The assembled image is the known one within the noise, amplifier by amplifier, markers in place."""
    truth = known_image(g)
    image = isr.assemble(raw, AMPS, threads)
    assert image.shape == truth.shape == g.ccd
    for name in CAMERA_ORDER:
        rows, columns, _, _ = dm_cut(name, vendor, g)
        residual = (image - truth)[rows, columns]
        rn, gain = READ_NOISE[name], GAINS[name]
        used = g.serial - 2  # the overscan columns behind the level (2 left out for CTI)
        level_var = np.pi / 2 * rn ** 2 / used  # the variance of a median of `used` columns, in e-^2
        sigma = float(np.sqrt(rn ** 2 + level_var + gain ** 2 / 12))  # read noise, level, ADU rounding
        sigma_mean = float(np.sqrt(rn ** 2 / residual.size + level_var / g.rows))
        assert abs(float(residual.mean())) < 5 * sigma_mean, f"{name}: bias left over"
        assert float(residual.std()) == pytest.approx(sigma, rel=0.1), f"{name}: noise is not read noise only"
        assert float(np.abs(residual).max()) < 7 * sigma, f"{name}: a pixel out of place"
        region = image[rows, columns]
        order = np.argsort(region, axis=None)[::-1][:3]  # the three brightest: the L, in its orientation
        assert [tuple(int(v) for v in np.unravel_index(i, region.shape)) for i in order] == \
               [(row, column) for row, column, _ in MARKER], f"{name}: marker not where DM has it"


# ---------------------------------------------------------------------------------------------------------------
# The fixture against the reference


def test_the_fixture_writes_the_reference_keywords() -> None:
    """At full size the keywords are those of the real headers quoted in the reference."""
    itl, e2v = FULL["ITL"], FULL["E2V"]
    assert camera_keywords("Segment10", "ITL", itl)["DETSEC"] == "[509:1,1:2000]"
    assert camera_keywords("Segment10", "E2V", e2v)["DETSEC"] == "[512:1,1:2002]"
    assert camera_keywords("Segment10", "E2V", e2v)["DATASEC"] == "[11:522,1:2002]"
    assert camera_keywords("Segment10", "ITL", itl)["DATASEC"] == "[4:512,1:2000]"
    assert camera_keywords("Segment13", "ITL", itl)["DTV1"] == 509 * 4 + 4
    assert camera_keywords("Segment03", "E2V", e2v)["DETSEC"] == "[1537:2048,4004:2003]"
    assert camera_keywords("Segment03", "E2V", e2v)["DTV1"] == 512 * 3 - 10
    assert camera_keywords("Segment07", "ITL", itl)["DETSIZE"] == "[1:4072,1:4000]"
    assert (itl.naxis1, itl.naxis2, e2v.naxis1, e2v.naxis2) == (576, 2048, 576, 2048)


@pytest.mark.parametrize("vendor", ["E2V", "ITL"])
def test_the_fixture_agrees_with_the_camera_s_own_mapping(vendor: str) -> None:
    """Two statements of the reference checked against each other: a segment cut as cameraGeom says, mapped
    through the camera's DTV/DTM (det = DTV + DTM raw) and mirrored in y (DM-36115), lands back in place."""
    g = SMALL[vendor]
    truth = known_image(g)
    for name in CAMERA_ORDER:
        keys = camera_keywords(name, vendor, g)
        data = readout_order(truth, name, vendor, g)
        raw_y, raw_x = np.mgrid[1:g.rows + 1, g.prescan + 1:g.prescan + g.columns + 1]
        det_x = int(keys["DTV1"]) + int(keys["DTM1_1"]) * raw_x
        det_y = int(keys["DTV2"]) + int(keys["DTM2_2"]) * raw_y
        dm_y = 2 * g.rows + 1 - det_y
        assert np.array_equal(truth[dm_y - 1, det_x - 1], data), name
        detsec = str(keys["DETSEC"]).strip("[]").replace(",", ":").split(":")
        assert [int(v) for v in detsec] == [det_x[0, 0], det_x[0, -1], det_y[0, 0], det_y[-1, 0]], name


# ---------------------------------------------------------------------------------------------------------------
# Reading camera raws


@pytest.mark.parametrize("vendor", ["E2V", "ITL"])
def test_a_small_camera_raw_assembles_to_the_known_image(vendor: str) -> None:
    """Every amplifier in place and the right way round, in electrons, bias and overscan gone."""
    raw = isr.read_raw(to_bytes(camera_raw(vendor, SMALL[vendor])))
    assert [amp.name for amp in raw.amplifiers] == CAMERA_ORDER
    check_against_truth(raw, vendor, SMALL[vendor])
    check_against_truth(raw, vendor, SMALL[vendor], threads=4)


@pytest.mark.parametrize(("vendor", "compressed"), [("E2V", False), ("ITL", True)])
def test_a_full_size_camera_raw_assembles_to_the_known_image(tmp_path: Path, vendor: str, compressed: bool) -> None:
    """576 x 2048 segments (E2V as the 2019-2021 files, ITL RICE-compressed as on sky since 2025)."""
    g = FULL[vendor]
    path = tmp_path / "MC_O_20250415_000060_R10_S02.fits"
    camera_raw(vendor, g, compressed=compressed).writeto(path)
    raw = isr.read_raw(path)
    assert raw.shape == {"E2V": (4004, 4096), "ITL": (4000, 4072)}[vendor]
    first = raw.amplifiers[0]
    assert first.pixels.shape == (g.rows, g.columns) and first.overscan.shape == (g.rows, g.serial)
    assert first.pixels.dtype == first.overscan.dtype == np.float32
    check_against_truth(raw, vendor, g, threads=2)


@pytest.mark.parametrize("vendor", ["E2V", "ITL"])
def test_what_the_primary_header_says(vendor: str) -> None:
    """Instrument from INSTRUME in any case, detector from RAFTBAY + CCDSLOT (no DETNAME or DETECTOR), vendor,
    band, exposure time and boresight."""
    raw = isr.read_raw(to_bytes(camera_raw(vendor, SMALL[vendor])))
    assert (raw.instrument, raw.detector, raw.vendor) == ("LSSTCam", DETECTORS[vendor][2], vendor)
    assert (raw.band, raw.exposure_time, raw.boresight) == ("r", 30.0, (150.25, -2.5, 12.0))
    assert "DETECTOR" not in raw.header and raw.header["INSTRUME"] == "lsstCam"


@pytest.mark.parametrize(("instrume", "raft", "slot", "vendor", "instrument", "detector"), [
    ("LSSTCAM", "R22", "S11", "E2V", "LSSTCam", 94), ("lsstcam", "R01", "S00", "ITL", "LSSTCam", 0),
    ("LSSTComCam", "R22", "S12", "ITL", "LSSTComCam", 5), ("latiss", "R00", "S00", "ITL", "LATISS", 0)])
def test_detector_and_instrument_come_from_the_header(instrume: str, raft: str, slot: str, vendor: str,
                                                      instrument: str, detector: int) -> None:
    """Any case of INSTRUME; the id computed from the raft and slot; without CCD_MANU, the vendor of the raft
    (ComCam and LATISS are ITL)."""
    hdus = camera_raw(vendor, SMALL[vendor])
    hdus[0].header.update({"INSTRUME": instrume, "RAFTBAY": raft, "CCDSLOT": slot})
    del hdus[0].header["CCD_MANU"]
    raw = isr.read_raw(to_bytes(hdus))
    assert (raw.instrument, raw.detector, raw.vendor) == (instrument, detector, vendor)


def test_band_falls_back_on_filter_and_a_missing_boresight_is_a_format_error() -> None:
    """FILTER i_39 is band i; a raw without RA cannot say where it looked."""
    hdus = camera_raw("ITL", SMALL["ITL"])
    del hdus[0].header["FILTBAND"], hdus[0].header["RA"]
    hdus[0].header["FILTER"] = "i_39"
    raw = isr.read_raw(to_bytes(hdus))
    assert raw.band == "i"
    with pytest.raises(isr.RawFormatError, match="RA"):
        _ = raw.boresight


@pytest.mark.parametrize("vendor", ["E2V", "ITL"])
def test_rice_compressed_segments_read_the_same(vendor: str) -> None:
    """RICE is lossless for integers: the same pixels, the same image."""
    plain = isr.read_raw(to_bytes(camera_raw(vendor, SMALL[vendor], seed=3)))
    packed_hdus = camera_raw(vendor, SMALL[vendor], compressed=True, seed=3)
    data = to_bytes(packed_hdus)
    with fits.open(io.BytesIO(data)) as reopened:
        assert isinstance(reopened[1], fits.CompImageHDU) and reopened[1].header["EXTNAME"] == "Segment10"
    packed = isr.read_raw(data)
    for a, b in zip(plain.amplifiers, packed.amplifiers, strict=True):
        assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.overscan, b.overscan)
        assert a.placement == b.placement
    assert np.array_equal(isr.assemble(plain, AMPS), isr.assemble(packed, AMPS))


def test_segments_are_found_by_name_and_other_hdus_ignored(tmp_path: Path) -> None:
    """Segments in any order, among tables and an extra image, read uncompressed from a path: the same raw."""
    reference = isr.read_raw(to_bytes(camera_raw("ITL", SMALL["ITL"])))
    hdus = camera_raw("ITL", SMALL["ITL"])
    shuffled = [hdus[i] for i in np.random.default_rng(2).permutation(range(1, 17))]
    extra = [fits.ImageHDU(np.zeros((4, 4), np.int16), name="GUIDER"), hdus[17], hdus[18],
             fits.BinTableHDU.from_columns([fits.Column("X", "E")], name="WREB_COND")]
    path = tmp_path / "raw.fits"
    fits.HDUList([hdus[0], extra[0], extra[1], *shuffled[:8], extra[3], *shuffled[8:], extra[2]]).writeto(path)
    raw = isr.read_raw(path)
    assert [amp.name for amp in raw.amplifiers] == CAMERA_ORDER
    assert np.array_equal(isr.assemble(raw, AMPS), isr.assemble(reference, AMPS))


def test_gains_and_read_noise_come_from_the_ptc_not_the_raw() -> None:
    """The raw has no GAIN or RDNOISE; the read noise map is the ptc's, amplifier by amplifier; a ptc lacking a
    segment is a clear error naming it."""
    vendor, g = "E2V", SMALL["E2V"]
    hdus = camera_raw(vendor, g)
    assert not any(key in hdu.header for hdu in hdus[1:17] for key in ("GAIN", "RDNOISE", "BIASSEC"))
    raw = isr.read_raw(to_bytes(hdus))
    noise = isr.read_noise_map(raw, AMPS)
    for name in CAMERA_ORDER:
        rows, columns, _, _ = dm_cut(name, vendor, g)
        assert np.allclose(noise[rows, columns], READ_NOISE[name])
    partial = isr.AmpCalibration({k: v for k, v in GAINS.items() if k != "Segment04"}, dict(READ_NOISE))
    with pytest.raises(ValueError, match="Segment04"):
        isr.assemble(raw, partial)
    with pytest.raises(ValueError, match="Segment04"):
        isr.read_noise_map(raw, isr.AmpCalibration(dict(GAINS), {k: 5.0 for k in GAINS if k != "Segment04"}))


def test_remove_signature_in_dm_frame() -> None:
    """Bias, dark and flat in DM's frame are removed from the assembled image; the variance is Poisson plus the
    ptc's read noise."""
    vendor, g = "ITL", SMALL["ITL"]
    raw = isr.read_raw(to_bytes(camera_raw(vendor, g)))
    flat = np.full(g.ccd, 2.0, np.float32)
    calibs = isr.Calibrations(np.full(g.ccd, 100.0, np.float32), np.full(g.ccd, 1.0, np.float32), flat, AMPS)
    image, variance = isr.remove_signature(raw, calibs)
    truth = (known_image(g) - 100.0 - 30.0) / 2.0
    assert abs(float(np.median(image - truth))) < 0.5
    rows, columns, _, _ = dm_cut("Segment05", vendor, g)
    expected = (np.clip(truth[rows, columns] * 2.0, 0, None) + READ_NOISE["Segment05"] ** 2) / 4.0
    assert np.allclose(variance[rows, columns], expected, rtol=0.05, atol=5.0)
    with pytest.raises(ValueError, match="bias"):
        isr.remove_signature(raw, isr.Calibrations(np.zeros((10, 10), np.float32), calibs.dark, flat, AMPS))


# ---------------------------------------------------------------------------------------------------------------
# Bad raws: each its typed error, with a message that says what is wrong


Change = Callable[[fits.HDUList], None]


def drop(name: str) -> Change:
    def change(hdus: fits.HDUList) -> None:
        hdus.remove(segment(hdus, name))
    return change


def set_key(name: str, key: str, value: str | int) -> Change:
    def change(hdus: fits.HDUList) -> None:
        segment(hdus, name).header[key] = value
    return change


def duplicate(hdus: fits.HDUList) -> None:
    hdus.append(segment(hdus, "Segment06").copy())


def imsim_detsec(hdus: fits.HDUList) -> None:
    """imSim writes DETSEC in DM's frame: the camera's y mirrored (E2V Segment10 [512:1,4004:2003])."""
    g = SMALL["ITL"]
    for hdu in hdus[1:17]:
        x, y = hdu.header["DETSEC"].strip("[]").split(",")
        y1, y2 = (2 * g.rows + 1 - int(v) for v in y.split(":"))
        hdu.header["DETSEC"] = f"[{x},{y1}:{y2}]"


def primary(key: str, value: str | None) -> Change:
    def change(hdus: fits.HDUList) -> None:
        if value is None:
            del hdus[0].header[key]
        else:
            hdus[0].header[key] = value
    return change


def segment_data_as_none(hdus: fits.HDUList) -> None:
    """An HDU called Segment11 that holds a table, not an image."""
    index = hdus.index_of("Segment11")
    hdus[index] = fits.BinTableHDU.from_columns([fits.Column("X", "E")], header=fits.Header({"EXTNAME": "Segment11"}))


ITL_SMALL = SMALL["ITL"]
BAD_RAWS = {
    "missing segment": (drop("Segment05"), isr.MissingSegmentError, ["Segment05"]),
    "duplicated segment": (duplicate, isr.MissingSegmentError, ["Segment06", "twice"]),
    "segment not an image": (segment_data_as_none, isr.MissingSegmentError, ["Segment11", "not an image"]),
    "DATASEC beyond NAXIS1": (set_key("Segment12", "DATASEC", f"[4:{ITL_SMALL.naxis1 + 1},1:60]"), isr.SectionError,
                              ["Segment12", "DATASEC", "NAXIS1"]),
    "DATASEC with no overscan": (set_key("Segment12", "DATASEC", f"[4:{ITL_SMALL.naxis1},1:60]"), isr.SectionError,
                                 ["Segment12", "DATASEC", "overscan"]),
    "DETSEC size differs from DATASEC": (set_key("Segment03", "DETSEC", "[160:122,120:62]"), isr.SectionError,
                                         ["Segment03", "DETSEC", "DATASEC"]),
    "DETSEC outside DETSIZE": (set_key("Segment03", "DETSEC", "[360:321,120:61]"), isr.SectionError,
                               ["Segment03", "DETSEC", "DETSIZE"]),
    "DETSEC of another amplifier": (set_key("Segment03", "DETSEC", "[200:161,120:61]"), isr.SectionError,
                                    ["Segment03", "DETSEC", "cameraGeom"]),
    "DETSIZE not 8 x 2 amplifiers": (set_key("Segment14", "DETSIZE", "[1:320,1:122]"), isr.SectionError,
                                     ["Segment14", "DETSIZE"]),
    "malformed DATASEC": (set_key("Segment15", "DATASEC", "4:43,1:60"), isr.SectionError, ["Segment15", "DATASEC"]),
    "imSim-convention DETSEC": (imsim_detsec, isr.SectionError, ["Segment10", "DETSEC", "cameraGeom", "imSim"]),
    "not LSSTCam": (primary("INSTRUME", "HSC"), isr.NotLsstCamError, ["INSTRUME", "HSC"]),
    "no RAFTBAY": (primary("RAFTBAY", None), isr.NotLsstCamError, ["RAFTBAY"]),
    "no such raft": (primary("RAFTBAY", "R00"), isr.NotLsstCamError, ["R00_S02"]),
    "unknown CCD_MANU": (primary("CCD_MANU", "STA"), isr.RawFormatError, ["CCD_MANU", "STA"]),
    "CCD_MANU of the other vendor": (primary("CCD_MANU", "E2V"), isr.SectionError, ["Segment07", "DETSEC", "E2V"]),
}


@pytest.mark.parametrize("case", list(BAD_RAWS))
def test_a_bad_raw_gets_its_typed_error(case: str) -> None:
    """The exact error class (no bare ValueError/KeyError), its message naming the HDU and the keyword."""
    change, error, words = BAD_RAWS[case]
    hdus = camera_raw("ITL", ITL_SMALL)
    change(hdus)
    with pytest.raises(isr.RawFormatError) as raised:
        isr.read_raw(to_bytes(hdus))
    assert type(raised.value) is error, f"{case}: {type(raised.value).__name__}: {raised.value}"
    for word in words:
        assert word in str(raised.value), f"{case}: {word!r} not in {raised.value}"


def test_a_corrupt_rice_tile_is_a_corrupt_raw_naming_the_hdu(tmp_path: Path) -> None:
    """Bytes overwritten in the middle of Segment13's compressed data: CorruptRawError, naming it and the file."""
    path = tmp_path / "raw.fits"
    camera_raw("E2V", SMALL["E2V"], compressed=True).writeto(path)
    with fits.open(path) as hdus:
        index = hdus.index_of("Segment13")
        where = hdus.fileinfo(index)
    middle = where["datLoc"] + where["datSpan"] // 2
    data = bytearray(path.read_bytes())
    data[middle:middle + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(isr.CorruptRawError, match="Segment13") as raised:
        isr.read_raw(path)
    assert str(path) in str(raised.value)


@pytest.mark.parametrize("data", [b"", b"SIMPLE  = this is not FITS" * 200, bytes(range(256)) * 40])
def test_a_file_that_is_not_fits_is_a_raw_format_error(data: bytes) -> None:
    """Not FITS at all: RawFormatError, never an OSError."""
    with pytest.raises(isr.RawFormatError, match="raw bytes"):
        isr.read_raw(data)


def test_a_missing_file_is_a_raw_format_error(tmp_path: Path) -> None:
    """The path is named."""
    with pytest.raises(isr.RawFormatError, match=r"nowhere\.fits"):
        isr.read_raw(tmp_path / "nowhere.fits")


# ---------------------------------------------------------------------------------------------------------------
# The ptc calibration in the repository


def test_a_ptc_round_trips_and_is_found_for_any_filter(tmp_path: Path) -> None:
    """Written where calibration_path says, found whatever the filter asked for (ptc is filter-independent),
    read back exactly."""
    from streams.data import repository  # here: it imports the whole science chain, the ISR tests need only isr
    start, end = 1.796e9, 1.796e9 + 30 * 86400
    path = repository.calibration_path(tmp_path, "LSSTCam", "ptc", 98, repository.ANY_FILTER, start, end)
    repository.write_ptc(path, AMPS, 98, start, end)
    found = repository.find_calibration(tmp_path, "LSSTCam", "ptc", 98, "r_57", start + 3600)
    assert found.path == path and found.filter == repository.ANY_FILTER and "ptc" in repository.CALIB_TYPES
    assert repository.read_ptc(path) == AMPS
    with fits.open(path) as hdus:
        assert (hdus[0].header["CALIBTYP"], hdus[0].header["DETECTOR"], hdus[0].header["FILTER"]) == ("ptc", 98, "any")
        assert (hdus[0].header["VALIDSTA"], hdus[0].header["VALIDEND"]) == (start, end)
        assert list(hdus[1].data["amplifier"]) == CAMERA_ORDER
    with pytest.raises(repository.MissingCalibration):
        repository.find_calibration(tmp_path, "LSSTCam", "ptc", 98, "r_57", end + 1)


def test_a_ptc_lacking_an_amplifier_is_refused_naming_it(tmp_path: Path) -> None:
    """read_ptc checks all 16 segments are there."""
    from streams.data import repository
    path = tmp_path / "ptc.fits"
    repository.write_ptc(path, isr.AmpCalibration({k: v for k, v in GAINS.items() if k != "Segment07"},
                                                  {k: v for k, v in READ_NOISE.items() if k != "Segment07"}), 98, 0, 1)
    with pytest.raises(ValueError, match="Segment07"):
        repository.read_ptc(path)
    with pytest.raises(ValueError, match="read noise"):
        repository.write_ptc(path, isr.AmpCalibration(dict(GAINS), {}), 98, 0, 1)
    with pytest.raises(ValueError, match="gain of Segment10"):
        isr.AmpCalibration({"Segment10": 0.0}, {})


def damage_card(path: Path, extname: str, card: fits.Card, damaged: fits.Card) -> None:
    """Overwrite one 80-character card in the header of a segment, in the file's bytes."""
    with fits.open(path) as hdus:
        where = hdus.fileinfo(hdus.index_of(extname))
    data = bytearray(path.read_bytes())
    start = data.index(card.image.encode(), where["hdrLoc"], where["datLoc"])
    data[start:start + 80] = damaged.image.encode()
    path.write_bytes(bytes(data))


def test_a_negative_naxis_is_refused_without_looping(tmp_path: Path) -> None:
    """astropy reads a negative NAXIS2 as a step back and yields the same HDU forever: refused, not hung."""
    g = SMALL["E2V"]
    path = tmp_path / "raw.fits"
    camera_raw("E2V", g).writeto(path)
    damage_card(path, "Segment03", fits.Card("NAXIS2", g.naxis2), fits.Card("NAXIS2", -g.naxis2))
    with pytest.raises(isr.RawFormatError, match=f"NAXIS2 is '-{g.naxis2}', not a FITS size"):
        isr.read_raw(path)


@pytest.mark.parametrize(("compressed", "keyword"), [(False, "NAXIS"), (True, "ZNAXIS"), (True, "TFIELDS")])
def test_an_absurd_axis_count_is_refused_before_astropy_loops_over_it(compressed: bool, keyword: str) -> None:
    """astropy builds an HDU by looping over its NAXIS (ZNAXIS, TFIELDS) axes: 2**63 - 1 of them would hang the
    pipeline. FITS allows 0 to 999: anything else is a RawFormatError naming the card."""
    data = set_card(to_bytes(camera_raw("ITL", SMALL["ITL"], compressed=compressed)), "Segment16", keyword, 2**63 - 1)
    with pytest.raises(isr.RawFormatError, match=f"HDU 7: {keyword} is '9223372036854775807', not a FITS count "
                       r"\(0 to 999\)"):
        isr.read_raw(data)


def test_a_huge_compressed_segment_is_refused_before_decompression(tmp_path: Path) -> None:
    """A damaged ZNAXIS2 would make the decompressor allocate gigabytes: an OversizedRawError naming it first."""
    g = SMALL["ITL"]
    path = tmp_path / "raw.fits"
    camera_raw("ITL", g, compressed=True).writeto(path)
    damage_card(path, "Segment16", fits.Card("ZNAXIS2", g.naxis2), fits.Card("ZNAXIS2", 99_999_999))
    with pytest.raises(isr.OversizedRawError, match="Segment16: NAXIS1 x NAXIS2"):
        isr.read_raw(path)


@pytest.mark.parametrize(("cards", "error", "reason"), [
    ({"ZCMPTYPE": "GZIP_1"}, isr.OversizedRawError, "Segment16: GZIP_1 tile compression, whose output no header"),
    ({"ZCMPTYPE": "GZIP_2"}, isr.OversizedRawError, "Segment16: GZIP_2 tile compression"),
    ({"ZCMPTYPE": "HCOMPRESS_1"}, isr.OversizedRawError, "Segment16: HCOMPRESS_1 tile compression"),
    ({"ZNAXIS1": 2048, "ZNAXIS2": 2048, "ZTILE1": 1}, isr.OversizedRawError,
     "Segment16: 4194304 tiles of 1 x 1 pixels, more than any segment has"),
    ({"ZTILE1": 0}, isr.RawFormatError, r"Segment16: tiles of \[1, 0\] pixels"),
    ({"ZBITPIX": 24}, isr.RawFormatError, "HDU 7: ZBITPIX is '24', not one of 8, 16, 32, 64, -32, -64"),
])
def test_a_compressed_segment_is_checked_before_any_tile_is_decoded(cards: dict[str, int | str],
                                                                    error: type[isr.RawFormatError],
                                                                    reason: str) -> None:
    """A compression that can inflate without bound (gzip: a few KB to gigabytes), millions of tiles each decoded
    in a Python step, a zero tile or a pixel type FITS does not have: refused from the header, naming the
    segment."""
    data = to_bytes(camera_raw("ITL", SMALL["ITL"], compressed=True))
    for keyword, value in cards.items():
        data = set_card(data, "Segment16", keyword, value)
    with pytest.raises(error, match=reason):
        isr.read_raw(data)


# ---------------------------------------------------------------------------------------------------------------
# Calibration reductions take the ptc


def test_a_master_bias_is_reduced_with_the_ptc_in_dm_frame() -> None:
    """reduce() assembles each raw with the ptc's gains: the master is the known image, in DM's frame."""
    from streams.science import calibration

    vendor, g = "E2V", SMALL["E2V"]
    raws = [isr.read_raw(to_bytes(camera_raw(vendor, g, seed=seed))) for seed in (5, 6, 7)]
    master = calibration.reduce("bias", raws, AMPS)
    residual = master - known_image(g)
    assert abs(float(np.median(residual))) < 0.5 and float(np.abs(residual).max()) < 40
    with pytest.raises(ValueError, match="Segment00"):
        calibration.reduce("bias", raws, isr.AmpCalibration({k: v for k, v in GAINS.items() if k != "Segment00"}, {}))


def test_the_calibration_pipeline_needs_the_detector_s_ptc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ptc valid for the detector: NonRetriableError naming it; with one, the master is made from its gains."""
    from dataclasses import replace

    from streams.config import Settings
    from streams.data import repository
    from streams.errors import NonRetriableError
    from streams.pipelines.calibration import CalibrationPipeline
    from streams.serde.records import DetectorProgress

    vendor, g = "E2V", SMALL["E2V"]
    raws = [isr.read_raw(to_bytes(camera_raw(vendor, g, seed=seed))) for seed in (5, 6, 7)]
    when = 1.796e9
    pipeline = CalibrationPipeline("bias", replace(Settings(), data_root=str(tmp_path)))
    monkeypatch.setattr(pipeline.science, "raws", lambda progress: raws)
    progress = DetectorProgress(instrument="LSSTCam", group_id="g", detector=98, next_visit_time=when)
    with pytest.raises(NonRetriableError, match="no ptc for LSSTCam detector 98"):
        pipeline.run(progress)
    repository.write_ptc(repository.calibration_path(tmp_path, "LSSTCam", "ptc", 98, repository.ANY_FILTER,
                                                     when - 86400, when + 86400), AMPS, 98, when - 86400, when + 86400)
    outcome = pipeline.run(progress)
    master = repository.read_calibration(repository.find_calibration(tmp_path, "LSSTCam", "bias", 98, "any",
                                                                      when).path)
    assert abs(float(np.median(master - known_image(g)))) < 0.5 and outcome.metrics["calibInputs"] == 3.0
