"""The error tree of Prompt Streams: every failure has a type that says what to do with it.

The engine (`streams.runtime.engine`) maps each type to its outcome once: a dead letter with the reason, an ignored
event, or a result status. Errors are raised `from` their cause, so the chain is kept.
"""

from __future__ import annotations


class PromptStreamsError(Exception):
    """Root of every error Prompt Streams raises on purpose."""


class DecodeError(PromptStreamsError):
    """Bytes from a topic could not become a record: the input goes to the dead-letter topic."""


class WireFormatError(DecodeError):
    """Neither Confluent framing (magic byte 0 + schema id) nor a JSON object, or too large."""


class UnknownSchemaIdError(DecodeError):
    """The framed schema id is not in the schema registry."""


class AvroDataError(DecodeError):
    """The Avro binary is truncated, has trailing bytes or does not match its writer schema."""


class SchemaMismatchError(DecodeError):
    """The data does not fit the expected schema: wrong field types, or an incompatible writer."""


class FieldTooLongError(SchemaMismatchError):
    """A string, array or map of a decoded record is longer than its schema allows."""


class InvalidEventError(PromptStreamsError):
    """Decoded, but makes no sense (unknown instrument, detector out of range): dead letter."""


class OutputTooLargeError(InvalidEventError):
    """An input (or a tick) made a record or table row larger than the producer takes: it goes to the dead
    letters instead."""


class IgnorableEvent(PromptStreamsError):  # noqa: N818 (an outcome, not a failure)
    """Valid, but not for us (blank instrument, expired visit): logged and dropped."""


class RetriableError(PromptStreamsError):
    """Processing failed before any outside state changed: running it again is safe."""


class NonRetriableError(PromptStreamsError):
    """Processing failed after outside state may have changed: do not run it again."""


class RegistryError(PromptStreamsError):
    """The schema registry could not be reached or refused a request."""
