"""Worker log records at WARNING and above -> the log-messages topic, for the SAL bridge.

A `logging.Handler` on the worker's root logger. It never blocks the event loop nor raises: the
record is encoded and handed to librdkafka's queue (fire and forget, at least once), and a token
bucket (`PROMPT_STREAMS_LOG_FORWARD_RATE` / `_BURST`) keeps a storm of errors from flooding the
topic; the next record sent says how many were dropped. The bridge applies its own limit on top,
so many workers together cannot flood Chile either.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

from confluent_kafka import Producer

from streams.clock import tai_minus_utc
from streams.config import Settings
from streams.core.ratelimit import admit, full, reported
from streams.serde.codec import Codec
from streams.serde.records import LogMessage
from topology.topics import TopicSpec

MAX_TEXT = 8000
"""Longest message or traceback forwarded [characters]: enough to act on, small on the wire."""
IGNORED = ("confluent_kafka", "aiokafka", "kafka")
"""Loggers of the Kafka clients themselves: forwarding their complaints could loop."""


def log_message(record: logging.LogRecord, worker: str, suppressed: int) -> LogMessage:
    """The LogMessage of a log record (times in TAI, as everywhere in Prompt Streams)."""
    trace = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info and record.exc_info[0] else ""
    return LogMessage(name=record.name, level=record.levelno, message=record.getMessage()[:MAX_TEXT],
                      traceback=trace[-MAX_TEXT:], file_path=record.pathname, function_name=record.funcName or "",
                      line_number=record.lineno, process=record.process or os.getpid(),
                      timestamp=record.created + tai_minus_utc(), worker=worker, suppressed=suppressed)


class LogForwarder(logging.Handler):
    """Sends WARNING and above to the log-messages topic, rate-limited."""

    def __init__(self, settings: Settings, spec: TopicSpec, codec: Codec) -> None:
        super().__init__(level=logging.WARNING)
        self.settings, self.spec, self.codec = settings, spec, codec
        self.producer = Producer(settings.kafka_config() | {"linger.ms": 100, "enable.idempotence": True})
        self.bucket = full(settings.log_forward_burst, time.monotonic())
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        """Queue the record unless the rate limit is spent (then only count it)."""
        if record.name.startswith(IGNORED) or getattr(self._local, "busy", False):
            return
        self._local.busy = True
        try:
            # handle() holds self.lock around emit(): the bucket needs no lock of its own.
            self.bucket, allowed = admit(self.bucket, time.monotonic(), self.settings.log_forward_rate,
                                         self.settings.log_forward_burst)
            suppressed = self.bucket.suppressed
            if allowed:
                self.bucket = reported(self.bucket)
                message = log_message(record, self.settings.worker, suppressed)
                self.producer.produce(self.spec.name, key=self.settings.worker.encode(),
                                      value=self.codec.encode(self.spec.name, message))
                self.producer.poll(0)
        except Exception:  # a log handler must never break the code that logs
            self.handleError(record)
        finally:
            self._local.busy = False

    def close(self) -> None:
        """Deliver what is queued (briefly), then detach."""
        self.producer.flush(5)
        super().close()


def install(settings: Settings, spec: TopicSpec, codec: Codec) -> LogForwarder:
    """Attach a forwarder to the root logger and return it (call `uninstall` on stop)."""
    forwarder = LogForwarder(settings, spec, codec)
    logging.getLogger().addHandler(forwarder)
    return forwarder


def uninstall(forwarder: LogForwarder) -> None:
    """Detach the forwarder and deliver what it queued."""
    logging.getLogger().removeHandler(forwarder)
    forwarder.close()
