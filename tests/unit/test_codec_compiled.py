"""The compiled record codecs against fastavro: the same bytes out, the same records in, typed errors on junk."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.errors import AvroDataError
from streams.runtime.driver import MemoryRegistry
from streams.serde.base import Record
from streams.serde.codec import (
    Codec,
    FieldTooLongError,
    compile_reader,
    compile_writer,
    frame,
    parse,
    read_datum,
    write_datum,
)
from streams.serde.records import RECORD_TYPES, CcdResult, DetectorOutcome, Metric, VisitProgress
from streams.serde.schemas import Schema, load_schema

EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LONGS = st.integers(-(2 ** 63), 2 ** 63 - 1)


def values(avro: Any, record_type: type[Record], name: str) -> st.SearchStrategy[Any]:
    """Values of an Avro type (records of a nested type come from the owner's NESTED)."""
    if isinstance(avro, list):
        [branch] = [b for b in avro if b != "null"]
        return st.none() | values(branch, record_type, name)
    kind = avro if isinstance(avro, str) else avro["type"]
    simple: dict[str, st.SearchStrategy[Any]] = {
        "string": st.text(max_size=80), "bytes": st.binary(max_size=80), "boolean": st.booleans(),
        "int": st.integers(-(2 ** 31), 2 ** 31 - 1), "long": LONGS, "double": st.floats(), "null": st.none()}
    if kind in simple:
        return simple[kind]
    if kind == "array":
        return st.lists(values(avro["items"], record_type, name), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=8), values(avro["values"], record_type, name), max_size=4)
    return records(avro, record_type.NESTED[name][1])


def records(schema: Schema, record_type: type[Record]) -> st.SearchStrategy[Record]:
    """Records of `record_type` with any field values its schema allows."""
    return st.fixed_dictionaries({item["name"]: values(item["type"], record_type, item["name"])
                                  for item in schema["fields"]}).map(lambda fields: record_type(**fields))


def same(a: Record, b: Record) -> bool:
    """Equal records, NaN equal to itself (compared through fastavro's encoding)."""
    parsed = parse(load_schema(a.SCHEMA))
    return type(a) is type(b) and write_datum(parsed, a.to_dict()) == write_datum(parsed, b.to_dict())


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_every_schema_compiles(name: str) -> None:
    """No schema of ours falls back to fastavro."""
    compile_writer(load_schema(name), RECORD_TYPES[name], 1)
    compile_reader(load_schema(name), RECORD_TYPES[name])


@EXAMPLES
@given(st.data())
@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_compiled_bytes_and_records_are_fastavros(name: str, data: st.DataObject) -> None:
    """A record encodes to fastavro's very bytes, and those bytes read back to the same record."""
    schema, record_type = load_schema(name), RECORD_TYPES[name]
    record = data.draw(records(schema, record_type))
    expected = frame(9, write_datum(parse(schema), record.to_dict()))
    assert compile_writer(schema, record_type, 9)(record) == expected
    back, end = compile_reader(schema, record_type)(expected, 5)
    assert end == len(expected) and same(back, record)
    assert same(back, record_type.from_dict(read_datum(expected[5:], parse(schema), parse(schema))))


@EXAMPLES
@given(st.binary(max_size=300))
@pytest.mark.parametrize("record_type", [CcdResult, VisitProgress, Metric])
def test_junk_is_refused_or_read_as_fastavro_reads_it(record_type: type[Record], junk: bytes) -> None:
    """Arbitrary bytes after a valid header: an AvroDataError (or a field over its limit), or exactly what fastavro
    reads."""
    codec = Codec(MemoryRegistry())
    schema_id = codec.register("t", record_type)
    try:
        record = codec.decode(frame(schema_id, junk), record_type)
    except (AvroDataError, FieldTooLongError):
        return
    parsed = parse(load_schema(record_type.SCHEMA))
    assert same(record, record_type.from_dict(read_datum(junk, parsed, parsed)))


def test_blocks_with_byte_sizes_are_read() -> None:
    """Arrays and maps written in several blocks, negative counts followed by byte sizes, are read whole."""
    ids = b"\x03\x04" + b"\x02\x04" + b"\x02" + b"\x06" + b"\x00"  # -2 items (2 bytes): 1, 2; 1 item: 3; end
    metrics = b"\x01\x14" + b"\x02a" + struct.pack("<d", 1.5) + b"\x00"  # -1 entry (10 bytes): a -> 1.5; end
    datum = b"\x02" + b"\x02s" + struct.pack("<2d", 0.0, 0.0) + ids + metrics
    schema = load_schema("visit_progress")["fields"][10]["type"]["items"]
    outcome, end = compile_reader(schema, DetectorOutcome)(datum, 0)
    assert end == len(datum)
    assert outcome == DetectorOutcome(detector=1, status="s", exposure_ids=[1, 2, 3], metrics={"a": 1.5})
    assert DetectorOutcome.from_dict(read_datum(datum, parse(schema), parse(schema))) == outcome


def test_forwarded_records_are_reframed_not_reencoded() -> None:
    """A record decoded with `forward` comes out as its own bytes under the output topic's schema id, once (the
    input's writer schema differs only in its doc, so it has another id and the same canonical form)."""
    registry = MemoryRegistry()
    codec = Codec(registry)
    result = CcdResult(instrument="LSSTCam", group_id="g", detector=4, status="success", metrics={"x": math.nan})
    writer_id = registry.register("outcomes-value", {**load_schema(CcdResult.SCHEMA), "doc": "another producer's"})
    data = frame(writer_id, codec.encode("outcomes", result)[5:])
    decoded = codec.decode(data, CcdResult, forward=True)
    out = codec.encode("results", decoded)
    assert out[5:] == data[5:] and out[:5] == codec.encode("results", result)[:5] != data[:5]
    assert codec.encode("results", decoded) == out  # encoded again: the same bytes, the usual way
