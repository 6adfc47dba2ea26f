"""The one codec for every topic: the only module that turns bytes into records and back.

Values use the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, then the
Avro binary datum. The writer schema is fetched from the registry by id and resolved against
the reader schema from `schemas/`, so older and newer writers are read field by field. Input
topics also accept one JSON object validated against the same schema, so that a line typed
into `kcat -P` works. Anything else raises a `DecodeError` subclass naming the problem.

Neither the bytes nor the registry are trusted: a writer schema must resolve against the reader's and may not
describe endless data (`streams.serde.writer_schemas`), a datum is walked, bounded, before fastavro reads it, an
unknown or refused schema id is remembered for a while instead of asked for again, and a decoded record's
strings, arrays and maps must keep within the limits its schema declares (`streams.serde.schemas.field_limits`).
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import MemberDescriptorType
from typing import Any, Protocol, TypeVar

import fastavro
from fastavro.schema import to_parsing_canonical_form
from fastavro.validation import validate

from streams.errors import (
    AvroDataError,
    DecodeError,
    FieldTooLongError,
    SchemaMismatchError,
    UnknownSchemaIdError,
    WireFormatError,
)
from streams.serde.base import Record, field_names
from streams.serde.schemas import Schema, field_limits, load_schema
from streams.serde.writer_schemas import Names, UnsafeSchemaError, check_datum, check_writer, least_bytes, mismatch

MAGIC = 0
HEADER = struct.Struct(">bI")
MAX_MESSAGE_BYTES = 1 << 20
"""Largest value accepted (1 MiB): events are small, so anything bigger is an error."""
FORWARDS_KEPT = 4096
"""Records decoded with `forward` whose bytes are kept until they are encoded (a few batches' worth)."""
REFUSAL_SECONDS = 10.0
"""How long an unknown or unusable schema id is refused without asking the registry again: a burst of
messages with made-up ids costs one request per id, and a schema registered just now is read soon after."""
REFUSALS_KEPT = 4096
MISSES_PER_WINDOW = 32
"""Registry lookups that found no usable schema, per `REFUSAL_SECONDS`: past that, an id far above every id
found so far is refused without asking, so a burst of distinct made-up ids costs 32 requests, not one each."""
NEAR_IDS = 1000
"""Ids up to this far above the highest found are always asked for: a registry numbers its schemas in order,
so a schema registered during a burst of made-up ids is still read (at most this many more requests)."""

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
    return parse_named(schema)[0]


def parse_named(schema: Schema) -> tuple[Any, Names]:
    """fastavro's parsed form of a schema, and its named types by full name."""
    names: Names = {}
    return fastavro.parse_schema(schema, named_schemas=names), names


def _over_limit(record: Record) -> str | None:
    """Why a field of `record` is longer than its schema allows, or None."""
    for limit in field_limits(record.SCHEMA):
        value = getattr(record, limit.field)
        where = f"{type(record).__name__}.{limit.field}"
        strings = [value]
        if isinstance(value, list | dict):
            if limit.max_items is not None and len(value) > limit.max_items:
                return f"{where} has {len(value)} items, over its limit of {limit.max_items}"
            strings = [*value, *value.values()] if isinstance(value, dict) else value
        if limit.max_length is not None:
            for text in strings:
                if isinstance(text, str) and len(text) > limit.max_length:
                    return f"{where} is {len(text)} characters long, over its limit of {limit.max_length}"
    return None


def within_limits(record: R) -> R:
    """`record`, if every field keeps within the limits its schema declares.

    Raises:
        FieldTooLongError: naming the field, its size and its limit.
    """
    if (why := _over_limit(record)) is not None:
        raise FieldTooLongError(why)
    return record


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


# -- compiled record codecs ---------------------------------------------------------------------
# fastavro costs microseconds per datum in per-call schema handling, and a record must first
# become a dict (and come back from one). The gather writes seven records and reads one or more
# per input, so each record type gets straight-line Python, generated once from its schema, that
# writes the record's attributes and reads the Avro bytes straight into the record. The output is
# byte for byte fastavro's (tests/unit/test_codec_compiled.py checks both ways); a schema the compiler does
# not cover (enums, fixed, named references, unions beyond [null, x]) keeps the fastavro path.

Writer = Callable[[Record], bytes]
"""Confluent-framed Avro bytes of a record (its schema id in the header)."""
Reader = Callable[[bytes, int], tuple[Any, int]]
"""(record, position after it) read from framed bytes at a position."""

_PRIMITIVE_WIDTH = {"double": 8, "float": 4}
_MAX_VARINT = 10
"""A 64-bit long takes at most 10 bytes."""


_AVRO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VARINTS: dict[int, bytes] = {}
_VARINTS_KEPT = 4096


class _UnsupportedError(Exception):
    """A schema construct the compiler leaves to fastavro."""


def _varint(z: int) -> bytes:
    """An unsigned varint of more than one byte (z is already zigzagged, or a non-negative length); the last
    few thousand are kept, since the same large values (exposure ids) recur record after record."""
    out = _VARINTS.get(z)
    if out is None:
        if z >> 64:
            raise OverflowError(f"{z} does not fit an Avro long")
        parts, rest = bytearray(), z
        while rest >= 0x80:
            parts.append((rest & 0x7F) | 0x80)
            rest >>= 7
        parts.append(rest)
        out = bytes(parts)
        if len(_VARINTS) >= _VARINTS_KEPT:
            _VARINTS.clear()
        _VARINTS[z] = out
    return out


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned varint at `pos`: (value, position after it)."""
    n = shift = 0
    for count in range(_MAX_VARINT):
        b = data[pos + count]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos + count + 1
    raise ValueError("varint longer than 10 bytes")


def _read_long(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag long of more than one byte at `pos`: (value, position after it)."""
    n, pos = _read_varint(data, pos)
    return (n >> 1) ^ -(n & 1), pos


def _read_length(data: bytes, pos: int) -> tuple[int, int]:
    """A string's or bytes' length that is not one byte and even: (length, position after it)."""
    n, pos = _read_long(data, pos)
    if n < 0:
        raise ValueError(f"negative length {n}")
    return n, pos


_ZIGZAG = tuple((b >> 1) ^ -(b & 1) for b in range(0x80))
"""The long of each one-byte varint."""


class _Source:
    """Python source being generated, with the objects it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, Any] = {
            "_varint": _varint, "_string": _string, "_count": _count, "_doubles": _doubles, "_BYTES": _BYTES,
            "_STRINGS": _STRINGS, "_read_long": _read_long, "_read_length": _read_length, "_ZIGZAG": _ZIGZAG,
            "_new": object.__new__}
        self._count = 0

    def var(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def const(self, stem: str, value: Any) -> str:
        name = self.var(f"_{stem}")
        self.names[name] = value
        return name

    def emit(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)

    def build(self, name: str) -> Any:
        exec(compile("\n".join(self.lines) + "\n", f"<avro {name}>", "exec"), self.names)
        return self.names[name]


def _nested_type(record_type: type[Record], field_name: str) -> type[Record]:
    found = record_type.NESTED.get(field_name)
    if found is None:
        raise _UnsupportedError(f"{record_type.__name__}.{field_name} holds a record its class does not declare")
    return found[1]


def _check_fields(schema: dict[str, Any], record_type: type[Record]) -> list[dict[str, Any]]:
    """The schema's fields, which must be the record's, each named as Avro says (a name goes into the source)."""
    fields_ = list(schema["fields"])
    if sorted(item["name"] for item in fields_) != sorted(field_names(record_type)):
        raise _UnsupportedError(f"{record_type.__name__} does not have the fields of {schema['name']}")
    if not all(_AVRO_NAME.fullmatch(item["name"]) for item in fields_):
        raise _UnsupportedError(f"{schema['name']} has a field name Avro does not allow")
    return fields_


def _union_branch(avro: Any) -> tuple[int, Any]:
    """(index of null, the other branch) of a [null, x] union."""
    if len(avro) != 2 or "null" not in avro or any(isinstance(b, list) for b in avro):
        raise _UnsupportedError("only [null, x] unions are compiled")
    null = avro.index("null")
    return null, avro[1 - null]


# writing: each field becomes one bytes part (a short string's part, its length and UTF-8 bytes, is kept
# from record to record: the same instrument, group, names and units recur), and a record is the join of
# its parts, which costs a third of appending them one by one to a bytearray.
def _string(value: str) -> bytes:
    """The Avro encoding of a string (length, UTF-8 bytes), kept for the next records if it is short."""
    encoded = value.encode()
    n = len(encoded) << 1
    part = (_BYTES[n] if n < 0x80 else _varint(n)) + encoded
    if len(value) <= _STRINGS_LONGEST:
        if len(_STRINGS) >= _STRINGS_KEPT:
            _STRINGS.clear()
        _STRINGS[value] = part
    return part


def _count(n: int) -> bytes:
    """The count of a non-empty array or map block."""
    return _BYTES[n << 1] if n < 0x40 else _varint(n << 1)


_BYTES = tuple(bytes((b,)) for b in range(0x100))
_STRINGS: dict[str, bytes] = {}
_STRINGS_KEPT = 4096
_STRINGS_LONGEST = 64
_PACK_DOUBLES = {n: struct.Struct(f"<{n}d").pack for n in range(1, 17)}


def _doubles(values: list[float]) -> bytes:
    """The items of a non-empty array of doubles, in one struct.pack."""
    pack = _PACK_DOUBLES.get(len(values))
    return pack(*values) if pack is not None else struct.pack(f"<{len(values)}d", *values)


def _part(src: _Source, depth: int, avro: Any, expr: str, owner: type[Record] | None, field_name: str) -> str:
    """Emit what computes the bytes of `expr` (of Avro type `avro`); return an expression for them."""
    kind = avro if isinstance(avro, str) else avro.get("type") if isinstance(avro, dict) else "union"
    if isinstance(kind, dict | list):
        return _part(src, depth, kind, expr, owner, field_name)
    if kind in ("int", "long"):
        v, z = src.var("v"), src.var("z")
        src.emit(depth, f"{v} = {expr}")
        src.emit(depth, f"{z} = ({v} << 1) ^ ({v} >> 63)")
        return f"(_BYTES[{z}] if 0 <= {z} < 0x80 else _varint({z}))"
    if kind == "string":
        v = src.var("v")
        src.emit(depth, f"{v} = {expr}")
        return f"(_STRINGS.get({v}) or _string({v}))"
    if kind == "bytes":
        v, n = src.var("v"), src.var("n")
        src.emit(depth, f"{v} = {expr}")
        src.emit(depth, f"{n} = len({v}) << 1")
        return f"(_BYTES[{n}] if {n} < 0x80 else _varint({n})) + {v}"
    if kind in _PRIMITIVE_WIDTH:
        return f"{src.const('pack', struct.Struct('<d' if kind == 'double' else '<f').pack)}({expr})"
    if kind == "boolean":
        return f"(b'\\x01' if {expr} else b'\\x00')"
    if kind == "null":
        return "b''"
    part = src.var("p")
    if kind == "union":
        null, branch = _union_branch(avro)
        v = src.var("v")
        src.emit(depth, f"{v} = {expr}")
        src.emit(depth, f"if {v} is None: {part} = {_BYTES[2 * null]!r}")
        src.emit(depth, "else:")
        value = _part(src, depth + 1, branch, v, owner, field_name)
        src.emit(depth + 1, f"{part} = {_BYTES[2 * (1 - null)]!r} + {value}")
    elif kind in ("array", "map"):
        items, item, key, parts = src.var("items"), src.var("item"), src.var("key"), src.var("parts")
        values = avro["items"] if kind == "array" else avro["values"]
        src.emit(depth, f"{items} = {expr}")
        src.emit(depth, f"if not {items}: {part} = b'\\x00'")
        if kind == "array" and values == "double":
            src.emit(depth, f"else: {part} = _count(len({items})) + _doubles({items}) + b'\\x00'")
            return part
        src.emit(depth, "else:")
        src.emit(depth + 1, f"{parts} = [_count(len({items}))]")
        if kind == "array":
            src.emit(depth + 1, f"for {item} in {items}:")
            src.emit(depth + 2, f"{parts}.append({_part(src, depth + 2, values, item, owner, field_name)})")
        else:
            src.emit(depth + 1, f"for {key}, {item} in {items}.items():")
            src.emit(depth + 2, f"{parts}.append({_part(src, depth + 2, 'string', key, owner, field_name)})")
            src.emit(depth + 2, f"{parts}.append({_part(src, depth + 2, values, item, owner, field_name)})")
        src.emit(depth + 1, f"{parts}.append(b'\\x00')")
        src.emit(depth + 1, f"{part} = b''.join({parts})")
    elif kind == "record":
        if owner is None:
            raise _UnsupportedError("a record outside a record field")
        writer = src.const("write", _record_writer(avro, _nested_type(owner, field_name), b""))
        return f"{writer}({expr})"
    else:
        raise _UnsupportedError(f"Avro type {kind!r}")
    return part


def _runs(fields_: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """The fields in order, each run of doubles together (one struct call writes or reads it), others alone."""
    at = 0
    while at < len(fields_):
        run = 1
        while fields_[at]["type"] == "double" and at + run < len(fields_) and fields_[at + run]["type"] == "double":
            run += 1
        yield fields_[at:at + run]
        at += run


def _record_writer(schema: dict[str, Any], record_type: type[Record], header: bytes) -> Callable[[Any], bytes]:
    """The function from a record to `header` and its fields' bytes; a run of doubles is one struct.pack."""
    fields_ = _check_fields(schema, record_type)
    src = _Source()
    src.emit(0, "def write(r):")
    parts = [src.const("header", header)] if header else []
    for run in _runs(fields_):
        if len(run) > 1:
            pack = src.const("pack", struct.Struct(f"<{len(run)}d").pack)
            names = ", ".join(f"r.{item['name']}" for item in run)
            parts.append(f"{pack}({names})")
        else:
            parts.append(_part(src, 1, run[0]["type"], f"r.{run[0]['name']}", record_type, run[0]["name"]))
    src.emit(1, f"return b''.join(({', '.join(parts)},))")
    writer: Callable[[Any], bytes] = src.build("write")
    return writer


def compile_writer(schema: dict[str, Any], record_type: type[Record], schema_id: int) -> Writer:
    """A function from a record of `record_type` to its Confluent-framed Avro bytes (raises
    `_UnsupportedError`)."""
    writer: Writer = _record_writer(schema, record_type, HEADER.pack(MAGIC, schema_id))
    return writer


# reading: `data` is bytes, `pos` the position; any exception means corrupt bytes. A length past the end
# is not checked where it is read: the position only grows, so the caller's check that the datum ends
# exactly at the end of the bytes refuses it. A block count is checked: each item takes a byte at least
# (arrays of items that take none are not compiled), so more items than bytes left is corrupt, and a count
# of 2**62 is refused before it is looped over.
def _emit_long(src: _Source, depth: int, target: str) -> None:
    src.emit(depth, f"{target} = data[pos]")
    src.emit(depth, f"if {target} < 0x80:")
    src.emit(depth + 1, "pos += 1")
    src.emit(depth + 1, f"{target} = _ZIGZAG[{target}]")
    src.emit(depth, f"else: {target}, pos = _read_long(data, pos)")


def _read_value(src: _Source, depth: int, avro: Any, target: str, owner: type[Record] | None,
                field_name: str) -> None:
    kind = avro if isinstance(avro, str) else avro.get("type") if isinstance(avro, dict) else "union"
    if isinstance(kind, dict | list):
        return _read_value(src, depth, kind, target, owner, field_name)
    if kind in ("int", "long"):
        _emit_long(src, depth, target)
    elif kind in ("string", "bytes"):
        n, end = src.var("n"), src.var("end")
        decode = ".decode()" if kind == "string" else ""
        src.emit(depth, f"{n} = data[pos]")
        src.emit(depth, f"if {n} & 0x81:")  # a length of more than one byte, or a negative one
        src.emit(depth + 1, f"{n}, pos = _read_length(data, pos)")
        src.emit(depth + 1, f"{end} = pos + {n}")
        src.emit(depth + 1, f"{target} = data[pos:{end}]{decode}")
        src.emit(depth, "else:")
        src.emit(depth + 1, f"{end} = pos + 1 + ({n} >> 1)")
        src.emit(depth + 1, f"{target} = data[pos + 1:{end}]{decode}")
        src.emit(depth, f"pos = {end}")
    elif kind in _PRIMITIVE_WIDTH:
        unpack = src.const("unpack", struct.Struct("<d" if kind == "double" else "<f").unpack_from)
        src.emit(depth, f"{target}, = {unpack}(data, pos)")
        src.emit(depth, f"pos += {_PRIMITIVE_WIDTH[kind]}")
    elif kind == "boolean":
        src.emit(depth, f"{target} = data[pos] != 0")
        src.emit(depth, "pos += 1")
    elif kind == "null":
        src.emit(depth, f"{target} = None")
    elif kind == "union":
        null, branch = _union_branch(avro)
        index = src.var("index")
        _emit_long(src, depth, index)
        src.emit(depth, f"if {index} == {null}: {target} = None")
        src.emit(depth, f"elif {index} == {1 - null}:")
        _read_value(src, depth + 1, branch, target, owner, field_name)
        src.emit(depth, f"else: raise ValueError(f'union index {{{index}}} out of range')")
    elif kind in ("array", "map"):
        items_schema = avro["items"] if kind == "array" else avro["values"]
        if least_bytes(items_schema, {}) == 0:
            raise _UnsupportedError("arrays and maps of items that take no byte")
        count, item, key = src.var("count"), src.var("item"), src.var("key")
        src.emit(depth, f"{target} = []" if kind == "array" else f"{target} = {{}}")
        src.emit(depth, "while True:")
        _emit_long(src, depth + 1, count)
        src.emit(depth + 1, f"if {count} == 0: break")
        src.emit(depth + 1, f"if {count} < 0:")
        src.emit(depth + 2, f"{count} = -{count}")
        _emit_long(src, depth + 2, src.var("blocksize"))
        src.emit(depth + 1, f"if {count} > len(data) - pos:")
        src.emit(depth + 2, f"raise ValueError(f'a block of {{{count}}} items where {{len(data) - pos}} bytes "
                            "are left')")
        src.emit(depth + 1, f"for _ in range({count}):")
        if kind == "array":
            _read_value(src, depth + 2, items_schema, item, owner, field_name)
            src.emit(depth + 2, f"{target}.append({item})")
        else:
            _read_value(src, depth + 2, "string", key, owner, field_name)
            _read_value(src, depth + 2, items_schema, item, owner, field_name)
            src.emit(depth + 2, f"{target}[{key}] = {item}")
    elif kind == "record":
        if owner is None:
            raise _UnsupportedError("a record outside a record field")
        reader = src.const("read", _record_reader(avro, _nested_type(owner, field_name)))
        src.emit(depth, f"{target}, pos = {reader}(data, pos)")
    else:
        raise _UnsupportedError(f"Avro type {kind!r}")
    return None


def _record_reader(schema: dict[str, Any], record_type: type[Record]) -> Reader:
    """The function reading a record's fields from `pos` into a new record (set through its slots)."""
    fields_ = _check_fields(schema, record_type)
    if not fields_ or not all(isinstance(vars(record_type).get(item["name"]), MemberDescriptorType)
                              for item in fields_):
        raise _UnsupportedError(f"{record_type.__name__} has no fields, or no slot for each")
    src = _Source()
    cls = src.const("cls", record_type)
    src.emit(0, "def read(data, pos):")
    for run in _runs(fields_):
        if len(run) > 1:
            unpack = src.const("unpack", struct.Struct(f"<{len(run)}d").unpack_from)
            targets = "".join(f"f_{item['name']}, " for item in run)
            src.emit(1, f"{targets}= {unpack}(data, pos)")
            src.emit(1, f"pos += {8 * len(run)}")
        else:
            _read_value(src, 1, run[0]["type"], f"f_{run[0]['name']}", record_type, run[0]["name"])
    # A frozen dataclass's __init__ sets each field through object.__setattr__; its slots'
    # descriptors set them directly, at half the cost (no default is needed: every field was read).
    src.emit(1, f"o = _new({cls})")
    for item in fields_:
        setter = src.const("set", getattr(record_type, item["name"]).__set__)
        src.emit(1, f"{setter}(o, f_{item['name']})")
    src.emit(1, "return o, pos")
    reader: Reader = src.build("read")
    return reader


def compile_reader(schema: dict[str, Any], record_type: type[Record]) -> Reader:
    """A function reading a record of `record_type` written with `schema` itself (raises `_UnsupportedError`)."""
    return _record_reader(schema, record_type)


# -- the codec ----------------------------------------------------------------------------------
class Codec:
    """Encode and decode the records of each topic against a schema registry.

    Subjects follow the TopicNameStrategy (`<topic>-value`). Writer schemas fetched by id are
    cached, so the registry is asked once per id per process (an unknown or unusable id once per
    `REFUSAL_SECONDS`). Each (topic, record type) gets its compiled writer, and each (schema id, record
    type) whose writer schema is the record's own (same parsing canonical form) its compiled reader;
    others, once their writer schema is found to resolve, go through fastavro's resolution.
    """

    def __init__(self, registry: SchemaRegistry, clock: Callable[[], float] = time.monotonic) -> None:
        self._registry = registry
        self._clock = clock
        self._parsed: dict[str, tuple[Any, Names]] = {}
        self._subject_ids: dict[str, int] = {}
        self._writers: dict[int, tuple[Any, Names]] = {}
        self._canonical: dict[int, str] = {}
        """schema id -> the writer schema's parsing canonical form (the same as a record's own: compiled reader)."""
        self._refused: dict[int, tuple[float, type[DecodeError], str]] = {}
        """schema id -> (when, error type, reason): ids not to ask the registry for again just yet."""
        self._misses: deque[float] = deque()
        """When the last lookups that found no usable schema were made (at most `MISSES_PER_WINDOW`)."""
        self._highest = 0
        """The highest schema id found in the registry so far."""
        self._encoders: dict[tuple[str, type[Record]], Writer] = {}
        self._headers: dict[tuple[str, type[Record]], bytes] = {}
        self._decoders: dict[tuple[int, type[Record]], Reader | None] = {}
        self._forwarded: dict[int, tuple[Record, bytes]] = {}
        """id(record) -> (record, its framed bytes), for records decoded to be encoded again unchanged."""

    def _reader(self, record_type: type[Record]) -> Any:
        return self._reader_named(record_type)[0]

    def _reader_named(self, record_type: type[Record]) -> tuple[Any, Names]:
        if record_type.SCHEMA not in self._parsed:
            self._parsed[record_type.SCHEMA] = parse_named(load_schema(record_type.SCHEMA))
        return self._parsed[record_type.SCHEMA]

    def register(self, topic: str, record_type: type[Record]) -> int:
        """Register the record's schema under `<topic>-value` and remember its id for encoding."""
        subject = f"{topic}-value"
        found = self._subject_ids.get(subject)
        return found if found is not None else self.register_schema(subject, load_schema(record_type.SCHEMA))

    def register_schema(self, subject: str, schema: Schema) -> int:
        """Register a schema (also one not of `schemas/`, as Rubin's alert packet) and return its id. An id refused
        before (a made-up id read before the registry gave it out) is refused no longer: it is ours now."""
        if subject not in self._subject_ids:
            schema_id = self._subject_ids[subject] = self._registry.register(subject, schema)
            self._refused.pop(schema_id, None)
        return self._subject_ids[subject]

    def encode(self, topic: str, record: Record) -> bytes:
        """Confluent-framed Avro bytes of `record` for `topic`."""
        key = (topic, type(record))
        encoder = self._encoders.get(key)
        if encoder is None:
            encoder = self._encoder(topic, type(record))
        if self._forwarded:
            forwarded = self._forwarded.pop(id(record), None)
            if forwarded is not None and forwarded[0] is record:
                return self._headers[key] + memoryview(forwarded[1])[HEADER.size:]
        return encoder(record)

    def _encoder(self, topic: str, record_type: type[Record]) -> Writer:
        schema_id = self.register(topic, record_type)
        self._headers[(topic, record_type)] = HEADER.pack(MAGIC, schema_id)
        try:
            encoder = compile_writer(load_schema(record_type.SCHEMA), record_type, schema_id)
        except _UnsupportedError:
            parsed = self._reader(record_type)

            def encoder(record: Record) -> bytes:
                return frame(schema_id, write_datum(parsed, record.to_dict()))
        self._encoders[(topic, record_type)] = encoder
        return encoder

    def decode(self, data: bytes | None, record_type: type[R], *, accept_json: bool = False,
               forward: bool = False) -> R:
        """The record in `data`: Confluent-framed Avro, or (if `accept_json`) a JSON object.

        With `forward`, the caller means to encode this very record again unchanged (the gather forwards each
        detector's first outcome as its result): when it was written with the record's own schema, its bytes
        are kept, and `encode` re-frames them with the output topic's schema id instead of encoding it (the
        record's lists and dicts must then not be changed in place, as no code here does).

        Raises:
            WireFormatError: not framed Avro nor an accepted JSON object, or too large.
            UnknownSchemaIdError: the schema id is not in the registry.
            AvroDataError: truncated, trailing or corrupt Avro bytes.
            SchemaMismatchError: wrong types, or a writer schema that cannot be resolved or is refused.
            FieldTooLongError: a field longer than its schema allows.
        """
        if data is None:
            raise WireFormatError("empty value (tombstone): an event is expected")
        if len(data) > MAX_MESSAGE_BYTES:
            raise WireFormatError(f"value of {len(data)} bytes exceeds the {MAX_MESSAGE_BYTES} byte limit")
        if accept_json and data.lstrip()[:1] == b"{":
            return within_limits(record_type.from_dict(from_json(data, load_schema(record_type.SCHEMA),
                                                                 self._reader(record_type))))
        if len(data) < HEADER.size or data[0] != MAGIC:
            unframe(data)  # raises the reason
        schema_id = HEADER.unpack_from(data)[1]
        key = (schema_id, record_type)
        decoder = self._decoders[key] if key in self._decoders else self._decoder(schema_id, record_type)
        if decoder is None:
            return within_limits(record_type.from_dict(self._read(schema_id, data[HEADER.size:],
                                                                  self._reader(record_type))))
        try:
            record, end = decoder(data, HEADER.size)
        except DecodeError:
            raise
        except Exception as error:  # any failure on untrusted bytes means "not decodable"
            raise AvroDataError(f"Avro data does not match its writer schema: {error!r}") from error
        if end != len(data):
            raise AvroDataError(f"Avro data is truncated or has trailing bytes ({end - HEADER.size} of "
                                f"{len(data) - HEADER.size} used)")
        within_limits(record)
        if forward:
            if len(self._forwarded) >= FORWARDS_KEPT:  # decoded and never encoded (duplicates): let them go
                self._forwarded.clear()
            self._forwarded[id(record)] = (record, data)
        decoded: R = record
        return decoded

    def _decoder(self, schema_id: int, record_type: type[Record]) -> Reader | None:
        """The compiled reader when the writer schema is the record's own, else None (fastavro resolves), or one
        that raises `SchemaMismatchError` when the writer schema does not resolve against the record's."""
        writer, writer_names = self._writer(schema_id)
        own = load_schema(record_type.SCHEMA)
        decoder = None
        if self._canonical[schema_id] == to_parsing_canonical_form(own):
            try:
                decoder = compile_reader(own, record_type)
            except _UnsupportedError:
                decoder = None
        else:
            reader, reader_names = self._reader_named(record_type)
            try:
                why = mismatch(writer, reader, writer_names, reader_names)
            except RecursionError:
                why = "it is nested too deep to compare"
            if why is not None:
                decoder = _refusal(f"writer schema id {schema_id} cannot be read as {record_type.__name__}: {why}")
        self._decoders[(schema_id, record_type)] = decoder
        return decoder

    def decode_any(self, data: bytes | None) -> dict[str, Any]:
        """A Confluent-framed Avro value read with its own writer schema: for records that are not ours (Rubin's
        alert packets), shown as they are.

        Raises:
            DecodeError: not framed Avro, an unknown schema id, or corrupt Avro bytes.
        """
        if data is None:
            raise WireFormatError("empty value (tombstone): an event is expected")
        schema_id, payload = unframe(data)
        writer, _names = self._writer(schema_id)
        return self._read(schema_id, payload, writer)

    def _read(self, schema_id: int, payload: bytes, reader: Any) -> dict[str, Any]:
        """A datum of a writer schema that is not the record's own: walked, bounded, before fastavro reads it
        (fastavro trusts block counts)."""
        writer, names = self._writers[schema_id]
        try:
            check_datum(payload, writer, names)
        except (ValueError, RecursionError) as error:
            raise AvroDataError(f"Avro data does not fit its writer schema: {error}") from error
        return read_datum(payload, writer, reader)

    def _writer(self, schema_id: int) -> tuple[Any, Names]:
        """The writer schema of an id, parsed, with its named types (raises the `DecodeError` that refused it)."""
        found = self._writers.get(schema_id)
        if found is not None:
            return found
        refused = self._refused.get(schema_id)
        now = self._clock()
        if refused is not None and now - refused[0] < REFUSAL_SECONDS:
            raise refused[1](refused[2])
        while self._misses and now - self._misses[0] >= REFUSAL_SECONDS:
            self._misses.popleft()
        if len(self._misses) >= MISSES_PER_WINDOW and schema_id > self._highest + NEAR_IDS:
            raise UnknownSchemaIdError(f"schema id {schema_id} not looked up: {len(self._misses)} unknown or "
                                       f"unusable schema ids in the last {REFUSAL_SECONDS:g} s")
        try:
            found = self._fetch(schema_id)
        except DecodeError as error:
            if len(self._refused) >= REFUSALS_KEPT:
                self._refused.clear()
            self._refused[schema_id] = (now, type(error), str(error))
            self._misses.append(now)
            raise
        self._writers[schema_id] = found
        self._highest = max(self._highest, schema_id)
        return found

    def _fetch(self, schema_id: int) -> tuple[Any, Names]:
        """Ask the registry for a writer schema, and parse and check it."""
        schema = self._registry.schema_by_id(schema_id)
        if schema is None:
            raise UnknownSchemaIdError(f"schema id {schema_id} is not in the schema registry")
        try:
            writer, names = parse_named(schema)
            check_writer(writer, names)
            self._canonical[schema_id] = to_parsing_canonical_form(schema)
        except UnsafeSchemaError as error:
            raise SchemaMismatchError(f"writer schema id {schema_id} is refused: {error}") from error
        except Exception as error:  # fastavro's parse errors, or a schema too deep: anything from the registry
            raise SchemaMismatchError(f"writer schema id {schema_id} is not a usable Avro schema: {error!r}"
                                      ) from error
        return writer, names


def _refusal(reason: str) -> Reader:
    """A reader for a writer schema that does not resolve: every datum is a `SchemaMismatchError`."""
    def refuse(data: bytes, pos: int) -> tuple[Any, int]:
        raise SchemaMismatchError(reason)
    return refuse
