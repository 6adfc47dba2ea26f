"""The science payload end to end: a simulated night through a worker running the real pipelines."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from stack.cluster import ClusterState
from streams.ops.workers import FAUST, WorkerPool
from streams.science.geometry import CcdShape
from streams.simulate.night import plan_night
from streams.simulate.scoring import score
from streams.simulate.visits import Visits, by_group
from tests.integration.settings import isolated_settings

DETECTORS = (0, 94, 188)


def test_simulated_night_runs_alert_production_with_fallback(cluster: ClusterState, tmp_path: Path) -> None:
    """Two visits: the first finds its transients with `ap`; the second, without a template, runs `single-frame`."""
    instruments = tmp_path / "instruments.toml"  # only the three simulated detectors are switched on
    disabled = sorted(set(range(189)) - set(DETECTORS))
    instruments.write_text(f'[LSSTCam]\ndetectors = "0-188"\ndisabled = {disabled}\n')
    settings = isolated_settings(cluster, tmp_path, instruments_file=str(instruments))
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        pool.start("w1")
        command = [str(FAUST), "-A", "streams.app", "simulate-night", "--visits", "2", "--detectors", "0,94,188",
                   "--size", "512", "--lead-time", "1", "--snap-interval", "0.5", "--visit-interval", "0.5",
                   "--survey", "BLOCK-AP365", "--without-template", "1", "--start", "2026-11-25T03:00:00"]
        done = subprocess.run(command, env=os.environ | settings.to_env(), capture_output=True, text=True,
                              timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        visits = Visits(settings)
        results = visits.results(6, timeout=240, settle=2.0)
        summaries = visits.summaries(2)
    finally:
        pool.stop_all()
    night = plan_night(2, DETECTORS, CcdShape(512, 512), start=datetime(2026, 11, 25, 3, tzinfo=UTC))
    first, second = (by_group(results, v.group_id) for v in night.visits)
    assert {(r.status, r.pipeline) for r in first} == {("success", "ap")}, [r.error_message for r in first]
    assert {(r.status, r.pipeline) for r in second} == {("success", "single-frame")}
    for result in first:
        assert {Path(urlsplit(u).path).name for u in result.output_uris} == {"calexp.fits", "difference.fits",
                                                                            "dia_sources.fits", "alerts.avro"}
        assert all(Path(urlsplit(u).path).is_relative_to(settings.output_root) for u in result.output_uris)
        assert result.metrics["diaSourceCount"] >= 1 and result.metrics["psfFwhm"] > 0
        assert result.metrics["prep_butlerTotalTime"] > 0, "calibrations and templates were preloaded"
    recovery = score(Path(settings.data_root) / "truth" / f"{night.visits[0].group_id}.fits", first)
    assert recovery.bright >= 5 and recovery.completeness >= 0.9 and recovery.purity >= 0.9, recovery
    assert sorted(s.counts["success"] for s in summaries) == [3, 3]
