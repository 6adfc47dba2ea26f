"""Records -> SAL event data: items, private fields, keys, seqNum and sndStamp rules."""

from __future__ import annotations

import math
from dataclasses import replace

from connectors.sal_bridge_step import BridgeConfig, step
from connectors.sal_events import Writer, ccd_result_items, next_seq_num, stable_origin, visit_summary_items
from connectors.sal_interface import CCD_RESULT, LOG_MESSAGE, METRIC, VISIT_SUMMARY, avro_schema
from connectors.sasquatch import SasquatchRecord
from streams.serde.codec import parse, read_datum, write_datum
from streams.serde.records import CcdResult, LogMessage, Metric, SalBridgeCheckpoint, VisitSummary
from tests import sal_rules

WRITER = Writer(sal_index=1, subname="sal", origin=stable_origin("bridge"), tai_minus_utc=37.0)
CONFIG = BridgeConfig(WRITER, log_rate=1.0, log_burst=3, sasquatch_environment="dev")
NOW = 1_800_000_000.0
SUMMARY = VisitSummary(instrument="LSSTCam", group_id="2026-11-25T03:14:15.926", survey="BLOCK-365",
                       detectors_expected=3, counts={"success": 2, "failed": 1}, failed_detectors=[7],
                       exposure_ids=[2026112500367, 2026112500368], next_visit_time=NOW - 40,
                       next_visit_to_first_raw=3.0, raw_to_result_p50=12.0, raw_to_result_max=20.0,
                       next_visit_to_summary=35.0, summary_time=NOW - 5)
RESULT = CcdResult(instrument="LSSTCam", group_id="g", detector=94, status="timeout", next_visit_time=NOW - 40)
METRIC_RECORD = Metric(name="prep_butlerTotalTime", value=0.25, unit="s", instrument="LSSTCam", group_id="g",
                       detector=94, survey="BLOCK-365", timestamp=NOW - 30, tags={"band": "r"})


def test_visit_summary_items_fill_every_field_with_sal_types() -> None:
    """Counts per status, lists as comma-separated strings; the datum encodes with the SAL schema."""
    items = visit_summary_items(SUMMARY)
    assert (items["successCount"], items["failedCount"], items["timeoutCount"]) == (2, 1, 0)
    assert items["failedDetectors"] == "7" and items["exposureIds"] == "2026112500367,2026112500368"
    _, [message] = step(SalBridgeCheckpoint(), SUMMARY, NOW, CONFIG)
    schema = parse(avro_schema(VISIT_SUMMARY))
    assert read_datum(write_datum(schema, message.datum), schema, schema)["groupId"] == SUMMARY.group_id
    assert set(message.datum) == {f["name"] for f in avro_schema(VISIT_SUMMARY)["fields"]}


def test_times_that_did_not_happen_are_nan_not_zero() -> None:
    """SAL has no nulls: a result without raws has NaN first-raw and process times."""
    items = ccd_result_items(RESULT)
    assert math.isnan(items["firstRawTime"]) and math.isnan(items["processStartTime"])
    assert items["nextVisitTime"] == NOW - 40


def test_private_fields_are_filled_like_salobj() -> None:
    """TAI sndStamp = kafkaStamp, UTC efdStamp, identity Name:index, revCode by the schema rule, key string."""
    _, [message] = step(SalBridgeCheckpoint(), RESULT, NOW, CONFIG)
    datum = message.datum
    assert datum["private_sndStamp"] == datum["private_kafkaStamp"] == NOW
    assert datum["private_efdStamp"] == NOW - 37.0
    assert datum["private_identity"] == "PromptProcessing:1" and datum["salIndex"] == 1
    assert datum["private_origin"] == stable_origin("bridge") and datum["private_seqNum"] == 1
    assert datum["private_revCode"] == sal_rules.rev_code(avro_schema(CCD_RESULT))
    assert message.topic == "lsst.sal.PromptProcessing.logevent_ccdResult"
    assert message.key == sal_rules.key("PromptProcessing", 1, "logevent_ccdResult")


def test_seq_num_counts_per_topic_and_snd_stamp_never_goes_back() -> None:
    """A clock stepping back does not make sndStamp decrease; each topic has its own counter."""
    checkpoint = SalBridgeCheckpoint()
    checkpoint, [first] = step(checkpoint, RESULT, NOW, CONFIG)
    checkpoint, [second] = step(checkpoint, RESULT, NOW - 10, CONFIG)
    checkpoint, [summary] = step(checkpoint, SUMMARY, NOW - 20, CONFIG)
    assert (first.datum["private_seqNum"], second.datum["private_seqNum"]) == (1, 2)
    assert second.datum["private_sndStamp"] == NOW
    assert summary.datum["private_seqNum"] == 1 and summary.datum["private_sndStamp"] == NOW - 20
    assert next_seq_num(2**31 - 1) == 1


def test_metric_time_travels_in_the_payload_and_a_sasquatch_record_follows() -> None:
    """The metric's own time is measurementTime; sndStamp is the send time."""
    _, (sal, sasquatch) = step(SalBridgeCheckpoint(), METRIC_RECORD, NOW, CONFIG)
    assert sal.event is METRIC and sal.datum["measurementTime"] == NOW - 30 and sal.datum["private_sndStamp"] == NOW
    assert sal.datum["tags"] == "band=r"
    assert isinstance(sasquatch, SasquatchRecord) and sasquatch.topic == "lsst.prompt.dev.prep_butlerTotalTime"


def test_a_log_storm_is_rate_limited_and_the_next_message_says_how_many_were_dropped() -> None:
    """Burst 3, then 1 per second of log time; suppressed counts (worker's and bridge's) are reported."""
    checkpoint = SalBridgeCheckpoint()
    sent = []
    for i in range(100):
        record = LogMessage(name="streams.x", level=40, message=f"boom {i}", timestamp=NOW + i * 0.01,
                            suppressed=2 if i == 0 else 0)
        checkpoint, outputs = step(checkpoint, record, NOW, CONFIG)
        sent += outputs
    assert len(sent) == 3 and all(m.event is LOG_MESSAGE for m in sent)
    assert "2 earlier log messages" in sent[0].datum["message"]
    later = LogMessage(name="streams.x", level=30, message="calm again", timestamp=NOW + 5)
    checkpoint, [after] = step(checkpoint, later, NOW, CONFIG)
    assert "97 earlier log messages" in after.datum["message"]
    assert after.datum["private_seqNum"] == 4


def test_no_sasquatch_records_without_an_environment() -> None:
    """An empty environment turns Sasquatch publishing off."""
    _, outputs = step(SalBridgeCheckpoint(), METRIC_RECORD, NOW, replace(CONFIG, sasquatch_environment=""))
    assert len(outputs) == 1
