"""The benchmark harness's arithmetic and report (the runs themselves are `make bench`, never a test)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import fastavro
import numpy as np
import pytest

from bench import report
from bench.alerts import AlertRun, detector_of, dia_source_id
from bench.harness import Spread
from bench.overhead import Overhead
from bench.report import Results, render
from bench.throughput import Rate
from streams.science import association
from streams.serde.codec import frame, write_datum


def test_percentiles_are_observed_values_by_nearest_rank() -> None:
    spread = Spread.of([float(v) for v in range(100, 0, -1)])
    assert (spread.count, spread.p50, spread.p99, spread.max) == (100, 50.0, 99.0, 100.0)
    assert Spread.of([0.004]).p99 == 0.004
    assert math.isnan(Spread.of([]).p50)


def test_rate_counts_what_happened_between_the_first_and_the_last_output() -> None:
    summaries = Rate("Prompt Streams", outputs=201, per_output=189, seconds=10.0)
    assert summaries.results_per_second == 200 * 189 / 10.0
    assert summaries.visits_per_second == 20.0
    assert math.isnan(Rate("x", outputs=1, per_output=189, seconds=0.0).results_per_second)


def test_the_report_has_a_row_for_every_run_and_the_ratios() -> None:
    ms = Spread.of([0.001, 0.002, 0.010])
    overhead = Overhead(2, 50, ms, ms, ms, ms, Spread.of([0.3, 0.4]), rss_start=[100 << 20, 110 << 20],
                        rss_warm=[120 << 20, 120 << 20], rss_end=[125 << 20, 130 << 20], lost=1)
    rates = [Rate("Prompt Streams", 201, 189, 20.0), Rate("Kafka Streams", 201, 189, 5.0),
             Rate("Quix Streams", 201, 189, 10.0), Rate("confluent-kafka ceiling", 37800, 1, 1.0)]
    text = render(Results([overhead], rates, ["# Built-in Alert Production", "| isr | 0.25 |"], 600.0),
                  argparse.Namespace(visits=50))
    assert "| 2 | 50 (1) | 3 | 2.0 / 10.0 / 10.0 |" in text and "| 2 | 300.0 / 400.0 / 400.0 |" in text
    assert "| Kafka Streams | 7560 | 40.0 | 4.00 |" in text
    assert "| Quix Streams | 3780 | 20.0 | 2.00 |" in text
    assert "| overhead run, 2 worker(s) | 50 | 100, 110 | 125, 130 | 100, 200 |" in text
    assert "### Built-in Alert Production" in text and "| isr | 0.25 |" in text


def test_an_alerts_ccd_is_read_from_the_first_field_of_its_avro_body() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "alert", "fields": [
        {"name": "diaSourceId", "type": "long"}, {"name": "rest", "type": "bytes"}]})
    ids = association.dia_source_id(2026112500003, 188, np.array([0, 8191]))
    for source in (int(i) for i in ids):
        value = frame(7, write_datum(schema, {"diaSourceId": source, "rest": b"cutouts" * 100}))
        assert dia_source_id(value) == source
        assert detector_of(source) == 188
        assert int(association.visit_of(np.array([source]))[0]) == 2026112500003


def test_the_alerts_section_has_a_row_per_run_and_the_readme_quotes_it(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    ms = Spread.of([0.001, 0.002, 0.010])
    runs = [AlertRun("stand-in, 10 DIA sources per CCD", 5, 944, 1, 9440, ms, ms, Spread.of([0.0005]), ms, ms,
                     preloaded=2, processes=2),
            AlertRun("built-in AP, 1024 px CCDs", 2, 6, 0, 300, Spread.of([4.0]), ms, ms, ms, ms, processes=2)]
    text = render(Results(alerts=runs), argparse.Namespace(visits=50))
    assert "## 6. Alerts" in text
    assert "| stand-in, 10 DIA sources per CCD | 944 (1) | 9440 | 2.0 / 10.0 / 10.0 | 2.0 / 10.0 / 10.0 " \
           "| 0.5 / 0.5 / 0.5 |" in text
    assert "| built-in AP, 1024 px CCDs | 6 (0) | 300 | 4000.0 / 4000.0 / 4000.0 |" in text
    assert "5 LSSTCam visits of one field" in text and "a simulated night of 2 visits" in text
    assert "preload finished before the last raw on 2 of 3 CCDs" in text
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.QUOTE_START}\nold\n{report.QUOTE_END}\nrest\n")
    monkeypatch.setattr(report, "README", readme)
    report.quote_in_readme(text)
    quoted = readme.read_text()
    assert "#### 6. Alerts" in quoted and "| built-in AP, 1024 px CCDs | 6 (0) |" in quoted
    assert "old" not in quoted and "Per CCD, from" not in quoted and quoted.endswith(f"{report.QUOTE_END}\nrest\n")
