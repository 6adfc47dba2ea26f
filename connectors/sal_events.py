"""Prompt Streams records -> SAL event data, and the private fields filled the way ts_salobj does.

Pure functions: the bridge (`connectors/sal_bridge.py`) decodes, calls these and sends. The
items follow `connectors.sal_interface`; times stay TAI; a time that did not happen (stored as 0
upstream) becomes NaN, since SAL has no nulls; lists become comma-separated strings, since SAL
arrays have a fixed length.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

from connectors.sal_interface import (
    CCD_RESULT,
    COMPONENT,
    LOG_MESSAGE,
    METRIC,
    VISIT_SUMMARY,
    Event,
    avro_schema,
    rev_code,
    topic_name,
)
from streams.serde.records import CcdResult, LogMessage, Metric, VisitSummary

MAX_SEQ_NUM = 2**31 - 1
"""salobj's per-writer counter runs 1..2^31-1, then wraps to 1."""
STATUSES = ("success", "failed", "timeout", "canceled", "ignored")


@dataclass(frozen=True)
class Writer:
    """Who writes the SAL events: the component's index, topic sub-namespace and stable origin."""

    sal_index: int
    subname: str
    origin: int
    tai_minus_utc: float
    """TAI - UTC [s] (37 since 2017): private_efdStamp is UTC."""

    @property
    def identity(self) -> str:
        """private_identity of a CSC: `Name:index`, or `Name` when the index is 0."""
        return f"{COMPONENT}:{self.sal_index}" if self.sal_index else COMPONENT

    def topic(self, event: Event) -> str:
        """The Kafka topic of `event` for this writer."""
        return topic_name(event, self.subname)


def stable_origin(name: str) -> int:
    """A private_origin that survives restarts (salobj uses the pid; a heartbeat reader flags a
    changing origin as a second CSC): a 31-bit hash of the bridge's name."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def sal_key(event: Event, sal_index: int) -> bytes:
    """The salobj key string of an event: raw UTF-8, not Avro."""
    return f'{{ "name": "{COMPONENT}", "index": {sal_index}, "topic": "{event.sal_name}" }}'.encode()


@dataclass(frozen=True)
class SalMessage:
    """One SAL event ready to encode with its topic's registered schema."""

    event: Event
    topic: str
    key: bytes
    datum: dict[str, Any]


def stamped(writer: Writer, event: Event, items: dict[str, Any], snd_stamp: float, seq_num: int) -> SalMessage:
    """The event with its private fields filled like salobj's `_prepare_data_to_write`.

    sndStamp and kafkaStamp are TAI, efdStamp is UTC; rcvStamp is left at 0 for the reader to set.
    """
    private = {
        "salIndex": writer.sal_index, "private_sndStamp": snd_stamp, "private_rcvStamp": 0.0,
        "private_efdStamp": snd_stamp - writer.tai_minus_utc, "private_kafkaStamp": snd_stamp,
        "private_seqNum": seq_num, "private_revCode": rev_code(avro_schema(event)),
        "private_identity": writer.identity, "private_origin": writer.origin,
    }
    return SalMessage(event, writer.topic(event), sal_key(event, writer.sal_index), private | items)


def next_seq_num(last: int) -> int:
    """The counter after `last` (0 before the first message), wrapping like salobj's."""
    return last % MAX_SEQ_NUM + 1


# -- the items of each event --------------------------------------------------------------------
def _happened(stamp: float) -> float:
    """A TAI stamp, or NaN where upstream stores 0 for "did not happen"."""
    return stamp if stamp else math.nan


def _joined(values: list[int]) -> str:
    return ",".join(str(value) for value in values)


def visit_summary_items(summary: VisitSummary) -> dict[str, Any]:
    """The items of `logevent_visitSummary`."""
    counts = {f"{status}Count": summary.counts.get(status, 0) for status in STATUSES}
    return {
        "instrument": summary.instrument, "groupId": summary.group_id, "survey": summary.survey,
        "reason": summary.reason, "detectorsExpected": summary.detectors_expected, **counts,
        "failedDetectors": _joined(summary.failed_detectors), "exposureIds": _joined(summary.exposure_ids),
        "nextVisitTime": _happened(summary.next_visit_time),
        "nextVisitToFirstRaw": summary.next_visit_to_first_raw, "rawToResultMedian": summary.raw_to_result_p50,
        "rawToResultMax": summary.raw_to_result_max, "nextVisitToSummary": summary.next_visit_to_summary,
        "summaryTime": _happened(summary.summary_time),
    }


def ccd_result_items(result: CcdResult) -> dict[str, Any]:
    """The items of `logevent_ccdResult`."""
    return {
        "instrument": result.instrument, "groupId": result.group_id, "detector": result.detector,
        "survey": result.survey, "status": result.status, "retriable": result.retriable,
        "errorClass": result.error_class, "errorMessage": result.error_message, "pipeline": result.pipeline,
        "exposureIds": _joined(result.exposure_ids), "snapsExpected": result.snaps_expected,
        "snapsProcessed": result.snaps_processed, "nextVisitTime": _happened(result.next_visit_time),
        "fanoutTime": _happened(result.fanout_time), "preloadDoneTime": _happened(result.preload_done_time),
        "firstRawTime": _happened(result.first_raw_time), "processStartTime": _happened(result.process_start_time),
        "processEndTime": _happened(result.process_end_time), "resultTime": _happened(result.result_time),
        "worker": result.worker,
    }


def metric_items(metric: Metric) -> dict[str, Any]:
    """The items of `logevent_metric`: the metric's own time is measurementTime, never sndStamp."""
    return {
        "instrument": metric.instrument, "groupId": metric.group_id, "detector": metric.detector,
        "survey": metric.survey, "name": metric.name, "value": metric.value, "unit": metric.unit,
        "measurementTime": _happened(metric.timestamp),
        "tags": ",".join(f"{key}={value}" for key, value in sorted(metric.tags.items())),
    }


def log_message_items(record: LogMessage, suppressed: int) -> dict[str, Any]:
    """The items of the generic `logevent_logMessage`; says how many records a rate limit dropped."""
    message = record.message
    if suppressed:
        message += f" ({suppressed} earlier log messages at WARNING or above were suppressed by the rate limit)"
    name = f"{record.worker}.{record.name}" if record.worker else record.name
    return {
        "name": name, "level": record.level, "message": message, "traceback": record.traceback,
        "filePath": record.file_path, "functionName": record.function_name, "lineNumber": record.line_number,
        "process": record.process, "timestamp": record.timestamp,
    }


EVENT_OF = {VisitSummary: VISIT_SUMMARY, CcdResult: CCD_RESULT, Metric: METRIC, LogMessage: LOG_MESSAGE}
"""Which SAL event each source record becomes."""
