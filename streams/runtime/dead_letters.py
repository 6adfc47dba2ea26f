"""Dead letters of a bounded size: an input that cannot be used is kept, but never as a record larger than
the producer's limit (`PRODUCER_LIMIT`), which would stop the processor that writes it."""

from __future__ import annotations

import hashlib

from streams.serde.records import DeadLetter

PRODUCER_LIMIT = 1_000_000
"""The most bytes of key and value a record may have: librdkafka's `message.max.bytes`, which the producers
keep at its default (it counts a record's framing too, `RECORD_OVERHEAD`)."""
RECORD_OVERHEAD = 64
"""Bytes librdkafka adds to a record's key and value before comparing with its limit (36 at most)."""
VALUE_LIMIT = 900 * 1024
"""Bytes of the original value kept (inputs are at most 1 MiB; this leaves room for the rest of the record)."""
KEY_LIMIT = 16 * 1024
"""Bytes of the original key kept (it is the dead letter's key as well as a field of it)."""
REASON_LIMIT = 2000
"""Characters of the reason kept: an error may quote the whole offending field."""


def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                error: BaseException, agent: str, now: float) -> DeadLetter:
    """The dead letter of an input: where it came from, why it cannot be used, and its bytes (a larger value is
    cut, its size and SHA-256 said in the reason; a larger key is cut too)."""
    reason = str(error) or repr(error)
    if len(reason) > REASON_LIMIT:
        reason = f"{reason[:REASON_LIMIT]}... ({len(reason)} characters)"
    if value is not None and len(value) > VALUE_LIMIT:
        reason += (f" (value cut to its first {VALUE_LIMIT} of {len(value)} bytes; "
                   f"sha256 {hashlib.sha256(value).hexdigest()})")
        value = value[:VALUE_LIMIT]
    if key is not None and len(key) > KEY_LIMIT:
        reason += f" (key cut to its first {KEY_LIMIT} of {len(key)} bytes)"
        key = key[:KEY_LIMIT]
    return DeadLetter(topic=topic, partition=partition, offset=offset, key=key, value=value,
                      error_class=type(error).__name__, reason=reason, agent=agent, dead_letter_time=now)
