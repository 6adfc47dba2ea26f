"""The error tree of Prompt Streams: every failure has a type that says what to do with it.

Every error the project raises derives from `PromptStreamsError`, through one of two branches:

- `RetriableError`: transient (the registry, the broker, storage or the APDB unreachable): the work is done
  again later, and its input is never dead-lettered;
- `NonRetriableError`: doing it again would fail the same way (bytes that are no record, an event that makes
  no sense, a raw the ISR cannot read, a setting the app cannot use): a dead letter with the reason, a failed
  CCD, or a command that exits saying why.

Two outcomes that are no failures derive from the root alone: `IgnorableEvent` (valid, but not for us) and
`streams.pipelines.base.PipelineUnavailable` (try the next pipeline). Errors that were `ValueError`s keep that
base too, so a caller's `except ValueError` still holds.

The engine (`streams.runtime.engine`) maps each type to its outcome once. Errors are raised `from` their
cause, so the chain is kept.
"""

from __future__ import annotations


class PromptStreamsError(Exception):
    """Root of every error Prompt Streams raises on purpose."""


class RetriableError(PromptStreamsError):
    """Transient: nothing outside changed for good, and doing it again later may succeed (never a dead letter)."""


class NonRetriableError(PromptStreamsError):
    """Doing it again would fail the same way (or outside state may have changed): do not retry."""


class RegistryError(RetriableError):
    """The schema registry could not be reached or refused a request."""


class DecodeError(NonRetriableError):
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


class InvalidEventError(NonRetriableError):
    """Decoded, but makes no sense (unknown instrument, detector out of range): dead letter."""


class OutputTooLargeError(InvalidEventError):
    """An input (or a tick) made a record or table row larger than the producer takes: it goes to the dead
    letters instead."""


class ConfigurationError(NonRetriableError, ValueError):
    """A setting or a configuration file (instruments, surveys, triggers, shell pipelines) the app cannot use:
    refused when it is read, saying which and why."""


class IgnorableEvent(PromptStreamsError):  # noqa: N818 (an outcome, not a failure)
    """Valid, but not for us (blank instrument, expired visit): logged and dropped."""
