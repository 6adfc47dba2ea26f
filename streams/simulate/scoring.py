"""Scoring a simulated visit: which injected transients the DIA source catalogs recovered."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from astropy.table import Table

from streams.records import CcdResult

MATCH_PIXELS = 1.0
BRIGHT_SNR = 10.0


@dataclass(frozen=True)
class Recovery:
    """How a visit's detections compare with its truth."""

    bright: int
    """Injected transients with S/N >= 10 on processed detectors."""
    found: int
    """Of those, found within 1 pixel."""
    detections: int
    spurious: int
    """Detections more than 2 pixels from any injected transient."""

    @property
    def completeness(self) -> float:
        """found / bright."""
        return self.found / self.bright if self.bright else float("nan")

    @property
    def purity(self) -> float:
        """1 - spurious / detections."""
        return 1 - self.spurious / self.detections if self.detections else float("nan")


def score(truth_path: Path, results: list[CcdResult]) -> Recovery:
    """Compare each AP result's DIA sources with the transients injected on its detector."""
    truth = Table.read(truth_path)
    bright = found = detections = spurious = 0
    for result in results:
        catalogs = [u for u in result.output_uris if u.endswith("dia_sources.fits")]
        if result.status != "success" or not catalogs:
            continue
        sources = Table.read(unquote(urlsplit(catalogs[0]).path))
        injected = truth[truth["detector"] == result.detector]
        tx, ty, snr = np.asarray(injected["x"]), np.asarray(injected["y"]), np.asarray(injected["snr"])
        detections += len(sources)
        if not len(sources):
            bright += int((snr >= BRIGHT_SNR).sum())
            continue
        distance = np.hypot(np.asarray(sources["x"])[:, None] - tx[None, :],
                            np.asarray(sources["y"])[:, None] - ty[None, :])
        bright += int((snr >= BRIGHT_SNR).sum())
        found += int(((distance.min(axis=0) <= MATCH_PIXELS) & (snr >= BRIGHT_SNR)).sum()) if len(tx) else 0
        spurious += int((distance.min(axis=1) > 2 * MATCH_PIXELS).sum()) if len(tx) else len(sources)
    return Recovery(bright, found, detections, spurious)
