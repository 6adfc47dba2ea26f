"""The codec against a hostile registry and hostile bytes: writer schemas that do not resolve or describe endless
data are refused, block counts past the bytes are refused on every path, unknown ids are not asked for again at
once, and fields longer than their schema allows are refused by name."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from streams.errors import AvroDataError, FieldTooLongError, SchemaMismatchError, UnknownSchemaIdError
from streams.runtime.driver import MemoryRegistry
from streams.serde.codec import MISSES_PER_WINDOW, NEAR_IDS, REFUSAL_SECONDS, Codec, frame, parse_named, write_datum
from streams.serde.records import Metric, NextVisit, OcpsJobEvent, RawImageAvailable
from streams.serde.schemas import Schema, load_schema
from streams.serde.writer_schemas import mismatch
from tests.fuzzing import varint
from tests.unit.core.flow import next_visit

HUGE_COUNT = 2**62
CHILD_TIMEOUT_S = 120
"""How long the child decoding a hostile message may take before the test calls it hung (it takes well under
a second when the codec refuses the message; without the guards it never ends)."""


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def next_visit_with(*extra: dict[str, Any]) -> Schema:
    """nextVisit's own schema, with more fields after its own (as a newer or a hostile writer has)."""
    schema: Schema = json.loads(json.dumps(load_schema("next_visit")))
    schema["fields"] += list(extra)
    return schema


HOSTILE_ARRAY_OF_NULLS = next_visit_with({"name": "x", "type": {"type": "array", "items": "null"}})
HOSTILE_ARRAY_OF_BOOLEANS = next_visit_with({"name": "x", "type": {"type": "array", "items": "boolean"},
                                             "default": []})


def own_fields(visit: NextVisit) -> bytes:
    """The Avro bytes of a nextVisit's own fields (the hostile writers' extra field follows them)."""
    return write_datum(parse_named(load_schema("next_visit"))[0], visit.to_dict())


def decode_in_child(writer: Schema, payload: bytes) -> str:
    """The outcome of decoding `payload` (framed with `writer`'s id) as a NextVisit, in a child process: the
    name of the error raised, or "decoded". A decode that loops while holding the GIL would stop a thread's
    timeout too, so only another process can tell it hung."""
    code = textwrap.dedent(f"""
        import json, sys
        from streams.serde.codec import Codec, frame
        from streams.serde.records import NextVisit
        class Registry:
            def register(self, subject, schema): return 1
            def schema_by_id(self, schema_id): return json.loads({json.dumps(json.dumps(writer))})
        try:
            Codec(Registry()).decode(frame(7, bytes.fromhex("{payload.hex()}")), NextVisit)
            print("decoded")
        except Exception as error:
            print(type(error).__name__, error)
        """)
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                              check=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"decoding a {len(payload) + 5}-byte message did not end: the worker would be frozen")
    return done.stdout.strip()


def test_the_16_byte_array_of_nulls_message_is_refused() -> None:
    """The issue's message: a writer schema of one array<null> field, a block count of 2**62 (16 bytes in all).
    It is a SchemaMismatchError at once; before, fastavro looped over the nulls holding the GIL."""
    writer = {"type": "record", "name": "logevent_nextVisit", "namespace": "lsst.sal.ScriptQueue",
              "fields": [{"name": "x", "type": {"type": "array", "items": "null"}}]}
    payload = varint(HUGE_COUNT) + b"\x00"
    assert len(frame(7, payload)) == 16
    outcome = decode_in_child(writer, payload)
    assert outcome.startswith("SchemaMismatchError") and "take no byte" in outcome, outcome


def test_an_array_the_reader_skips_cannot_claim_more_items_than_bytes() -> None:
    """A writer with an extra array<boolean> field the reader does not have (fastavro skips it without looking
    for the end of the bytes) and a count of 2**62 is an AvroDataError at once."""
    payload = own_fields(next_visit()) + varint(HUGE_COUNT) + b"\x00"
    outcome = decode_in_child(HOSTILE_ARRAY_OF_BOOLEANS, payload)
    assert outcome.startswith("AvroDataError") and "items where" in outcome, outcome


def test_a_schema_with_an_array_of_nulls_is_refused_whatever_the_data() -> None:
    """A writer schema with an array of nulls is refused before any byte is read, even for a datum of one null."""
    registry = MemoryRegistry()
    schema_id = registry.register("s", HOSTILE_ARRAY_OF_NULLS)
    with pytest.raises(SchemaMismatchError, match=f"schema id {schema_id} is refused"):
        Codec(registry).decode(frame(schema_id, own_fields(next_visit()) + varint(1) + b"\x00"), NextVisit)


def test_a_block_count_past_the_bytes_is_refused_by_the_compiled_reader() -> None:
    """With the record's own writer schema (the compiled reader), a position array claiming 2**62 doubles is
    refused as corrupt before it is looped over."""
    codec = Codec(MemoryRegistry())
    header = codec.encode("nv", next_visit())[:5]
    datum = own_fields(next_visit())
    position = varint(2) + struct.pack("<2d", 10.0, -20.0) + b"\x00"
    hostile = datum.replace(position, varint(HUGE_COUNT) + struct.pack("<2d", 10.0, -20.0) + b"\x00")
    assert hostile != datum
    with pytest.raises(AvroDataError, match="items where"):
        codec.decode(header + hostile, NextVisit)


def test_a_newer_writer_with_more_fields_and_an_older_one_with_fewer_still_read() -> None:
    """Schema evolution still works: a writer with an extra field (a good array of booleans) and a writer lacking a
    field that has a default both decode, through the bounded walk."""
    registry = MemoryRegistry()
    codec = Codec(registry)
    newer = registry.register("s", HOSTILE_ARRAY_OF_BOOLEANS)
    payload = own_fields(next_visit()) + varint(3) + b"\x01\x00\x01" + b"\x00"
    assert codec.decode(frame(newer, payload), NextVisit) == next_visit()
    older_schema = json.loads(json.dumps(load_schema("next_visit")))
    older_schema["fields"] = [f for f in older_schema["fields"] if f["name"] != "totalCheckpoints"]
    older = registry.register("s", older_schema)
    datum = write_datum(parse_named(older_schema)[0], next_visit().to_dict())
    assert codec.decode(frame(older, datum), NextVisit) == next_visit()


@pytest.mark.parametrize(("writer", "reason"), [
    (load_schema("raw_image_available"), "is not lsst.sal.ScriptQueue.logevent_nextVisit"),
    ("string", "string cannot be read as record"),
    (load_schema("next_visit") | {"fields": [{**f, "type": "string", "default": ""} if f["name"] == "nimages" else f
                                              for f in load_schema("next_visit")["fields"]]},
     "nimages: string cannot be read as int"),
])
def test_a_writer_schema_that_does_not_resolve_is_refused_once(writer: Schema, reason: str) -> None:
    """A writer of another record, of no record, or with a field of another type is a SchemaMismatchError naming
    why, before any byte is read; the registry is asked once for it however many messages carry it."""
    registry = MemoryRegistry()
    codec = Codec(registry)
    schema_id = registry.register("s", writer)
    for _ in range(50):
        with pytest.raises(SchemaMismatchError, match=reason):
            codec.decode(frame(schema_id, b"\x00" * 40), NextVisit)
    assert registry.lookups == 1


@pytest.mark.parametrize("writer", [{"type": "record", "name": "R", "fields": [{"name": "a", "type": "nope"}]},
                                    {"type": "object", "properties": {}}, {"no": "type"}])
def test_a_registry_entry_that_is_no_avro_schema_is_a_schema_mismatch(writer: Any) -> None:
    """Whatever the registry holds under an id, a schema fastavro cannot parse is a typed refusal."""
    registry = MemoryRegistry()
    schema_id = registry.register("s", writer)
    with pytest.raises(SchemaMismatchError, match="not a usable Avro schema"):
        Codec(registry).decode(frame(schema_id, b"\x00"), NextVisit)


def test_a_burst_of_an_unknown_id_asks_the_registry_once() -> None:
    """A thousand messages naming an id the registry lacks are each an UnknownSchemaIdError, for one lookup; once
    `REFUSAL_SECONDS` have passed, the id is asked for again (and read, if it was registered since)."""
    registry, clock = MemoryRegistry(), Clock()
    codec = Codec(registry, clock=clock)
    message = frame(1, own_fields(next_visit()))
    for _ in range(1000):
        with pytest.raises(UnknownSchemaIdError, match="schema id 1 is not in the schema registry"):
            codec.decode(message, NextVisit)
    assert registry.lookups == 1
    registry.register("s", load_schema("next_visit"))
    clock.now += REFUSAL_SECONDS
    assert codec.decode(message, NextVisit) == next_visit()
    assert registry.lookups == 2


def test_an_id_refused_then_registered_by_the_codec_itself_is_read_at_once() -> None:
    """A made-up id refused just before the registry gives that id to a schema this codec registers is read at
    once, not refused for `REFUSAL_SECONDS`: the codec's own records are never dead letters."""
    registry, clock = MemoryRegistry(), Clock()
    codec = Codec(registry, clock=clock)
    with pytest.raises(UnknownSchemaIdError, match="schema id 1 is not in the schema registry"):
        codec.decode(frame(1, own_fields(next_visit())), NextVisit)
    encoded = codec.encode("nv", next_visit())
    assert encoded[1:5] == frame(1, b"")[1:5]
    assert codec.decode(encoded, NextVisit) == next_visit()


def test_a_burst_of_distinct_made_up_ids_asks_the_registry_a_bounded_number_of_times() -> None:
    """Ten thousand messages, each naming another id far above the registry's, cost `MISSES_PER_WINDOW` lookups,
    not one each; every message is an UnknownSchemaIdError. A schema registered during the burst (the next id in
    the registry's order) is still read at once, and once the window has passed a far id is asked for again."""
    registry, clock = MemoryRegistry(), Clock()
    codec = Codec(registry, clock=clock)
    payload = own_fields(next_visit())
    far = range(NEAR_IDS + 1, NEAR_IDS + 10_001)
    for schema_id in far:
        with pytest.raises(UnknownSchemaIdError, match=f"schema id {schema_id} "):
            codec.decode(frame(schema_id, payload), NextVisit)
    assert registry.lookups == MISSES_PER_WINDOW
    real = registry.register("s", load_schema("next_visit"))
    assert codec.decode(frame(real, payload), NextVisit) == next_visit()
    assert registry.lookups == MISSES_PER_WINDOW + 1
    with pytest.raises(UnknownSchemaIdError, match="not looked up"):
        codec.decode(frame(far[0] + 2 * NEAR_IDS, payload), NextVisit)
    clock.now += REFUSAL_SECONDS
    with pytest.raises(UnknownSchemaIdError, match="is not in the schema registry"):
        codec.decode(frame(far[0] + 2 * NEAR_IDS, payload), NextVisit)


# -- field limits ---------------------------------------------------------------------------------------
def test_a_million_character_survey_is_refused_naming_the_field_and_its_limit() -> None:
    """A nextVisit's survey of 1,000,000 characters is a FieldTooLongError (a DecodeError: a dead letter) saying
    which field, how long it is and its limit, in Avro and in JSON."""
    codec = Codec(MemoryRegistry())
    visit = next_visit(survey="BLOCK-" + "x" * 999_994)
    survey_limit = next(f["maxLength"] for f in load_schema("next_visit")["fields"] if f["name"] == "survey")
    reason = f"NextVisit.survey is 1000000 characters long, over its limit of {survey_limit}"
    with pytest.raises(FieldTooLongError, match=reason):
        codec.decode(codec.encode("nv", visit), NextVisit)
    with pytest.raises(FieldTooLongError, match=reason):
        codec.decode(json.dumps(visit.to_dict()).encode(), NextVisit, accept_json=True)
    longest = next_visit(survey="BLOCK-" + "x" * (survey_limit - 6))
    assert codec.decode(codec.encode("nv", longest), NextVisit) == longest


@pytest.mark.parametrize(("record", "reason"), [
    (RawImageAvailable(instrument="LSSTCam", group_id="g", detector=1, uri="s3://b/" + "k" * 5000),
     "RawImageAvailable.uri is 5007 characters long, over its limit of 2048"),
    (OcpsJobEvent(action="create", job_id="j", parameters={f"p{i}": "v" for i in range(101)}),
     "OcpsJobEvent.parameters has 101 items, over its limit of 100"),
    (OcpsJobEvent(action="create", job_id="j", parameters={"p": "v" * 5000}),
     "OcpsJobEvent.parameters is 5000 characters long, over its limit of 4096"),
    (Metric(name="m", value=1.0, instrument="LSSTCam", group_id="g", timestamp=1.0, tags={"k" * 300: "v"}),
     "Metric.tags is 300 characters long, over its limit of 256"),
])
def test_strings_arrays_and_maps_of_input_records_are_bounded(record: Any, reason: str) -> None:
    """URIs, each value and key of a map, and the number of items are bounded where the schema says."""
    codec = Codec(MemoryRegistry())
    with pytest.raises(FieldTooLongError, match=reason):
        codec.decode(codec.encode("t", record), type(record))


# -- Avro's resolution rules, as `mismatch` applies them ------------------------------------------------
@pytest.mark.parametrize(("writer", "reader", "fits"), [
    ("int", "long", True), ("int", "double", True), ("long", "int", False), ("string", "bytes", True),
    ("null", ["null", "string"], True), (["null", "int"], ["null", "long"], True), (["null", "int"], "int", False),
    ({"type": "array", "items": "int"}, {"type": "array", "items": "long"}, True),
    ({"type": "map", "values": "string"}, {"type": "map", "values": "int"}, False),
    ({"type": "enum", "name": "E", "symbols": ["a", "b"]}, {"type": "enum", "name": "E", "symbols": ["a"]}, False),
    ({"type": "fixed", "name": "F", "size": 4}, {"type": "fixed", "name": "F", "size": 8}, False),
    ({"type": "record", "name": "a.R", "fields": []},
     {"type": "record", "name": "b.R", "fields": [{"name": "x", "type": "int", "default": 0}]}, True),
    ({"type": "record", "name": "R", "fields": []}, {"type": "record", "name": "R", "fields": [
        {"name": "x", "type": "int"}]}, False),
    ({"type": "record", "name": "R", "fields": [{"name": "old", "type": "int"}]},
     {"type": "record", "name": "R", "fields": [{"name": "new", "aliases": ["old"], "type": "long"}]}, True),
])
def test_writer_schemas_resolve_as_avro_says(writer: Any, reader: Any, fits: bool) -> None:
    """Promotions, unions, arrays, maps, enums, fixed, record names (unqualified), defaults and aliases."""
    (w, w_names), (r, r_names) = parse_named(writer), parse_named(reader)
    assert (mismatch(w, r, w_names, r_names) is None) == fits
