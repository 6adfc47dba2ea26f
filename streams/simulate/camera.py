"""The camera: a detector's electrons become a raw as LSSTCam writes it.

The raw follows the camera, not DM (see `streams.science.amplifiers` and the project's reference
`lsstcam_raw_format.md`): a primary HDU without pixels and without a celestial WCS (only the nominal
boresight RA, DEC, ROTPA), the detector named by RAFTBAY + CCDSLOT, then 16 `Segment..` HDUs in readout
order (prescan, data, serial overscan; data rows, then parallel overscan) with DATASEC, DETSEC (mirrored in
y from DM's frame, ranges reversed where flipped) and DTV/DTM, no BIASSEC/GAIN/RDNOISE (those come from the
ptc calibration), RICE_1 tile-compressed as in 2025-2026, then the empty REB_COND and CONFIG_COND tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from astropy.io import fits
from astropy.time import Time

from streams.core.focal_plane import detector_name
from streams.science import isr
from streams.science.amplifiers import SEGMENTS, AmpLayout, camera_detsec, dm_placement, layout, vendor
from streams.science.geometry import CcdShape

NOMINAL_NJY_PER_ELECTRON = 10 ** (-0.4 * (32.0 - 31.4))
"""nJy per electron per exposure of a detector of average quantum efficiency: 1 e- from a source of AB magnitude
32.0 (1 nJy is AB 31.4)."""
ADC_MAX = 2 ** 18 - 1
"""The camera's 18-bit ADCs saturate here [ADU]."""
CCD_TYPES = {"ITL": "3800C", "E2V": "CCD250"}
CAMERA_CODES = {"LSSTCam": "MC", "LSSTComCam": "CC", "LATISS": "AT"}
INSTRUME = {"LSSTCam": "lsstCam"}
"""INSTRUME as the camera spells it (other instruments keep their own name)."""
REB_COND_COLUMNS = tuple(f"TEMP{i}" for i in range(1, 11))
_SECTION = re.compile(r"\[(\d+):(\d+),(\d+):(\d+)\]")


@dataclass(frozen=True)
class Detector:
    """What is true of one CCD: its amplifiers' electronics, its calibrations (in electrons, DM's frame) and its
    throughput. The same every visit (seeded by detector), so the masters and templates stay valid."""

    vendor: str
    layout: AmpLayout
    gains: dict[str, float]
    """e-/ADU by segment name."""
    read_noise: dict[str, float]
    """e- by segment name."""
    bias_levels: dict[str, float]
    """ADU by segment name (the level the overscan carries)."""
    bias: np.ndarray
    """Residual bias structure after overscan [e-]."""
    dark: np.ndarray
    """Dark current [e-/s]."""
    flat: np.ndarray
    """Pixel response, mean 1."""
    njy_per_electron: float
    """The throughput: a source of 1 nJy gives 1 / njy_per_electron electrons per exposure."""

    @property
    def shape(self) -> CcdShape:
        """The assembled CCD's imaging area."""
        return self.layout.ccd

    def amp_calibration(self) -> isr.AmpCalibration:
        """The per-amplifier truth the ptc calibration holds (what the ISR needs, since raws carry no GAIN)."""
        return isr.AmpCalibration(gains=dict(self.gains), read_noise=dict(self.read_noise))


def make_detector(rng: np.random.Generator, vendor_name: str, shape: CcdShape | None = None,
                  njy_per_electron: float | None = None) -> Detector:
    """A plausible CCD of the vendor, full size (`shape` None) or small: per-amplifier gains and levels, a bias ramp,
    hot-ish dark, a vignetted flat, and a throughput (drawn unless given)."""
    amp = layout(vendor_name, shape)
    height, width = amp.ccd.height, amp.ccd.width
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    bias = (3.0 * xx - 2.0 * yy).astype(np.float32) + rng.normal(0, 0.5, (height, width)).astype(np.float32)
    dark = np.abs(rng.normal(0.002, 0.001, (height, width))).astype(np.float32)
    flat = (1.0 - 0.06 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2) + 0.03 * xx).astype(np.float32)
    del xx, yy
    flat *= rng.normal(1.0, 0.01, (height, width)).astype(np.float32)
    flat /= flat.mean()
    gains, noise, levels = rng.uniform(1.1, 1.6, 16), rng.uniform(5.0, 7.0, 16), rng.uniform(24000, 26000, 16)
    if njy_per_electron is None:
        njy_per_electron = NOMINAL_NJY_PER_ELECTRON * float(rng.uniform(0.9, 1.1))
    return Detector(vendor_name, amp, gains=dict(zip(SEGMENTS, map(float, gains), strict=True)),
                    read_noise=dict(zip(SEGMENTS, map(float, noise), strict=True)),
                    bias_levels=dict(zip(SEGMENTS, map(float, levels), strict=True)), bias=bias, dark=dark, flat=flat,
                    njy_per_electron=njy_per_electron)


def to_readout(segment: str, detector: Detector, image: np.ndarray) -> np.ndarray:
    """The segment's part of a DM-frame image, in readout order (a flipped amplifier reads its placement's last
    column, or row, first)."""
    place = dm_placement(segment, detector.vendor, detector.layout)
    part = image[place.rows, place.columns]
    return part[::-1 if place.flip_y else 1, ::-1 if place.flip_x else 1]


def expose(rng: np.random.Generator, detector: Detector, sky_electrons: np.ndarray, exposure_time: float,
           cosmic_rays: int = 0) -> list[np.ndarray]:
    """One exposure read out: per segment (in `SEGMENTS` order) its full naxis2 x naxis1 int32 ADU array.

    `sky_electrons` (DM's frame) is the photon signal reaching the CCD; the flat, dark current, Poisson noise,
    cosmic rays and the bias structure are applied here, then each amplifier reads its part in readout order:
    data = electrons / gain + level + noise, the prescan and overscans carry the level and noise only, and the
    level drifts a little along the readout (so the overscan has to be taken row by row).
    """
    signal = sky_electrons * detector.flat + detector.dark * np.float32(exposure_time)
    electrons = rng.poisson(np.clip(signal, 0, None)).astype(np.float32)
    del signal
    height, width = electrons.shape
    for _ in range(cosmic_rays):
        y, x = rng.integers(1, height - 2), rng.integers(1, width - 2)
        length = rng.integers(1, 4)
        electrons[y:y + length, x] += rng.uniform(2000, 20000)
    electrons += detector.bias
    amp = detector.layout
    drift = np.linspace(0, 3, amp.naxis2, dtype=np.float32)[:, None]
    segments = []
    for name in SEGMENTS:
        gain = detector.gains[name]
        adu = rng.normal(0, detector.read_noise[name] / gain, (amp.naxis2, amp.naxis1)).astype(np.float32)
        adu += np.float32(detector.bias_levels[name]) + drift
        data = to_readout(name, detector, electrons) / np.float32(gain)
        adu[:amp.rows, amp.prescan:amp.prescan + amp.columns] += data
        segments.append(np.clip(np.rint(adu), 0, ADC_MAX).astype(np.int32))
    return segments


def obs_id(instrument: str, exposure_id: int, controller: str = "O") -> str:
    """The camera's observation id, e.g. MC_O_20261125_000123 (controller O on sky, C for calibrations)."""
    day_obs, sequence = divmod(exposure_id, 100_000)
    return f"{CAMERA_CODES.get(instrument, 'MC')}_{controller}_{day_obs}_{sequence:06d}"


def raw_key(instrument: str, exposure_id: int, detector: int, controller: str = "O") -> str:
    """Where the camera puts a raw, under the data root's raw/: <instrument>/<day_obs>/<obs_id>/<obs_id>_<detector
    name>.fits (where `streams.data.raws.find_raws` looks)."""
    observation = obs_id(instrument, exposure_id, controller)
    name = detector_name(instrument, detector)
    return f"{instrument}/{exposure_id // 100_000}/{observation}/{observation}_{name}.fits"


def primary_header(instrument: str, detector: int, *, exposure_id: int, group_id: str, snap: int, snaps: int,
                   image_type: str, start: datetime, exposure_time: float, boresight: tuple[float, float, float],
                   filter_name: str, controller: str = "O") -> fits.Header:
    """The primary header the camera writes: the nominal boresight (RA, DEC, ROTPA, as nextVisit said), the
    detector as RAFTBAY + CCDSLOT and its vendor; no celestial WCS, no DETECTOR or DETNAME.

    `start` is the shutter opening (TAI); `snap` counts from 0.
    """
    name = detector_name(instrument, detector)
    made_by = vendor(instrument, detector)
    day_obs, sequence = divmod(exposure_id, 100_000)
    observation = obs_id(instrument, exposure_id, controller)
    date_obs = start.strftime("%Y-%m-%dT%H:%M:%S.") + f"{start.microsecond // 1000:03d}"
    ra, dec, rotation = boresight
    return fits.Header([
        ("DATE-OBS", date_obs), ("MJD-OBS", float(Time(date_obs, scale="tai").mjd)), ("TIMESYS", "TAI"),
        ("IMGTYPE", image_type), ("OBSID", observation), ("GROUPID", group_id),
        ("CURINDEX", snap + 1), ("MAXINDEX", snaps),
        ("INSTRUME", INSTRUME.get(instrument, instrument)),
        ("TELESCOP", "Simonyi Survey Telescope"),
        ("CAMCODE", CAMERA_CODES.get(instrument, "MC")), ("CONTRLLR", controller),
        ("DAYOBS", str(day_obs)), ("SEQNUM", sequence),
        ("RA", float(ra), "nominal boresight [deg]"), ("DEC", float(dec), "nominal boresight [deg]"),
        ("ROTPA", float(rotation), "[deg]"), ("ROTCOORD", "sky"), ("RADESYS", "ICRS"),
        ("CCD_MANU", made_by), ("CCD_TYPE", CCD_TYPES[made_by]), ("CCDSLOT", name[4:]), ("RAFTBAY", name[:3]),
        ("FILTBAND", filter_name.split("_")[0]), ("FILTER", filter_name),
        ("EXPTIME", float(exposure_time), "[s]"), ("DARKTIME", float(exposure_time), "[s]"),
        ("BUNIT", "adu"), ("FILENAME", f"{observation}_{name}.fits"),
    ])


def segment_keywords(segment: str, detector: Detector) -> list[tuple[str, str | int | float]]:
    """The keywords the camera writes in a segment's HDU (EXTNAME in its case, e.g. Segment10), DTV/DTM such that
    det = DTV + DTM * raw (1-based) maps the data section onto DETSEC."""
    amp, shape = detector.layout, detector.shape
    detsec = camera_detsec(segment, detector.vendor, amp)
    match = _SECTION.fullmatch(detsec)
    assert match is not None, detsec
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    dtm1, dtm2 = (-1 if x1 > x2 else 1), (-1 if y1 > y2 else 1)  # a reversed range is a flipped axis
    # raw column prescan + 1 lands on x1, raw row 1 on y1
    dtv1, dtv2 = x1 - dtm1 * (amp.prescan + 1), y1 - dtm2
    return [("CHANNEL", SEGMENTS.index(segment) + 1), ("EXTNAME", segment), ("CCDSUM", "1 1"),
            ("DATASEC", f"[{amp.prescan + 1}:{amp.prescan + amp.columns},1:{amp.rows}]"), ("DETSEC", detsec),
            ("DETSIZE", f"[1:{shape.width},1:{shape.height}]"), ("DTV1", dtv1), ("DTV2", dtv2),
            ("DTM1_1", float(dtm1)), ("DTM2_2", float(dtm2)), ("DTM1_2", 0.0), ("DTM2_1", 0.0)]


def raw_hdus(amps: list[np.ndarray], detector: Detector, header: fits.Header, compress: bool = True) -> fits.HDUList:
    """The raw file: the primary header (see `primary_header`), the 16 segments in the camera's order (RICE_1
    tile-compressed one row per tile, as the camera does since 2025, unless `compress` is false), then the empty
    REB_COND and CONFIG_COND tables."""
    hdus = fits.HDUList([fits.PrimaryHDU(header=header)])
    for segment, data in zip(SEGMENTS, amps, strict=True):
        hdu: fits.ImageHDU | fits.CompImageHDU
        if compress:
            hdu = fits.CompImageHDU(data, compression_type="RICE_1", tile_shape=(1, data.shape[1]))
        else:
            hdu = fits.ImageHDU(data)
        for key, value in segment_keywords(segment, detector):  # EXTNAME set as a keyword keeps the camera's case
            hdu.header[key] = value
        hdus.append(hdu)
    temperatures = [fits.Column(name=name, format="E", array=np.zeros(0, dtype=np.float32))
                    for name in REB_COND_COLUMNS]
    hdus.append(fits.BinTableHDU.from_columns(temperatures, name="REB_COND"))
    hdus.append(fits.BinTableHDU.from_columns([fits.Column(name="CHECKSUM", format="16A", array=np.zeros(0, "S16"))],
                                              name="CONFIG_COND"))
    return hdus
