"""A bias sequence becomes a certified master that the next visit's ISR uses."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from astropy.io import fits

from stack.cluster import ClusterState
from streams.data.repository import read_calibration
from streams.ops.workers import WorkerPool
from streams.science import amplifiers
from streams.science.geometry import CcdShape
from streams.serde.records import CalibrationProduct
from streams.simulate.night import plan_night, read_noise, replay, true_bias, write_bias_sequence, write_night
from streams.simulate.visits import Visits, by_group
from tests.integration.settings import isolated_settings

DETECTORS = (0, 94)
BIAS_GROUP = "2026-11-25T01:00:00.000"
EXPOSURES = 5


def path_of(uri: str) -> Path:
    """The local path of a file URI."""
    return Path(unquote(urlsplit(uri).path))


def test_bias_sequence_makes_a_master_used_by_the_next_visit(cluster: ClusterState, tmp_path: Path) -> None:
    """5 biases -> a master with noise ~ read noise / sqrt(5), announced once, then used by AP's ISR."""
    instruments = tmp_path / "instruments.toml"
    instruments.write_text(f'[LSSTCam]\ndetectors = "0-188"\ndisabled = {sorted(set(range(189)) - set(DETECTORS))}\n')
    settings = isolated_settings(cluster, tmp_path, instruments_file=str(instruments))
    root = Path(settings.data_root)
    night = plan_night(1, DETECTORS, CcdShape(512, 512), start=datetime(2026, 11, 25, 2, tzinfo=UTC))
    science_arrivals = write_night(root, night)  # older masters (valid since yesterday), template, raws
    bias_arrivals = write_bias_sequence(root, night, BIAS_GROUP, EXPOSURES, 20261125 * 100_000 + 900)
    pool = WorkerPool(settings, tmp_path / "logs")
    try:
        pool.start("w1")
        visits = Visits(settings, survey="BLOCK-AP365")
        visits.next_visit(BIAS_GROUP, instrument="LSSTCam", survey="CALIB-BIAS", nimages=EXPOSURES, duration=30.0)
        for exposure in bias_arrivals:
            visits.raws(exposure)
        products = [visits.codec.decode(v, CalibrationProduct)
                    for v in visits.read(visits.topics.calibration_products.name, len(DETECTORS), settle=2.0)]
        bias_results = by_group(visits.results(len(DETECTORS), settle=1.0), BIAS_GROUP)
        replay(visits, night, science_arrivals, lead_time=0.5, snap_interval=0.2, visit_interval=0.0)
        science = by_group(visits.results(2 * len(DETECTORS), timeout=180, settle=2.0), night.visits[0].group_id)
    finally:
        pool.stop_all()
    assert {(r.status, r.pipeline) for r in bias_results} == {("success", "calib-bias")}
    assert sorted(p.detector for p in products) == list(DETECTORS), "each master announced once"
    for product in products:
        assert product.calib_type == "bias" and product.inputs == EXPOSURES and product.valid_end > product.valid_start
        residual = read_calibration(path_of(product.uri)) - true_bias(night, product.detector)
        made_by = amplifiers.vendor(night.instrument, product.detector)
        for amp, read in read_noise(night, product.detector).items():  # by segment name, placed as DM places it
            place = amplifiers.dm_placement(amp, made_by, amplifiers.layout(made_by, night.shape))
            noise = np.std(residual[place.rows, place.columns])
            expected = read / np.sqrt(EXPOSURES)
            assert 0.9 < noise / expected < 1.45, f"amp {amp}: noise {noise:.2f} e-, read noise/sqrt(5) {expected:.2f}"
    assert {(r.status, r.pipeline) for r in science} == {("success", "ap")}
    masters = {p.detector: path_of(p.uri).name for p in products}
    for result in science:
        calexp = next(path_of(u) for u in result.output_uris if u.endswith("calexp.fits"))
        assert fits.getheader(calexp)["BIASFILE"] == masters[result.detector], "the new master was used"
