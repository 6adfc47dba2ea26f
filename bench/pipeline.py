"""The built-in Alert Production's time per full-size LSSTCam CCD (E2V R22_S11, 4096 x 4004), per stage.

    .local/venv/bin/python -m bench.pipeline [--repeat 3]     (or: make bench-pipeline)

Simulates one CCD as the camera writes it (two RICE-compressed snaps, stars, transients, cosmic rays, a
template tile), runs the pipeline `--repeat` times and writes a markdown table to bench/results/pipeline.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from streams.data.refcat import RefStars
from streams.science import isr
from streams.science.alert_production import Template, Timer, calibrate, difference
from streams.science.geometry import detector_wcs
from streams.simulate.camera import make_detector, primary_header
from streams.simulate.observation import Conditions, inject_transients, observe, template_tile
from streams.simulate.scene import random_stars

RESULTS = Path(__file__).parent / "results" / "pipeline.md"
THREADS = (1, min(4, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else 1)


def machine() -> str:
    """What the figures were measured on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def measure(repeat: int) -> list[str]:
    """Simulate one full-size CCD, run the pipeline `repeat` times per thread count; the report's lines."""
    conditions, boresight = Conditions(), (150.0, 2.0, 12.0)
    rng = np.random.default_rng(1)
    detector = make_detector(rng, "E2V")  # R22_S11 (94) is an E2V CCD, at its full size
    shape = detector.shape
    # the truth is off the header's boresight by a pointing error (3", -2", 0.01 deg), as on the sky
    wcs = detector_wcs("LSSTCam", 94, boresight[0] + 3 / 3600, boresight[1] - 2 / 3600, boresight[2] + 0.01, shape)
    ra, dec = (float(v) for v in wcs.all_pix2world(shape.width / 2, shape.height / 2, 0))
    stars = random_stars(rng, ra, dec, 0.2, 6000, detector.njy_per_electron)
    truth = inject_transients(rng, wcs, shape, conditions, 2, njy_per_electron=detector.njy_per_electron)
    headers = [primary_header("LSSTCam", 94, exposure_id=2026112500100 + snap, group_id="2026-11-25T03:00:00.000",
                              snap=snap, snaps=2, image_type="SCIENCE", start=datetime(2026, 11, 25, 3, 0, 17 * snap),
                              exposure_time=conditions.exposure_time, boresight=boresight, filter_name="r_57")
               for snap in range(2)]
    print(f"simulating a {shape.width} x {shape.height} CCD ...", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for snap, hdus in enumerate(observe(rng, detector, wcs, stars, truth, conditions, headers)):
            paths.append(Path(folder) / f"raw{snap}.fits")
            hdus.writeto(paths[-1])
        image, variance, tile_wcs = template_tile(rng, stars, ra + 0.01, dec - 0.01, (5200, 5200), conditions,
                                                  detector.njy_per_electron)
        template = Template(image, variance, tile_wcs, conditions.template_sigma)
        calibs = isr.Calibrations(detector.bias, detector.dark, detector.flat, detector.amp_calibration())
        references = RefStars(stars.ra, stars.dec, stars.flux)
        runs: dict[int, list[tuple[float, dict[str, float], int]]] = {}
        for threads in THREADS:
            runs[threads] = []
            for attempt in range(repeat):
                timer = Timer()
                started = time.perf_counter()
                with timer.step("readRaws"):
                    raws = [isr.read_raw(path) for path in paths]
                calexp = calibrate(raws, calibs, references, timer, threads)
                sources = difference(calexp, [template], timer, threads).sources
                runs[threads].append((time.perf_counter() - started, timer.steps, len(sources)))
                print(f"{threads} thread(s), run {attempt + 1}: {runs[threads][-1][0]:.1f} s, {len(sources)} DIA "
                      "sources", flush=True)
    steps = list(runs[1][0][1])

    def median(threads: int, step: str | None = None) -> float:
        return statistics.median(run[0] if step is None else run[1][step] for run in runs[threads])

    lines = [
        "# Built-in Alert Production: time per full-size CCD", "",
        f"One LSSTCam CCD ({shape.width} x {shape.height} pixels, 16 amplifiers, 2 snaps), median of "
        f"{repeat} runs with 1 and with {THREADS[-1]} threads for the one CCD "
        f"(`PROMPT_STREAMS_CCD_THREADS`). Machine: {machine()}.", "",
        "| stage | 1 thread [s] | " + f"{THREADS[-1]} threads [s] |", "|---|---|---|",
        *(f"| {step} | {median(1, step):.2f} | {median(THREADS[-1], step):.2f} |" for step in steps),
        f"| **total** | **{median(1):.2f}** | **{median(THREADS[-1]):.2f}** "
        f"(x{median(1) / median(THREADS[-1]):.2f}) |", "",
        f"{runs[1][0][2]} DIA sources from {len(truth.x)} injected transients. Astrometry: "
        f"{calexp.astrometry.matches} reference stars matched, rms {calexp.astrometry.rms_arcsec:.3f} arcsec "
        f"(fitted: {calexp.astrometry.fitted}); zero point {calexp.photo_calib.zero_point:.3f} on "
        f"{calexp.photo_calib.stars} stars, nJy per electron {calexp.photo_calib.njy_per_electron:.4f} against "
        f"{detector.njy_per_electron:.4f} true. Budget: alerts within 60 s of shutter close.",
    ]
    return lines


def main() -> int:
    """Simulate, run, report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lines = measure(args.repeat)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
