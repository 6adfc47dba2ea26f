"""Scoring a simulated visit: which injected transients the DIA source catalogues, or the alerts, recovered."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
from astropy.table import Table

from streams.serde.records import CcdResult

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
    """Compare each AP result's DIA source catalogue with the transients injected on its detector."""
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for result in results:
        catalogs = [u for u in result.output_uris if u.endswith("dia_sources.fits")]
        if result.status == "success" and catalogs:
            sources = Table.read(unquote(urlsplit(catalogs[0]).path))
            found[result.detector] = np.asarray(sources["x"]), np.asarray(sources["y"])
    return score_positions(truth_path, found)


def score_alerts(truth_path: Path, alerts: Iterable[dict[str, Any]], detectors: Iterable[int]) -> Recovery:
    """Compare the alerts' DIA sources with the transients injected on the detectors that were processed (one
    with no alert counts its transients as missed)."""
    positions: dict[int, tuple[list[float], list[float]]] = {detector: ([], []) for detector in detectors}
    for alert in alerts:
        source = alert["diaSource"]
        if source["detector"] in positions:
            positions[source["detector"]][0].append(source["x"])
            positions[source["detector"]][1].append(source["y"])
    return score_positions(truth_path, {d: (np.asarray(x), np.asarray(y)) for d, (x, y) in positions.items()})


def score_positions(truth_path: Path, found: dict[int, tuple[np.ndarray, np.ndarray]]) -> Recovery:
    """Compare the detections (x, y per processed detector) with the transients injected there."""
    truth = Table.read(truth_path, hdu=1)  # the transients; the detectors' true WCS and throughput follow
    bright = recovered = detections = spurious = 0
    for detector, (x, y) in found.items():
        injected = truth[truth["detector"] == detector]
        tx, ty, snr = np.asarray(injected["x"]), np.asarray(injected["y"]), np.asarray(injected["snr"])
        detections += len(x)
        bright += int((snr >= BRIGHT_SNR).sum())
        if not len(x):
            continue
        if not len(tx):
            spurious += len(x)
            continue
        distance = np.hypot(x[:, None] - tx[None, :], y[:, None] - ty[None, :])
        recovered += int(((distance.min(axis=0) <= MATCH_PIXELS) & (snr >= BRIGHT_SNR)).sum())
        spurious += int((distance.min(axis=1) > 2 * MATCH_PIXELS).sum())
    return Recovery(bright, recovered, detections, spurious)
