"""The one codec for every topic: the only module that turns bytes into records and back.

Values use the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the
Avro binary datum. The writer schema is fetched from the registry by id and resolved against
the reader schema from `schemas/`, so older and newer writers are read field by field. Input
topics also accept one JSON object validated against the same schema, so that a line typed
into `kcat -P` works. Anything else raises a `DecodeError` subclass naming the problem.
"""

from __future__ import annotations

import io
import json
import math
import struct
from typing import Any, Protocol, TypeVar

import fastavro
from fastavro.validation import validate

from streams.errors import (
    AvroDataError,
    SchemaMismatchError,
    UnknownSchemaIdError,
    WireFormatError,
)
from streams.record import Record
from streams.schemas import Schema, load_schema

MAGIC = 0
HEADER = struct.Struct(">bI")
MAX_MESSAGE_BYTES = 1 << 20
"""Largest value accepted (1 MiB): events are small, so anything bigger is an error."""

R = TypeVar("R", bound=Record)


class SchemaRegistry(Protocol):
    """What the codec needs from a schema registry."""

    def register(self, subject: str, schema: Schema) -> int:
        """Register `schema` under `subject` (idempotent) and return its id."""
        ...

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The schema with this id, or None if the registry has no such id."""
        ...


# -- pure functions -----------------------------------------------------------------------------
def parse(schema: Schema) -> Any:
    """fastavro's parsed form of a schema (a fresh named-type scope every time)."""
    return fastavro.parse_schema(schema, named_schemas={})


def frame(schema_id: int, payload: bytes) -> bytes:
    """Prefix an Avro datum with the Confluent header."""
    return HEADER.pack(MAGIC, schema_id) + payload


def unframe(data: bytes) -> tuple[int, bytes]:
    """Split Confluent-framed bytes into (schema id, Avro datum)."""
    if len(data) < HEADER.size:
        raise WireFormatError(f"{len(data)} bytes is too short for the 5-byte Confluent header")
    magic, schema_id = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise WireFormatError(f"bad magic byte {data[0]:#04x}: expected 0x00 (Confluent framing)")
    return schema_id, data[HEADER.size:]


def write_datum(parsed: Any, datum: dict[str, Any]) -> bytes:
    """Avro-encode one datum."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, datum)
    return out.getvalue()


def read_datum(payload: bytes, writer: Any, reader: Any) -> dict[str, Any]:
    """Avro-decode one datum written with `writer`, resolved to `reader`; all bytes must be used."""
    buffer = io.BytesIO(payload)
    try:
        datum = fastavro.schemaless_reader(buffer, writer, reader)
    except fastavro.read.SchemaResolutionError as error:
        raise SchemaMismatchError(f"writer schema cannot be read as the expected one: {error}") from error
    except Exception as error:  # any failure on untrusted bytes means "not decodable"
        raise AvroDataError(f"Avro data does not match its writer schema: {error!r}") from error
    if buffer.tell() != len(payload):
        raise AvroDataError(
            f"Avro data is truncated or has trailing bytes ({buffer.tell()} of {len(payload)} used)"
        )
    if not isinstance(datum, dict):
        raise AvroDataError("Avro datum is not a record")
    return datum


def from_json(text: bytes, schema: Schema, parsed: Any) -> dict[str, Any]:
    """A JSON object validated against the schema, defaults filled, numbers normalised."""
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise WireFormatError(f"not valid JSON: {error}") from error
    if not isinstance(obj, dict):
        raise WireFormatError(f"JSON value is a {type(obj).__name__}, not an object")
    known = {item["name"] for item in schema["fields"]}
    if unknown := sorted(set(obj) - known):
        raise SchemaMismatchError(f"unknown fields for {schema['name']}: {', '.join(unknown)}")
    datum = {item["name"]: obj.get(item["name"], item.get("default")) for item in schema["fields"]}
    required = [item["name"] for item in schema["fields"] if "default" not in item]
    if missing := [name for name in required if name not in obj]:
        raise SchemaMismatchError(f"missing required fields for {schema['name']}: {', '.join(missing)}")
    for name, value in datum.items():
        if isinstance(value, float) and not math.isfinite(value) and name in obj:
            raise SchemaMismatchError(f"field {name} is {value}: JSON numbers must be finite")
    try:
        validate(datum, parsed, raise_errors=True)
    except Exception as error:  # fastavro's ValidationError lists every bad field
        raise SchemaMismatchError(f"JSON does not fit {schema['name']}: {error}") from error
    # A binary round trip turns JSON's ints into the schema's floats and so on.
    return read_datum(write_datum(parsed, datum), parsed, parsed)


# -- the codec ----------------------------------------------------------------------------------
class Codec:
    """Encode and decode the records of each topic against a schema registry.

    Subjects follow the TopicNameStrategy (`<topic>-value`). Writer schemas fetched by id are
    cached, so the registry is asked once per id per process.
    """

    def __init__(self, registry: SchemaRegistry) -> None:
        self._registry = registry
        self._parsed: dict[str, Any] = {}
        self._subject_ids: dict[str, int] = {}
        self._writers: dict[int, Any] = {}

    def _reader(self, record_type: type[Record]) -> Any:
        if record_type.SCHEMA not in self._parsed:
            self._parsed[record_type.SCHEMA] = parse(load_schema(record_type.SCHEMA))
        return self._parsed[record_type.SCHEMA]

    def register(self, topic: str, record_type: type[Record]) -> int:
        """Register the record's schema under `<topic>-value` and remember its id for encoding."""
        subject = f"{topic}-value"
        if subject not in self._subject_ids:
            self._subject_ids[subject] = self._registry.register(subject, load_schema(record_type.SCHEMA))
        return self._subject_ids[subject]

    def register_schema(self, subject: str, schema: Schema) -> int:
        """Register a schema that is not one of `schemas/` (Rubin's alert packet) and return its id."""
        if subject not in self._subject_ids:
            self._subject_ids[subject] = self._registry.register(subject, schema)
        return self._subject_ids[subject]

    def encode(self, topic: str, record: Record) -> bytes:
        """Confluent-framed Avro bytes of `record` for `topic`."""
        schema_id = self.register(topic, type(record))
        return frame(schema_id, write_datum(self._reader(type(record)), record.to_dict()))

    def decode(self, data: bytes | None, record_type: type[R], *, accept_json: bool = False) -> R:
        """The record in `data`: Confluent-framed Avro, or (if `accept_json`) a JSON object.

        Raises:
            WireFormatError: not framed Avro nor an accepted JSON object, or too large.
            UnknownSchemaIdError: the schema id is not in the registry.
            AvroDataError: truncated, trailing or corrupt Avro bytes.
            SchemaMismatchError: wrong types, or a writer schema that cannot be resolved.
        """
        if data is None:
            raise WireFormatError("empty value (tombstone): an event is expected")
        if len(data) > MAX_MESSAGE_BYTES:
            raise WireFormatError(f"value of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit")
        reader = self._reader(record_type)
        if accept_json and data.lstrip()[:1] == b"{":
            datum = from_json(data, load_schema(record_type.SCHEMA), reader)
        else:
            schema_id, payload = unframe(data)
            datum = read_datum(payload, self._writer(schema_id), reader)
        return record_type.from_dict(datum)

    def decode_any(self, data: bytes | None) -> dict[str, Any]:
        """A Confluent-framed Avro value read with its own writer schema: for records that are not ours (Rubin's
        alert packets), shown as they are.

        Raises:
            DecodeError: not framed Avro, an unknown schema id, or corrupt Avro bytes.
        """
        if data is None:
            raise WireFormatError("empty value (tombstone): an event is expected")
        schema_id, payload = unframe(data)
        writer = self._writer(schema_id)
        return read_datum(payload, writer, writer)

    def _writer(self, schema_id: int) -> Any:
        if schema_id not in self._writers:
            schema = self._registry.schema_by_id(schema_id)
            if schema is None:
                raise UnknownSchemaIdError(f"schema id {schema_id} is not in the schema registry")
            self._writers[schema_id] = parse(schema)
        return self._writers[schema_id]
