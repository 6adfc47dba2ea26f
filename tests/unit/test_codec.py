"""The codec's pure parts: framing, Avro round trips for every schema, the JSON path, errors."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.errors import AvroDataError, SchemaMismatchError, WireFormatError
from streams.serde.base import Record
from streams.serde.codec import frame, from_json, parse, read_datum, unframe, write_datum
from streams.serde.records import RECORD_TYPES, NextVisit
from streams.serde.schemas import load_schema

SAMPLES: dict[str, Record] = {
    "next_visit": NextVisit(salIndex=1, private_sndStamp=1.8e9, groupId="2026-11-25T01:02:03.000",
                            coordinateSystem=2, position=[10.5, -30.25], rotationSystem=2,
                            cameraAngle=12.0, filters="r_57", dome=2, duration=32.0, nimages=2,
                            instrument="LSSTCam", survey="BLOCK-365"),
}


def sample(name: str) -> Record:
    """A record of every schema: the hand-made ones above, or one with every required field set."""
    if name in SAMPLES:
        return SAMPLES[name]
    record_type = RECORD_TYPES[name]
    values: dict[str, Any] = {}
    for item in load_schema(name)["fields"]:
        if "default" not in item:
            values[item["name"]] = {"string": "x", "int": 7, "long": 7, "double": 1.5}[item["type"]]
    return record_type(**values)


@pytest.mark.parametrize("name", sorted(RECORD_TYPES))
def test_every_schema_round_trips_through_confluent_framing(name: str) -> None:
    """A record encoded and framed comes back equal, with its schema id."""
    record = sample(name)
    parsed = parse(load_schema(name))
    schema_id, payload = unframe(frame(42, write_datum(parsed, record.to_dict())))
    assert schema_id == 42
    assert type(record).from_dict(read_datum(payload, parsed, parsed)) == record


def test_json_object_decodes_like_avro() -> None:
    """A JSON line (as typed into kcat -P) gives the same record as the Avro bytes."""
    record = SAMPLES["next_visit"]
    schema = load_schema("next_visit")
    decoded = from_json(json.dumps(record.to_dict()).encode(), schema, parse(schema))
    assert NextVisit.from_dict(decoded) == record


def test_json_fills_defaults_and_widens_numbers() -> None:
    """Missing fields take their schema defaults; JSON integers become doubles where declared."""
    schema = load_schema("next_visit")
    text = b'{"groupId": "g", "instrument": "LSSTCam", "position": [1, 2]}'
    decoded = from_json(text, schema, parse(schema))
    assert decoded["position"] == [1.0, 2.0] and isinstance(decoded["position"][0], float)
    assert decoded["nimages"] == 0 and decoded["filters"] == ""


@pytest.mark.parametrize(("data", "error"), [
    (b"", WireFormatError),
    (b"\x00\x00", WireFormatError),
    (b"\x01\x00\x00\x00\x01abc", WireFormatError),
])
def test_bad_framing_is_a_wire_format_error(data: bytes, error: type[Exception]) -> None:
    """Short input or a magic byte other than 0 is refused with the reason."""
    with pytest.raises(error):
        unframe(data)


def test_truncated_avro_is_a_data_error() -> None:
    """Cutting bytes off a datum is detected."""
    parsed = parse(load_schema("next_visit"))
    payload = write_datum(parsed, SAMPLES["next_visit"].to_dict())
    with pytest.raises(AvroDataError):
        read_datum(payload[:-5], parsed, parsed)


def test_trailing_bytes_are_a_data_error() -> None:
    """Bytes after a complete datum mean the writer schema is not what the id says."""
    parsed = parse(load_schema("next_visit"))
    payload = write_datum(parsed, SAMPLES["next_visit"].to_dict())
    with pytest.raises(AvroDataError, match="trailing"):
        read_datum(payload + b"\x02", parsed, parsed)


def test_incompatible_writer_is_a_schema_mismatch() -> None:
    """A writer whose field types cannot be resolved (string where int is read) is refused."""
    reader_schema = load_schema("raw_image_available")
    writer_schema = json.loads(json.dumps(reader_schema))
    for item in writer_schema["fields"]:
        if item["name"] == "detector":
            item["type"] = "string"
    writer = parse(writer_schema)
    datum = sample("raw_image_available").to_dict() | {"detector": "R22_S11"}
    with pytest.raises(SchemaMismatchError):
        read_datum(write_datum(writer, datum), writer, parse(reader_schema))


@pytest.mark.parametrize(("text", "error", "reason"), [
    (b"{not json", WireFormatError, "not valid JSON"),
    (b"[1, 2]", WireFormatError, "not an object"),
    (b'{"groupId": 5}', SchemaMismatchError, "groupId"),
    (b'{"nimages": true}', SchemaMismatchError, "nimages"),
    (b'{"bogus": 1}', SchemaMismatchError, "unknown fields"),
    (b'{"duration": NaN}', SchemaMismatchError, "finite"),
])
def test_bad_json_names_the_problem(text: bytes, error: type[Exception], reason: str) -> None:
    """Each kind of bad JSON raises its typed error, whose message says what is wrong."""
    schema = load_schema("next_visit")
    with pytest.raises(error, match=reason):
        from_json(text, schema, parse(schema))


def test_missing_required_json_field_is_refused() -> None:
    """A JSON raw arrival without its URI (no default) is refused by name."""
    schema = load_schema("raw_image_available")
    with pytest.raises(SchemaMismatchError, match="uri"):
        from_json(b'{"instrument": "LSSTCam", "group_id": "g", "detector": 1}', schema, parse(schema))


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_escape_as_untyped_errors(data: bytes) -> None:
    """Whatever the bytes, decoding succeeds or raises one of the codec's own errors."""
    parsed = parse(load_schema("next_visit"))
    try:
        _, payload = unframe(data)
        datum = read_datum(payload, parsed, parsed)
    except (WireFormatError, AvroDataError, SchemaMismatchError):
        return
    assert isinstance(datum, dict)
    assert all(math.isfinite(v) or math.isnan(v) for v in datum["position"])
