"""Where the camera puts raws under the data root: found by exposure and detector, for OCPS jobs.

Apart from `streams.data.repository` (calibrations and templates, FITS and WCS): finding raws is path
logic, and the worker that answers a job request must not load the science stack to do it.
"""

from __future__ import annotations

from pathlib import Path

from streams.core.focal_plane import detector_name


def find_raws(root: Path, instrument: str, exposures: list[int],
              detectors: list[int]) -> dict[tuple[int, int], str]:
    """The file URI of each raw found, by (detector, exposure id), where the camera's naming puts it.

    An exposure id is day_obs * 100000 + sequence number, and its obs_id ends in
    `_<day_obs>_<sequence:06d>` whatever its prefix (MC_O, MC_C, ...): one folder listing per exposure.
    """
    found: dict[tuple[int, int], str] = {}
    names = {detector_name(instrument, detector): detector for detector in detectors}
    for exposure in exposures:
        day_obs, sequence = divmod(exposure, 100_000)
        stem = f"_{day_obs}_{sequence:06d}"
        for path in (root / "raw" / instrument / str(day_obs)).glob(f"*{stem}/*{stem}_R??_S??.fits"):
            detector = names.get(path.stem.rsplit(stem + "_", 1)[-1])
            if detector is not None:
                found[detector, exposure] = path.as_uri()
    return found
