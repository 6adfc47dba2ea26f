"""Logs as events: key/value fields, labels bound from the records being handled, one JSON formatter, secrets
masked."""

from __future__ import annotations

import json
import logging

import pytest

from streams.config import Connection, Settings
from streams.observability import logs
from streams.serde.records import CcdResult, RawImageAvailable


def line(formatter: logs.JsonFormatter, message: str, *args: object) -> dict[str, object]:
    record = logging.LogRecord("streams.test", logging.INFO, __file__, 1, message, args, None)
    return json.loads(formatter.format(record))  # type: ignore[no-any-return]


def test_labels_come_from_the_record_and_end_with_the_scope() -> None:
    formatter = logs.JsonFormatter(worker="w1")
    raw = RawImageAvailable(instrument="LSSTCam", group_id="g1", detector=94, exposure_id=2026112500001, uri="x")
    with logs.labelled(raw):
        entry = line(formatter, "held %d snaps", 2)
    assert entry["message"] == "held 2 snaps" and entry["worker"] == "w1" and entry["level"] == "INFO"
    assert (entry["instrument"], entry["group"], entry["detector"], entry["visit"]) == ("LSSTCam", "g1", 94,
                                                                                      2026112500001)
    assert "group" not in line(formatter, "between events")
    with logs.labelled():
        logs.bind(raw)
        assert line(formatter, "bound")["detector"] == 94
    assert "detector" not in line(formatter, "after the scope")
    with logs.labelled(CcdResult(instrument="LSSTCam", group_id="g2", detector=3, status="success",
                                 exposure_ids=[12, 11])):
        assert line(formatter, "x")["visit"] == 11  # a visit is named after its first exposure


def test_secrets_are_masked_wherever_they_appear() -> None:
    settings = Settings(cluster=Connection(sasl_password='pa"ss'), web_token="tok-123", log_format="json")
    config = logs.logging_config(settings)
    assert config is not None
    formatter = logs.JsonFormatter(**{k: v for k, v in config["formatters"]["default"].items() if k != "()"})
    entry = line(formatter, "connecting with %s and %s", 'pa"ss', "tok-123")
    assert entry["message"] == "connecting with *** and ***"
    assert logs.logging_config(Settings()) is None  # text logs by default


def test_an_event_is_its_name_and_fields_in_text_and_keys_in_json(caplog: pytest.LogCaptureFixture) -> None:
    """Text logs read `name key=value` (the labels bound then last); a JSON line has the event and each field as
    keys for a log store to filter on. Fields name what the event is about, so they win over the labels, never over
    the line's own keys."""
    log = logs.events("streams.test.events")
    with caplog.at_level(logging.INFO, logger="streams.test.events"), logs.labelled(
            RawImageAvailable(instrument="LSSTCam", group_id="g1", detector=94, exposure_id=7, uri="x")):
        log.info("visit summarised", group="g2", counts={"success": 9}, reason="all done", level="x")
        entry = json.loads(logs.JsonFormatter().format(caplog.records[0]))
    record = caplog.records[0]
    assert record.getMessage() == ('visit summarised group=g2 counts="{\'success\': 9}" reason="all done" level=x '
                                   "instrument=LSSTCam detector=94 visit=7"), "the labels of the moment, last"
    assert record.funcName == "test_an_event_is_its_name_and_fields_in_text_and_keys_in_json", "the caller's"
    assert entry["event"] == "visit summarised" and entry["counts"] == {"success": 9}
    assert entry["message"] == ('visit summarised group=g2 counts="{\'success\': 9}" reason="all done" level=x'), \
        "a JSON message does not repeat the labels, which are keys of their own"
    assert (entry["group"], entry["detector"], entry["level"]) == ("g2", 94, "INFO")


def test_an_event_below_the_level_costs_no_text(caplog: pytest.LogCaptureFixture) -> None:
    class Loud:
        def __str__(self) -> str:
            raise AssertionError("formatted")

    with caplog.at_level(logging.INFO, logger="streams.test.quiet"):
        logs.events("streams.test.quiet").debug("unseen", value=Loud())
    assert not caplog.records
