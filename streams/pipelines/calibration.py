"""Calibration pipelines: a sequence's exposures of one detector become a certified master.

The exposures of a calibration sequence are one group (the nextVisit's `nimages` is the number
of exposures), so all of a detector's exposures meet in its partition, as a visit's snaps do.
Each is corrected ISR-only (overscan, and the gains of the detector's ptc calibration; the bias for
darks; bias and dark for flats),
they are combined, and the master is written into the calibration repository, valid from the
sequence's time for VALIDITY_DAYS. The gather announces it on the calibration-products topic;
the next visits' preload finds it, as the newest valid master.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from astropy.stats import mad_std

from streams.config import Settings
from streams.data import repository
from streams.errors import NonRetriableError
from streams.pipelines.base import Outcome
from streams.pipelines.science import raw_filter, science
from streams.science import calibration
from streams.serde.records import DetectorProgress

VALIDITY_DAYS = 30.0


class CalibrationPipeline:
    """Makes one kind of master calibration."""

    def __init__(self, kind: str, settings: Settings) -> None:
        self.kind = kind
        self.name = f"calib-{kind}"
        self.science = science(settings)

    def preload(self, progress: DetectorProgress) -> dict[str, float]:
        """Nothing to fetch ahead: the inputs are the sequence's own raws."""
        return {}

    def run(self, progress: DetectorProgress) -> Outcome:
        """Reduce the sequence and certify the master.

        Raises:
            NonRetriableError: no valid ptc (the gains) for the detector, a dark or flat sequence with no valid
                bias (or dark) to remove, or a ptc that cannot be read or lacks an amplifier; a flat whose raw's
                FILTER is not a plain name (it becomes part of the master's file name: naming the file and value).
            UnsafePath: the master's path would resolve outside the repository's calib folder.
        """
        raws = self.science.raws(progress)
        root, when = self.science.root, progress.next_visit_time
        needed = {"bias": (), "dark": ("bias",), "flat": ("bias", "dark")}[self.kind]
        filter_name = raw_filter(raws[0], progress, repository.ANY_FILTER) if self.kind == "flat" \
            else repository.ANY_FILTER
        try:
            ptc = repository.find_calibration(root, progress.instrument, "ptc", progress.detector,
                                              repository.ANY_FILTER, when)
            inputs = {kind: repository.read_calibration(repository.find_calibration(
                root, progress.instrument, kind, progress.detector, filter_name, when).path) for kind in needed}
        except repository.MissingCalibration as missing:
            raise NonRetriableError(f"cannot make a {self.kind}: {missing}") from missing
        try:
            amps = repository.read_ptc(ptc.path)
            master = calibration.reduce(self.kind, raws, amps, inputs.get("bias"), inputs.get("dark"))
        except ValueError as bad:  # a broken ptc, or calibrations that do not fit the raws: retrying cannot help
            raise NonRetriableError(f"cannot make a {self.kind}: {bad}") from bad
        end = when + VALIDITY_DAYS * 86400
        path = repository.calibration_path(root, progress.instrument, self.kind, progress.detector, filter_name,
                                           when, end)
        repository.write_calibration(path, master, self.kind, progress.detector, filter_name, when, end, len(raws),
                                     root=root)
        finite = master[np.isfinite(master)]
        return Outcome(metrics={"calibInputs": float(len(raws)), "calibMedian": float(np.median(finite)),
                                "calibNoise": float(mad_std(finite)),
                                "calibInvalidPixels": float(master.size - finite.size),
                                "validStart": when, "validEnd": end},
                       output_uris=[Path(path).as_uri()])
