"""The bridge's functional core: (checkpoint, source record) -> (new checkpoint, messages for Chile).

The checkpoint (`SalBridgeCheckpoint`) is everything that must survive a restart: the source
positions (moved on by the engine, `streams.runtime.engine.CheckpointOffsets`), each SAL topic's
last seqNum and sndStamp, and the logMessage rate limit. It is committed in the same Chile
transaction as the messages it accounts for, so a restarted bridge resumes exactly where the
committed messages end, with seqNum continuing and sndStamp never going back, even if the clock
does.

What cannot be mapped is an output too (`Unmapped`, with the reason), never an exception: the
bridge dead-letters it in the same transaction and its checkpoint moves past the record, so one
bad record cannot stop the bridge.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from connectors.sal_events import (
    EVENT_OF,
    SalMessage,
    Writer,
    ccd_result_items,
    log_message_items,
    metric_items,
    next_seq_num,
    stamped,
    visit_summary_items,
)
from connectors.sasquatch import SasquatchRecord, Unmapped, sasquatch_record
from streams.core.ratelimit import Bucket, admit, reported
from streams.errors import NonRetriableError
from streams.serde.base import Record
from streams.serde.records import CcdResult, LogMessage, Metric, SalBridgeCheckpoint, VisitSummary

Output = SalMessage | SasquatchRecord | Unmapped
ITEMS: dict[type[Record], Callable[[Any], dict[str, Any]]] = {
    VisitSummary: visit_summary_items, CcdResult: ccd_result_items, Metric: metric_items,
}


@dataclass(frozen=True)
class BridgeConfig:
    """What the core needs to know besides the records."""

    writer: Writer
    log_rate: float
    """logMessage events per second (by the log records' own time) once the burst is spent."""
    log_burst: int
    sasquatch_environment: str
    """`lsst.prompt.<environment>`; empty: no Sasquatch records."""


class UnmappableError(NonRetriableError):
    """A decoded record, or a part of it, that the bridge cannot write to Chile: its dead letter's error class."""


def _log_items(checkpoint: SalBridgeCheckpoint, record: LogMessage,
               config: BridgeConfig) -> tuple[SalBridgeCheckpoint, dict[str, Any] | None]:
    bucket = Bucket(checkpoint.log_tokens, checkpoint.log_tokens_time, checkpoint.log_suppressed)
    bucket, allowed = admit(bucket, record.timestamp, config.log_rate, config.log_burst)
    items = log_message_items(record, record.suppressed + bucket.suppressed) if allowed else None
    if allowed:
        bucket = reported(bucket)
    return replace(checkpoint, log_tokens=bucket.tokens, log_tokens_time=bucket.updated,
                   log_suppressed=bucket.suppressed), items


def sasquatch_of(record: Record, config: BridgeConfig) -> SasquatchRecord | Unmapped | None:
    """A metric's Sasquatch record (or why it cannot have one); None for anything else, a NaN, or no environment.
    Independent of the time, so the bridge can create topics and register schemas before it stamps."""
    if not isinstance(record, Metric) or not config.sasquatch_environment:
        return None
    return sasquatch_record(record, config.sasquatch_environment, config.writer.tai_minus_utc)


def step(checkpoint: SalBridgeCheckpoint, record: Record, now_tai: float,
         config: BridgeConfig) -> tuple[SalBridgeCheckpoint, list[Output]]:
    """Convert one source record: its SAL event (unless rate-limited) and, for a metric, its
    Sasquatch record or `Unmapped`. `now_tai` is the clock, read by the bridge just before it
    produces; sndStamp is never below the topic's last one."""
    if isinstance(record, LogMessage):
        checkpoint, items = _log_items(checkpoint, record, config)
        if items is None:
            return checkpoint, []
    else:
        items = ITEMS[type(record)](record)
    event = EVENT_OF[type(record)]
    topic = config.writer.topic(event)
    snd_stamp = max(now_tai, checkpoint.snd_stamps.get(topic, 0.0))
    seq_num = next_seq_num(checkpoint.seq_nums.get(topic, 0))
    outputs: list[Output] = [stamped(config.writer, event, items, snd_stamp, seq_num)]
    if (found := sasquatch_of(record, config)) is not None:
        outputs.append(found)
    checkpoint = replace(checkpoint, seq_nums={**checkpoint.seq_nums, topic: seq_num},
                         snd_stamps={**checkpoint.snd_stamps, topic: snd_stamp})
    return checkpoint, outputs
