"""Instrument signature removal: overscan, gain, bias, dark, flat, then the snaps combined.

A raw is one CCD as LSSTCam (also LSSTComCam, LATISS) writes it, for E2V and ITL sensors (facts in
the project's reference `lsstcam_raw_format.md`):

- the primary header has no pixels; it names the detector by RAFTBAY and CCDSLOT (no DETNAME or
  DETECTOR), the vendor by CCD_MANU, and holds EXPTIME, FILTBAND/FILTER and the boresight (RA, DEC, ROTPA);
- 16 amplifier HDUs, found by EXTNAME (`Segment10..17, Segment07..00`) wherever they are and whether
  plain or RICE tile-compressed; other HDUs (REB_COND, CONFIG_COND) are ignored;
- each segment is in readout order: serial prescan (DATASEC x1 - 1 columns), data (DATASEC), serial
  overscan (after DATASEC x2 up to NAXIS1); data rows, then parallel overscan rows (after DATASEC y2);
- the camera writes no BIASSEC, GAIN or RDNOISE: the overscan is inferred from DATASEC and NAXIS1, as
  obs_lsst does, and gains and read noise come from the detector's `ptc` calibration (`AmpCalibration`).

The CCD is assembled in DM's frame (cameraGeom), not in the frame of the header's DETSEC. The two are a
y-mirror of each other (DM-36115): DM y = (NY + 1) - DETSEC y, NY from DETSIZE. DM's frame is chosen
because the calibrations, the camera's own CCD_SERPAR WCS and everything DM produces are in it, and
simulated (imSim) raws already write DETSEC in it. DETSEC is still honoured, reversed ranges included:
its mirror must give exactly the place and flips `amplifiers.dm_placement` gives, else the raw is
refused (SectionError) rather than assembled in a frame nobody else uses; this also refuses raws in
imSim's convention, whose DETSEC is already DM's.

Nothing is decoded before the headers have bounded what decoding takes: at most MAX_DECODED_BYTES for the 16
segments, in a bounded number of tiles, of a compression whose decoder writes no more than a tile. A small file
that would decompress to gigabytes (a decompression bomb) is an OversizedRawError, which fails its CCD.

Each amplifier is corrected on its own, so ISR splits cleanly across cores.
"""

from __future__ import annotations

import io
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from streams.core.focal_plane import detector_id
from streams.errors import InvalidEventError, NonRetriableError
from streams.science import amplifiers
from streams.science.geometry import AMP_COLUMNS, AMP_ROWS, CcdShape

SECTION = re.compile(r"^\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]$")
SEGMENT_NAME = re.compile(r"^segment([01][0-7])$", re.IGNORECASE)
INSTRUMENTS = {"lsstcam": "LSSTCam", "lsstcomcam": "LSSTComCam", "latiss": "LATISS"}
"""INSTRUME (any case) -> the instrument's canonical name."""
OVERSCAN_SKIP = 2
"""Serial overscan columns next to the data that hold CTI trailing, left out of the level..."""
OVERSCAN_SKIP_ABOVE = 4
"""...when the overscan has more columns than this (else every column is needed)."""
MAX_HDUS = 64
"""A raw has 19 HDUs; more means a damaged header (astropy reads a negative NAXIS as a step back, forever)."""
MAX_AXES = 999
"""The most axes (NAXIS, ZNAXIS) or table columns (TFIELDS) FITS allows."""
BLOCK = 2880
"""FITS headers and data come in blocks of this many bytes."""
STRUCTURAL = re.compile(r"Z?NAXIS\d{0,3}|Z?BITPIX|[PG]COUNT|TFIELDS|THEAP|ZTILE\d{1,3}")
"""The cards that size an HDU's data (or its compressed image's), whose values astropy trusts."""
MAX_SEGMENT_PIXELS = 1 << 22
"""NAXIS1 x NAXIS2 above this (3.5 times a real 576 x 2048 segment) is refused before any pixel is decoded: a
damaged header of a compressed segment could otherwise make the decompressor allocate gigabytes."""
MAX_DECODED_BYTES = 1 << 28
"""The 16 segments' pixels, decoded, above this many bytes (256 MiB; a real raw's are 75.5 MB) are refused from
the headers, before any pixel is decoded: the bound holds whatever the file's own size."""
MAX_SEGMENT_TILES = 1 << 14
"""Tiles of one compressed segment (a real one has 2048, of one row each): astropy decodes them one by one in
Python, so millions of one-pixel tiles would take minutes."""
BOUNDED_COMPRESSION = ("RICE_1", "PLIO_1", "NOCOMPRESS")
"""Tile compressions whose decoder writes at most one tile's pixels (the camera writes RICE_1). GZIP_1 and GZIP_2
(also the GZIP_COMPRESSED_DATA column) inflate with no bound, so 1 MB can hold gigabytes; HCOMPRESS_1 is lossy,
no camera writes it, and it is not trusted either."""
BITPIX_BYTES = {8: 1, 16: 2, 32: 4, 64: 8, -32: 4, -64: 8}
"""Bytes per pixel of each FITS BITPIX."""
CR_SIGMA = 5.0
"""A pixel brighter by this many sigma in one snap than in the other holds a cosmic ray."""


class RawFormatError(NonRetriableError, ValueError):
    """The file is not a raw this pipeline can read."""


class MissingSegmentError(RawFormatError):
    """An amplifier's Segment HDU is missing (or there twice, or not an image)."""


class SectionError(RawFormatError):
    """DATASEC, DETSEC, DETSIZE and NAXIS of a segment disagree with each other or with cameraGeom."""


class CorruptRawError(RawFormatError):
    """A segment's pixels cannot be read (e.g. a corrupt RICE tile)."""


class NotLsstCamError(RawFormatError):
    """Not a raw of LSSTCam, LSSTComCam or LATISS, or it does not say which detector it is."""


class OversizedRawError(RawFormatError):
    """The headers declare more pixels, tiles or bytes than a raw holds, or a compression whose output no header
    bounds: refused before any pixel is decoded (a decompression bomb, or a damaged header)."""


@dataclass(frozen=True)
class Amplifier:
    """One amplifier as read: its data section and serial overscan (ADU, readout order) and where it lands."""

    name: str
    pixels: np.ndarray
    """The data section, float32 ADU, (rows, columns) as stored (readout order)."""
    overscan: np.ndarray
    """All serial overscan columns of the data rows, float32 ADU."""
    placement: amplifiers.Placement
    """Where the data lands in DM's frame, and its flips."""


def _value(header: fits.Header, key: str, where: str, error: type[RawFormatError] = RawFormatError) -> Any:
    """A keyword's value, None if absent; a card astropy cannot parse (it says so only when read) is `error`."""
    try:
        return header.get(key)
    except fits.VerifyError as bad:
        raise error(f"{where}: the {key} card cannot be parsed ({bad})") from bad


def _header_float(header: fits.Header, key: str) -> float:
    """A numeric primary header keyword; RawFormatError (not KeyError) when missing or not a number."""
    value = _value(header, key, "the primary header")
    try:
        return float(value)
    except (TypeError, ValueError) as error:
        raise RawFormatError(f"the raw has no numeric {key} (it is {value!r})") from error


@dataclass(frozen=True)
class Raw:
    """One snap of one detector, as read."""

    header: fits.Header
    """The primary header."""
    amplifiers: list[Amplifier]
    """The 16 amplifiers, in amplifiers.SEGMENTS order; their placements tile `shape`."""
    shape: tuple[int, int]
    """(rows, columns) of the assembled CCD."""
    instrument: str
    detector: int
    vendor: str

    @property
    def exposure_time(self) -> float:
        """EXPTIME [s]."""
        return _header_float(self.header, "EXPTIME")

    @property
    def boresight(self) -> tuple[float, float, float]:
        """(RA, DEC, ROTPA) in degrees: the raw has no celestial WCS, DM builds one from these and cameraGeom."""
        return (_header_float(self.header, "RA"), _header_float(self.header, "DEC"),
                _header_float(self.header, "ROTPA"))

    @property
    def band(self) -> str:
        """FILTBAND, else the first letter of FILTER (e.g. r_57 -> r)."""
        for key in ("FILTBAND", "FILTER"):
            value = str(_value(self.header, key, "the primary header") or "").strip()
            if value:
                return value if key == "FILTBAND" else value[0]
        raise RawFormatError("the raw has neither FILTBAND nor FILTER")


@dataclass(frozen=True)
class AmpCalibration:
    """The detector's per-amplifier `ptc` calibration: gains [e-/ADU] and read noise [e-], by segment name.

    Raises:
        ValueError: a gain that is not positive, or a read noise that is negative (or not finite).
    """

    gains: dict[str, float]
    read_noise: dict[str, float]

    def __post_init__(self) -> None:
        """Refuse values that would silently turn an image into nonsense."""
        for name, gain in self.gains.items():
            if not (np.isfinite(gain) and gain > 0):
                raise ValueError(f"the gain of {name} is {gain}: it must be a positive number of e-/ADU")
        for name, noise in self.read_noise.items():
            if not (np.isfinite(noise) and noise >= 0):
                raise ValueError(f"the read noise of {name} is {noise}: it must be a number of e- >= 0")

    def gain_of(self, segment: str) -> float:
        """The segment's gain [e-/ADU]; ValueError naming it if the calibration lacks it."""
        if segment not in self.gains:
            raise ValueError(f"the ptc calibration has no gain for {segment}")
        return float(self.gains[segment])

    def read_noise_of(self, segment: str) -> float:
        """The segment's read noise [e-]; ValueError naming it if the calibration lacks it."""
        if segment not in self.read_noise:
            raise ValueError(f"the ptc calibration has no read noise for {segment}")
        return float(self.read_noise[segment])


@dataclass(frozen=True)
class Calibrations:
    """Calibrations of one detector: master bias [e-], dark [e-/s], flat (mean 1), all in DM's frame, and the
    per-amplifier gains and read noise."""

    bias: np.ndarray
    dark: np.ndarray
    flat: np.ndarray
    amps: AmpCalibration


@dataclass(frozen=True)
class _Section:
    """A FITS section as written: 1-based, inclusive, x1 > x2 (or y1 > y2) for a reversed range."""

    x1: int
    x2: int
    y1: int
    y2: int

    @property
    def width(self) -> int:
        """Columns covered."""
        return abs(self.x2 - self.x1) + 1

    @property
    def height(self) -> int:
        """Rows covered."""
        return abs(self.y2 - self.y1) + 1

    @property
    def ascending(self) -> bool:
        """Neither range reversed."""
        return self.x1 <= self.x2 and self.y1 <= self.y2

    def __str__(self) -> str:
        return f"[{self.x1}:{self.x2},{self.y1}:{self.y2}]"


def _section(header: fits.Header, key: str, hdu: str, fallback: fits.Header | None = None) -> _Section:
    """A section keyword of the HDU (or of `fallback`, the primary, for DETSIZE in 2019-2021 files)."""
    text = _value(header, key, hdu, SectionError)
    if text is None and fallback is not None:
        text = _value(fallback, key, "the primary header", SectionError)
    match = SECTION.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise SectionError(f"{hdu}: {key} is {text!r}, not a section like [1:509,1:2000]")
    section = _Section(*(int(v) for v in match.groups()))
    if min(section.x1, section.x2, section.y1, section.y2) < 1:
        raise SectionError(f"{hdu}: {key} {section} has a 0: sections are 1-based")
    return section


def _naxis(header: fits.Header, hdu: str) -> tuple[int, int]:
    """(NAXIS1, NAXIS2) of an image HDU."""
    naxis = [_value(header, key, hdu, SectionError) for key in ("NAXIS", "NAXIS1", "NAXIS2")]
    if naxis[0] != 2 or not all(isinstance(n, int) and n > 0 for n in naxis[1:]):
        raise SectionError(f"{hdu}: NAXIS, NAXIS1, NAXIS2 are {naxis}: a segment is a 2-d image")
    return int(naxis[1]), int(naxis[2])


def _decoded_bytes(name: str, hdu: fits.ImageHDU | fits.CompImageHDU) -> int:
    """The bytes the segment's pixels take once decoded, from its header and tile table alone.

    Raises:
        SectionError: not a 2-d image.
        OversizedRawError: more pixels or tiles than any segment has, or a compression whose output no header
            bounds.
        CorruptRawError: the tile table of a compressed segment cannot be read.
    """
    naxis1, naxis2 = _naxis(hdu.header, name)
    if naxis1 * naxis2 > MAX_SEGMENT_PIXELS:
        raise OversizedRawError(f"{name}: NAXIS1 x NAXIS2 = {naxis1} x {naxis2}, more than any amplifier segment "
                                f"({MAX_SEGMENT_PIXELS} pixels)")
    if isinstance(hdu, fits.CompImageHDU):
        check_tiles(name, hdu, naxis1, naxis2)
    return naxis1 * naxis2 * BITPIX_BYTES[hdu.header["BITPIX"]]  # one of them: `_check_structure`


def check_tiles(name: str, hdu: fits.CompImageHDU, naxis1: int, naxis2: int) -> None:
    """A compressed image (a segment, or an image to ingest) decodes to at most its declared pixels, in a bounded
    number of tiles.

    Raises:
        OversizedRawError: a compression that can inflate without bound, or too many tiles.
        CorruptRawError: its tile table cannot be read.
        RawFormatError: tiles that are not 2-d, or not positive.
    """
    if hdu.compression_type not in BOUNDED_COMPRESSION:
        raise OversizedRawError(f"{name}: {hdu.compression_type} tile compression, whose output no header bounds "
                                f"(accepted: {', '.join(BOUNDED_COMPRESSION)})")
    tile = [int(size) for size in hdu.tile_shape]
    if len(tile) != 2 or min(tile) < 1:
        raise RawFormatError(f"{name}: tiles of {tile} pixels (ZTILE2, ZTILE1): a tile is at least 1 x 1")
    tiles = -(-naxis2 // tile[0]) * -(-naxis1 // tile[1])
    if tiles > MAX_SEGMENT_TILES:
        raise OversizedRawError(f"{name}: {tiles} tiles of {tile[0]} x {tile[1]} pixels, more than any segment has "
                                f"({MAX_SEGMENT_TILES})")
    try:
        columns = hdu.compressed_data.dtype.names or ()
    except Exception as error:  # astropy raises OSError, ValueError, TypeError... on a truncated table
        raise CorruptRawError(f"{name}: its tile table cannot be read ({type(error).__name__}: {error})") from error
    if "GZIP_COMPRESSED_DATA" in columns:
        raise OversizedRawError(f"{name}: has GZIP_COMPRESSED_DATA tiles, whose output no header bounds")


def _placement(name: str, detsec: _Section, detsize: _Section, vendor: str, datasec: _Section) -> amplifiers.Placement:
    """Where DETSEC, mirrored in y into DM's frame, puts the segment; SectionError unless cameraGeom agrees."""
    ny = detsize.y2
    y1, y2 = ny + 1 - detsec.y1, ny + 1 - detsec.y2  # DM y = (NY + 1) - DETSEC y (DM-36115)
    found = amplifiers.Placement(rows=slice(min(y1, y2) - 1, max(y1, y2)),
                                 columns=slice(min(detsec.x1, detsec.x2) - 1, max(detsec.x1, detsec.x2)),
                                 flip_x=detsec.x1 > detsec.x2, flip_y=y1 > y2)
    layout = amplifiers.layout(vendor, CcdShape(AMP_ROWS * datasec.height, AMP_COLUMNS * datasec.width))
    expected = amplifiers.dm_placement(name, vendor, layout)
    if found != expected:
        raise SectionError(f"DETSEC {detsec} of {name} puts it at {_describe(found)} in DM's frame (y mirrored), "
                           f"where cameraGeom has {_describe(expected)} for {vendor}: not a camera raw's DETSEC "
                           "(an imSim-convention raw?)")
    return found


def _describe(place: amplifiers.Placement) -> str:
    """A placement in words, for messages (0-based rows and columns)."""
    flips = [axis for axis, flipped in (("x", place.flip_x), ("y", place.flip_y)) if flipped]
    return (f"rows {place.rows.start}:{place.rows.stop}, columns {place.columns.start}:{place.columns.stop}, "
            f"{'flipped in ' + ' and '.join(flips) if flips else 'not flipped'}")


def _read_amplifier(name: str, hdu: fits.ImageHDU | fits.CompImageHDU, primary: fits.Header,
                    vendor: str) -> tuple[Amplifier, _Section]:
    """One segment checked and read: its Amplifier and its DETSIZE."""
    header = hdu.header
    naxis1, naxis2 = _naxis(header, name)
    datasec = _section(header, "DATASEC", name)
    if not datasec.ascending:
        raise SectionError(f"{name}: DATASEC {datasec} is reversed; it is in readout order, always ascending")
    if datasec.x2 > naxis1 or datasec.y2 > naxis2:
        raise SectionError(f"{name}: DATASEC {datasec} reaches beyond NAXIS1 x NAXIS2 = {naxis1} x {naxis2}")
    if datasec.x2 == naxis1:
        raise SectionError(f"{name}: DATASEC {datasec} ends at NAXIS1 = {naxis1}: no serial overscan to remove")
    detsec = _section(header, "DETSEC", name)
    if (detsec.width, detsec.height) != (datasec.width, datasec.height):
        raise SectionError(f"{name}: DETSEC {detsec} is {detsec.width} x {detsec.height}, DATASEC {datasec} is "
                           f"{datasec.width} x {datasec.height}")
    detsize = _section(header, "DETSIZE", name, primary)
    if detsize.x1 != 1 or detsize.y1 != 1 or not detsize.ascending:
        raise SectionError(f"{name}: DETSIZE {detsize} does not start at [1:..,1:..]")
    if (detsize.x2, detsize.y2) != (AMP_COLUMNS * datasec.width, AMP_ROWS * datasec.height):
        raise SectionError(f"{name}: DETSIZE {detsize} is not {AMP_COLUMNS} x {AMP_ROWS} amplifiers of DATASEC's "
                           f"{datasec.width} x {datasec.height}")
    if max(detsec.x1, detsec.x2) > detsize.x2 or max(detsec.y1, detsec.y2) > detsize.y2:
        raise SectionError(f"{name}: DETSEC {detsec} lies outside DETSIZE {detsize}")
    placement = _placement(name, detsec, detsize, vendor, datasec)
    try:
        data = hdu.data
    except Exception as error:  # astropy's decompressor raises a bare CfitsioException (an Exception) on bad tiles
        raise CorruptRawError(f"{name}: its pixels cannot be read ({type(error).__name__}: {error})") from error
    if data is None or data.shape != (naxis2, naxis1):
        raise CorruptRawError(f"{name}: pixels of shape {None if data is None else data.shape}, the header says "
                              f"{naxis2} x {naxis1}")
    rows = slice(datasec.y1 - 1, datasec.y2)
    pixels = np.asarray(data[rows, datasec.x1 - 1:datasec.x2], dtype=np.float32)
    overscan = np.asarray(data[rows, datasec.x2:naxis1], dtype=np.float32)
    return Amplifier(name, pixels, overscan, placement), detsize


def _identify(header: fits.Header) -> tuple[str, int, str]:
    """(instrument, detector, vendor) from INSTRUME, RAFTBAY, CCDSLOT and CCD_MANU."""
    instrume = _value(header, "INSTRUME", "the primary header", NotLsstCamError)
    instrument = INSTRUMENTS.get(str(instrume).strip().lower()) if instrume is not None else None
    if instrument is None:
        raise NotLsstCamError(f"INSTRUME is {instrume!r}: not LSSTCam, LSSTComCam or LATISS")
    raft, slot = (str(_value(header, key, "the primary header", NotLsstCamError) or "").strip()
                  for key in ("RAFTBAY", "CCDSLOT"))
    missing = [key for key, value in (("RAFTBAY", raft), ("CCDSLOT", slot)) if not value]
    if missing:
        raise NotLsstCamError(f"no {' or '.join(missing)} in the primary header: which {instrument} detector is it?")
    name = f"{raft}_{slot}"
    try:
        detector = detector_id(instrument, name)
    except InvalidEventError as error:
        raise NotLsstCamError(f"RAFTBAY_CCDSLOT {name}: {error}") from error
    manufacturer = _value(header, "CCD_MANU", "the primary header")
    vendor = amplifiers.vendor(instrument, detector) if manufacturer is None else str(manufacturer).strip().upper()
    if vendor not in amplifiers.VENDORS:
        raise RawFormatError(f"CCD_MANU is {manufacturer!r}: not one of {', '.join(amplifiers.VENDORS)}")
    return instrument, detector, vendor


def _segments(hdus: list[Any]) -> dict[str, fits.ImageHDU | fits.CompImageHDU]:
    """The 16 Segment HDUs by canonical name, wherever they are; every other HDU is ignored."""
    found: dict[str, tuple[int, Any]] = {}
    for index, hdu in enumerate(hdus[1:], start=1):
        match = SEGMENT_NAME.match(str(_value(hdu.header, "EXTNAME", f"HDU {index}") or "").strip())
        if match is None:
            continue
        name = f"Segment{match.group(1)}"
        if name in found:
            raise MissingSegmentError(f"{name} is there twice (HDUs {found[name][0]} and {index})")
        if not isinstance(hdu, fits.ImageHDU | fits.CompImageHDU):
            raise MissingSegmentError(f"{name} (HDU {index}) is a {type(hdu).__name__}, not an image")
        found[name] = (index, hdu)
    missing = [name for name in amplifiers.SEGMENTS if name not in found]
    if missing:
        raise MissingSegmentError(f"no {', '.join(missing)} HDU (found {len(found)} of {len(amplifiers.SEGMENTS)} "
                                  "segments)")
    return {name: hdu for name, (_, hdu) in found.items()}


def _check_structure(data: bytes) -> None:
    """The cards astropy sizes each HDU with hold what FITS says they hold, checked on the bytes before astropy reads
    a header: it loops over NAXIS (ZNAXIS, TFIELDS) axes as it builds an HDU, and multiplies BITPIX, GCOUNT, PCOUNT
    and NAXISn, so NAXIS = 2**63 - 1 hangs it and a GCOUNT of 'GZIP_2' times BITPIX -2**31 makes a 13 GB string.
    The headers are walked as astropy walks them (header blocks, then the data size they declare), so no pixel
    byte is scanned.

    Raises:
        RawFormatError: naming the card.
    """
    start = 0
    for index in range(MAX_HDUS + 1):
        cards: dict[str, int] = {}
        end = start
        while end + 80 <= len(data) and data[end:end + 8].rstrip(b" \0") != b"END":
            keyword = data[end:end + 8].decode("ascii", "replace").strip()
            if data[end + 8:end + 10] == b"= " and STRUCTURAL.fullmatch(keyword):
                cards[keyword] = _structural(f"HDU {index}", keyword, data[end + 10:end + 80].split(b"/")[0].strip())
            end += 80
        if end + 80 > len(data):
            return  # no END: astropy says what is wrong with the file
        size = prod(cards.get(f"NAXIS{axis}", 0) for axis in range(1, cards.get("NAXIS", 0) + 1)) \
            if cards.get("NAXIS", 0) else 0
        size = abs(cards.get("BITPIX", 8)) * cards.get("GCOUNT", 1) * (cards.get("PCOUNT", 0) + size) // 8
        start += -(-(end + 80 - start) // BLOCK) * BLOCK + -(-size // BLOCK) * BLOCK


def _structural(hdu: str, keyword: str, value: bytes) -> int:
    """One structural card's value: a FITS BITPIX, an axis or column count of 0 to 999, or a size >= 0.

    Raises:
        RawFormatError: naming the card and its value.
    """
    text = value.decode("ascii", "replace")
    counts = keyword in ("NAXIS", "ZNAXIS", "TFIELDS")
    if keyword.endswith("BITPIX"):
        if not (re.fullmatch(r"-?[0-9]+", text) and int(text) in BITPIX_BYTES):
            raise RawFormatError(f"{hdu}: {keyword} is {text!r}, not one of {', '.join(map(str, BITPIX_BYTES))}")
    elif not (re.fullmatch(r"[0-9]+", text) and (not counts or int(text) <= MAX_AXES)):
        raise RawFormatError(f"{hdu}: {keyword} is {text!r}, not a FITS "
                             f"{f'count (0 to {MAX_AXES})' if counts else 'size'}")
    return int(text)


def read_raw(source: Path | bytes) -> Raw:
    """Read a raw, from a file or from its bytes, checking its sections against cameraGeom.

    Raises:
        NotLsstCamError: not an LSSTCam/LSSTComCam/LATISS raw, or no RAFTBAY/CCDSLOT.
        MissingSegmentError: a Segment HDU missing or duplicated.
        SectionError: DATASEC, DETSEC, DETSIZE and NAXIS inconsistent, or DETSEC not where cameraGeom puts it.
        OversizedRawError: the headers declare more than a raw holds, or an unbounded compression (nothing decoded).
        CorruptRawError: a segment's pixels cannot be read.
        RawFormatError: not a FITS file, or an unknown CCD_MANU.
    """
    where = str(source) if isinstance(source, Path) else "raw bytes"
    try:
        data = source.read_bytes() if isinstance(source, Path) else source
        _check_structure(data)
        opened = fits.open(io.BytesIO(data), memmap=False)
    except RawFormatError as error:
        raise type(error)(f"{where}: {error}") from error
    except Exception as error:  # OSError for most non-FITS input; astropy promises no narrower type
        raise RawFormatError(f"{where}: not a readable FITS file ({type(error).__name__}: {error})") from error
    try:
        with opened:
            hdus: list[Any] = []
            try:  # every header read now: a broken one fails here, not halfway through
                for hdu in opened:
                    hdus.append(hdu)
                    if len(hdus) > MAX_HDUS:
                        break
            except Exception as error:  # astropy raises OSError, ValueError, VerifyError... on a broken file
                raise RawFormatError(f"not a readable FITS file ({type(error).__name__}: {error})") from error
            if len(hdus) > MAX_HDUS:
                raise RawFormatError(f"more than {MAX_HDUS} HDUs: a damaged header")
            if not hdus:
                raise RawFormatError("no HDU at all")
            header = hdus[0].header.copy()
            instrument, detector, vendor = _identify(header)
            segments = _segments(hdus)
            decoded = sum(_decoded_bytes(name, segments[name]) for name in amplifiers.SEGMENTS)
            if decoded > MAX_DECODED_BYTES:
                raise OversizedRawError(f"the segments' pixels would take {decoded} bytes decoded, more than "
                                        f"{MAX_DECODED_BYTES}")
            read = [_read_amplifier(name, segments[name], header, vendor) for name in amplifiers.SEGMENTS]
    except RawFormatError as error:  # the same type, the message saying which raw
        raise type(error)(f"{where}: {error}") from error
    sizes = {str(detsize) for _, detsize in read}
    if len(sizes) > 1:
        raise SectionError(f"{where}: the segments disagree on DETSIZE ({', '.join(sorted(sizes))})")
    detsize = read[0][1]
    return Raw(header, [amp for amp, _ in read], (detsize.y2, detsize.x2), instrument, detector, vendor)


def correct_amplifier(amp: Amplifier, gain: float) -> np.ndarray:
    """The data section in electrons and DM's orientation: the overscan level is taken row by row (median, the
    first OVERSCAN_SKIP columns left out if there are enough), subtracted, times `gain`, then flipped as placed.

    The result may be a view with negative strides (the flips cost nothing).
    """
    overscan = amp.overscan[:, OVERSCAN_SKIP:] if amp.overscan.shape[1] > OVERSCAN_SKIP_ABOVE else amp.overscan
    level = np.median(overscan, axis=1, keepdims=True)
    corrected: np.ndarray = (amp.pixels - level) * np.float32(gain)
    place = amp.placement
    return corrected[::-1 if place.flip_y else 1, ::-1 if place.flip_x else 1]


def assemble(raw: Raw, amps: AmpCalibration, threads: int = 1) -> np.ndarray:
    """The CCD image in electrons, DM's orientation, each amplifier corrected (in parallel with `threads` > 1)
    and put in place.

    Raises:
        ValueError: `amps` lacks one of the raw's segments.
    """
    gains = [amps.gain_of(amp.name) for amp in raw.amplifiers]  # before any work: a missing one fails fast
    image = np.empty(raw.shape, dtype=np.float32)  # read_raw checked that the placements tile it

    def place(amp: Amplifier, gain: float) -> None:
        image[amp.placement.rows, amp.placement.columns] = correct_amplifier(amp, gain)

    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(place, raw.amplifiers, gains))  # the amplifiers' places do not overlap
    else:
        for amp, gain in zip(raw.amplifiers, gains, strict=True):
            place(amp, gain)
    return image


def read_noise_map(raw: Raw, amps: AmpCalibration) -> np.ndarray:
    """Read noise [electrons] of each pixel, from its amplifier's ptc.

    Raises:
        ValueError: `amps` lacks one of the raw's segments.
    """
    noise = np.empty(raw.shape, dtype=np.float32)
    for amp in raw.amplifiers:
        noise[amp.placement.rows, amp.placement.columns] = amps.read_noise_of(amp.name)
    return noise


def remove_instrument(raw: Raw, image: np.ndarray, calibs: Calibrations) -> tuple[np.ndarray, np.ndarray]:
    """(image, variance) in electrons from the raw's assembled image (`assemble`): bias, dark x EXPTIME, flat.

    `image` is corrected in place and returned (it spares a CCD-sized copy per snap).

    Raises:
        ValueError: a calibration of another shape than the raw, or one lacking a segment.
    """
    for kind, data in (("image", image), ("bias", calibs.bias), ("dark", calibs.dark), ("flat", calibs.flat)):
        if data.shape != raw.shape:
            raise ValueError(f"the {kind} is {' x '.join(map(str, data.shape))}, the raw's CCD "
                             f"{raw.shape[0]} x {raw.shape[1]}")
    image -= calibs.bias
    image -= calibs.dark * np.float32(raw.exposure_time)
    variance = np.clip(image, 0, None) + read_noise_map(raw, calibs.amps) ** 2
    image /= calibs.flat
    variance /= calibs.flat ** 2
    return image, variance


def remove_signature(raw: Raw, calibs: Calibrations, threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(image, variance) in electrons: overscan, gain (`assemble`), then bias, dark x EXPTIME, flat.

    Raises:
        ValueError: a calibration of another shape than the raw, or one lacking a segment.
    """
    return remove_instrument(raw, assemble(raw, calibs.amps, threads), calibs)


def combine_snaps(snaps: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, variance, cosmic-ray mask) of the snaps' mean, per-snap units.

    With two snaps, a pixel that is brighter by CR_SIGMA sigma in one snap than in the other is a
    cosmic ray there: the other snap's value is used. With more, the median rejects them; with
    one, nothing can be compared.
    """
    if len(snaps) == 1:
        image, variance = snaps[0]
        return image, variance, np.zeros(image.shape, dtype=bool)
    images = np.stack([s[0] for s in snaps])
    variances = np.stack([s[1] for s in snaps])
    if len(snaps) == 2:
        difference = images[0] - images[1]
        sigma = np.sqrt(variances[0] + variances[1])
        hit_first, hit_second = difference > CR_SIGMA * sigma, -difference > CR_SIGMA * sigma
        image = images.mean(axis=0)
        image[hit_first] = images[1][hit_first]
        image[hit_second] = images[0][hit_second]
        variance = variances.mean(axis=0) / 2
        variance[hit_first | hit_second] = variances[0][hit_first | hit_second]
        return image, variance, hit_first | hit_second
    median = np.median(images, axis=0)
    sigma = np.sqrt(np.median(variances, axis=0))
    hits = np.any(images - median > CR_SIGMA * sigma, axis=0)
    return median, variances.mean(axis=0) * (np.pi / 2) / len(snaps), hits
