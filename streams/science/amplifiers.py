"""LSSTCam's amplifiers: the segments a raw holds, per sensor vendor, and where each lands on the CCD.

Facts from obs_lsst (`policy/cameraHeader.yaml`, `policy/lsstCam/Rxx.yaml`) and real camera headers
(see the project's reference `lsstcam_raw_format.md`):

- a raw has 16 image HDUs named `Segment10..Segment17, Segment07..Segment00`, 576 x 2048 pixels each,
  in readout order: serial prescan, data, serial overscan along a row; data rows, then the parallel
  overscan rows. Other HDUs (REB_COND, CONFIG_COND) follow and are not amplifiers;
- E2V (CCD250): 10 prescan, 512 x 2002 data, 54 serial and 46 parallel overscan; ITL (3800C): 3 prescan,
  509 x 2000 data, 64 serial and 48 parallel overscan;
- the CCD is assembled in DM's orientation (cameraGeom, LCA-13381): Segment1k at column k of the upper
  half, flipped in x and y; Segment0k at column k of the lower half, flipped in x for ITL only.

The camera's DETSEC is a y-mirror of DM's frame (DM-36115): DM y = (NY + 1) - DETSEC y. The camera's own
CCD_SERPAR WCS agrees with DM, so DM's frame is the one the pipeline assembles in, reading DETSEC with
its reversed ranges and mirroring it (see `streams.science.isr`).

The small layout (data W / 8 x H / 2 per amplifier, vendor prescan, 16 serial and 8 parallel overscan)
is this project's own, for fast tests and demos: the camera has no such mode.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.focal_plane import LSSTCAM_RAFTS
from streams.science.geometry import AMP_COLUMNS, AMP_ROWS, CcdShape

SEGMENTS = tuple(f"Segment1{k}" for k in range(8)) + tuple(f"Segment0{k}" for k in reversed(range(8)))
"""The amplifier HDUs in the order the camera writes them (CHANNEL 1..16)."""
ITL_RAFTS = frozenset({"R01", "R02", "R03", "R10", "R20", "R41", "R42", "R43"})
VENDORS = ("ITL", "E2V")
SMALL_SERIAL_OVERSCAN, SMALL_PARALLEL_OVERSCAN = 16, 8


@dataclass(frozen=True)
class AmpLayout:
    """One amplifier segment's pixels in readout order."""

    prescan: int
    columns: int
    rows: int
    serial_overscan: int
    parallel_overscan: int

    @property
    def naxis1(self) -> int:
        """Pixels per row of the segment."""
        return self.prescan + self.columns + self.serial_overscan

    @property
    def naxis2(self) -> int:
        """Rows of the segment."""
        return self.rows + self.parallel_overscan

    @property
    def ccd(self) -> CcdShape:
        """The assembled CCD's imaging area."""
        return CcdShape(AMP_ROWS * self.rows, AMP_COLUMNS * self.columns)


FULL = {"E2V": AmpLayout(10, 512, 2002, 54, 46), "ITL": AmpLayout(3, 509, 2000, 64, 48)}


def vendor(instrument: str, detector: int) -> str:
    """ITL or E2V: the sensor vendor of a science detector (ComCam and LATISS are ITL)."""
    if instrument != "LSSTCam":
        return "ITL"
    return "ITL" if LSSTCAM_RAFTS[detector // 9] in ITL_RAFTS else "E2V"


def layout(vendor_name: str, shape: CcdShape | None = None) -> AmpLayout:
    """The vendor's segment layout, full size (`shape` None or the vendor's own), or the small one for `shape`."""
    full = FULL[vendor_name]
    if shape is None or shape == full.ccd:
        return full
    if shape.width % AMP_COLUMNS or shape.height % AMP_ROWS:
        raise ValueError(f"a {shape.width} x {shape.height} CCD does not split into {AMP_ROWS} x {AMP_COLUMNS} "
                         "amplifiers")
    return AmpLayout(full.prescan, shape.width // AMP_COLUMNS, shape.height // AMP_ROWS, SMALL_SERIAL_OVERSCAN,
                     SMALL_PARALLEL_OVERSCAN)


@dataclass(frozen=True)
class Placement:
    """Where an amplifier's data section lands on the assembled CCD (0-based numpy slices), and its flips:
    `flip_x` means raw column 0 of the data lands on the slice's last column, likewise `flip_y` for rows."""

    rows: slice
    columns: slice
    flip_x: bool
    flip_y: bool


def dm_placement(segment: str, vendor_name: str, amp: AmpLayout) -> Placement:
    """The segment's place in DM's frame (cameraGeom): Segment1k upper half, flipped in x and y; Segment0k
    lower half, flipped in x for ITL only."""
    half, k = int(segment[-2]), int(segment[-1])
    columns = slice(k * amp.columns, (k + 1) * amp.columns)
    if half == 1:
        return Placement(slice(amp.rows, 2 * amp.rows), columns, True, True)
    return Placement(slice(0, amp.rows), columns, vendor_name == "ITL", False)


def camera_detsec(segment: str, vendor_name: str, amp: AmpLayout) -> str:
    """The DETSEC the camera writes for the segment: DM's place mirrored in y, ranges in readout order
    (reversed where the amplifier is flipped), e.g. ITL Segment10 `[509:1,1:2000]`."""
    place = dm_placement(segment, vendor_name, amp)
    height = AMP_ROWS * amp.rows
    x1, x2 = place.columns.start + 1, place.columns.stop
    y1, y2 = height - place.rows.stop + 1, height - place.rows.start  # the mirror of DM's rows, 1-based
    xs = (x2, x1) if place.flip_x else (x1, x2)
    ys = (y1, y2) if place.flip_y else (y2, y1)  # the mirror turns DM's flip into the camera's non-flip
    return f"[{xs[0]}:{xs[1]},{ys[0]}:{ys[1]}]"
