"""Hostile input for the fuzz tests: a catalogue of nasty values, strategies built on it, and the
same decode-and-check chain each input agent runs, to say what must become of every input.

The unit tier feeds thousands of these to the chain (tests/unit/test_fuzz_inputs.py); the
integration tier sends a few hundred to a real worker and checks each one's dead letter
(tests/integration/test_fuzzed_input.py). `TRIED` counts the inputs and their outcomes; the
run's summary prints it.
"""

from __future__ import annotations

import itertools
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from connectors.s3_notifications import Ignored, Part, triage
from streams.config import Settings
from streams.core.arrivals import check_raw
from streams.core.instruments import Instrument
from streams.core.policy import Policy
from streams.core.surveys import SurveyTable
from streams.core.visit import plan_cancel, plan_visit
from streams.errors import DecodeError, IgnorableEvent, InvalidEventError
from streams.serde.base import Record
from streams.serde.codec import Codec, frame, parse, write_datum
from streams.serde.records import Metric, NextVisit, NextVisitCanceled, OcpsJobEvent, RawImageAvailable
from streams.serde.schemas import FieldLimit, field_limits, load_schema

TRIED: Counter[str] = Counter()
"""Inputs tried in this test run, by outcome."""

NASTY_FLOATS = [math.nan, math.inf, -math.inf, -1.0, 0.0, 1e308, -1e308, 5e-324, 1e12, -1e9]
NASTY_INTS = [-1, 0, 1, 188, 189, 2**31 - 1, -(2**31), 10**6]
NASTY_LONGS = [2**63 - 1, -(2**63), 2**40]
TOO_BIG_INTS = [2**63, -(2**63) - 1, 10**30]
NASTY_STRINGS = ["", " ", "\x00", "../../etc/passwd", "$(touch /tmp/pwned)", "x; rm -rf /", "`id`",
                 "--config=evil", "a\nb", "é漢字🛰", "LSSTCam ", "lsstcam", "x" * 70_000]
WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                        st.lists(st.integers(), max_size=4), st.dictionaries(st.text(max_size=4), st.integers(),
                                                                            max_size=2))
DEAD_LETTER_CLASSES = {"WireFormatError", "UnknownSchemaIdError", "AvroDataError", "SchemaMismatchError",
                       "InvalidEventError", "FieldTooLongError", "OutputTooLargeError"}
"""The typed reasons a bad input may be dead-lettered with; anything else would be a bug's traceback."""


def nasty_uris(root: str) -> list[str]:
    """URIs that must not lead a pipeline anywhere: traversal, other hosts and schemes, bad buckets."""
    return [f"file://{root}/../secret.fits", "file:///etc/passwd", f"file://elsewhere{root}/raw.fits",
            f"file://{root}/raw/%2e%2e/%2e%2e/x.fits", f"file://{root}/raw/./x.fits", f"{root}/raw/x.fits",
            "http://example.org/raw.fits", "ftp://x/raw.fits", "s3://BAD_Bucket/raw.fits", "s3://bucket",
            f"file://{root}/raw/x.fits\x00.txt", "file://" + root + "/" + "x" * 5000, "javascript:alert(1)"]


# -- the inputs the agents accept, and mutations of them ---------------------------------------------
def good_next_visit(group: str, now: float) -> dict[str, Any]:
    """A usable nextVisit for LSSTComCam."""
    return NextVisit(salIndex=1, private_sndStamp=now, private_kafkaStamp=now, private_identity="ScriptQueue:1",
                     groupId=group, coordinateSystem=2, position=[10.0, -5.0], rotationSystem=2, duration=1.0,
                     nimages=2, instrument="LSSTComCam", survey="BLOCK-365").to_dict()


def good_raw(group: str, root: str, now: float) -> dict[str, Any]:
    """A usable raw arrival under the data root."""
    return RawImageAvailable(instrument="LSSTComCam", group_id=group, detector=4, snap=0, exposure_id=2026112500001,
                             uri=f"file://{root}/raw/{group}/4.fits", size_bytes=1000, arrival_time=now).to_dict()


def good_cancel(group: str, now: float) -> dict[str, Any]:
    """A nextVisitCanceled."""
    return NextVisitCanceled(salIndex=1, private_sndStamp=now, groupId=group).to_dict()


def typed_nasty(value: Any, root: str) -> st.SearchStrategy[Any]:
    """A nasty value of the same Avro type as `value` (so it still encodes)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.sampled_from(NASTY_INTS + NASTY_LONGS) | st.integers(-(2**31), 2**31 - 1)
    if isinstance(value, float):
        return st.sampled_from(NASTY_FLOATS) | st.floats()
    if isinstance(value, str):
        return st.sampled_from(NASTY_STRINGS + nasty_uris(root)) | st.text(max_size=40)
    if isinstance(value, list):
        return st.lists(st.sampled_from(NASTY_FLOATS) | st.floats(), max_size=6) | st.just([0.0] * 100_000)
    return st.just(value)


@st.composite
def mutant(draw: st.DrawFn, base: dict[str, Any], root: str, *, typed: bool) -> dict[str, Any]:
    """`base` with one to three fields made nasty; untyped mutations also drop, add or retype fields."""
    record = dict(base)
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(sorted(base)))
        kind = "nasty" if typed else draw(st.sampled_from(["nasty", "wrong type", "drop", "extra", "too big"]))
        if kind == "nasty":
            record[name] = draw(typed_nasty(base[name], root))
        elif kind == "wrong type":
            record[name] = draw(WRONG_TYPES)
        elif kind == "drop":
            record.pop(name, None)
        elif kind == "extra":
            record[draw(st.sampled_from(["zz_extra", "groupid", "Detector"]))] = draw(WRONG_TYPES)
        else:
            record[name] = draw(st.sampled_from(TOO_BIG_INTS))
    return record


@dataclass(frozen=True)
class Hostile:
    """One hostile input: the bytes, and how they were made (for the failure message)."""

    data: bytes
    how: str


def junk_bytes() -> st.SearchStrategy[Hostile]:
    """Bytes that are not an event: random, framed junk, wrong magic, unknown schema ids, deep or huge JSON."""
    return st.one_of(
        st.binary(max_size=300).map(lambda b: Hostile(b, "random bytes")),
        st.tuples(st.integers(0, 2**31 - 1), st.binary(max_size=120)).map(
            lambda t: Hostile(frame(*t), "framed junk")),
        st.tuples(st.integers(1, 255), st.binary(min_size=4, max_size=60)).map(
            lambda t: Hostile(bytes([t[0]]) + t[1], "wrong magic byte")),
        st.sampled_from([b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b"{" + b" " * (1 << 20) + b"}",
                         b"", b"{}", b"null", b'{"a": NaN}', b"\xff\xfe{", b"\x00" * 5]).map(
            lambda b: Hostile(b, "odd bytes")),
        st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                 max_size=3),
                     max_leaves=8).map(lambda v: Hostile(json.dumps(v).encode(), "random JSON")),
    )


def hostile(base: dict[str, Any], root: str, encode: Callable[[dict[str, Any]], bytes]) -> st.SearchStrategy[Hostile]:
    """Hostile inputs around one kind of event: junk, JSON mutants, and Avro mutants of the right types."""
    json_mutants = mutant(base, root, typed=False).map(
        lambda r: Hostile(json.dumps(r).encode(), f"JSON mutant {r!r:.300}"))
    avro_mutants = mutant(base, root, typed=True).flatmap(lambda r: _encoded(r, encode))
    return st.one_of(junk_bytes(), json_mutants, avro_mutants)


def _encoded(record: dict[str, Any], encode: Callable[[dict[str, Any]], bytes]) -> st.SearchStrategy[Hostile]:
    try:
        return st.just(Hostile(encode(record), f"Avro mutant {record!r:.300}"))
    except (ValueError, TypeError, OverflowError):  # a conforming producer could not write it either
        return st.nothing()


def avro_encoder(codec: Codec, topic: str, record_type: type[NextVisit | RawImageAvailable | NextVisitCanceled],
                 ) -> Callable[[dict[str, Any]], bytes]:
    """Framed Avro of a (possibly nasty) datum under the topic's registered schema."""
    return lambda datum: codec.encode(topic, record_type(**datum))


RAW_BUCKET = min(Settings().raw_bucket_names())
"""A bucket the S3 connector reads by default (PROMPT_STREAMS_RAW_BUCKETS), so its records meet the other checks."""


def s3_record(key: Any, *, bucket: Any = RAW_BUCKET, event: Any = "ObjectCreated:Put", size: Any = 1000,
              ) -> dict[str, Any]:
    """One record of an S3 event notification."""
    return {"eventName": event, "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size}}}


def raw_key(detector: str = "R22_S11", sequence: int = 1) -> str:
    """The key of a ComCam raw as the camera writes it."""
    obs_id = f"CC_O_20261125_{sequence:06d}"
    return f"LSSTComCam/20261125/{obs_id}/{obs_id}_{detector}.fits"


def notifications() -> st.SearchStrategy[Hostile]:
    """Hostile S3 bucket notifications of one record (the integration tier expects one outcome per input)."""
    good = {"Records": [s3_record(raw_key().replace("CC_O", "MC_O"))]}
    mutated = st.tuples(st.sampled_from(["name", "key", "size", "eventName"]), WRONG_TYPES | st.sampled_from(
        [*NASTY_STRINGS, raw_key("R99_S99"), raw_key("R00_S11"), "other-bucket", math.inf, {"a": 1}]))
    return junk_bytes() | mutated.map(lambda change: Hostile(json.dumps(_notification(good, *change)).encode(),
                                                             f"notification with {change[0]}={change[1]!r:.80}"))


def _notification(good: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(json.dumps(good))
    s3 = record["Records"][0]["s3"]
    target = {"name": s3["bucket"], "key": s3["object"], "size": s3["object"], "eventName": record["Records"][0]}
    target[field][field] = value
    return record


COMCAM_DETECTORS = [f"R22_S{row}{column}" for row in range(3) for column in range(3)]
BAD_KEYS = ["LSSTComCam/../../etc/passwd", "LSSTComCam/%2e%2e/%2E%2E/x.fits", "/LSSTComCam/x.fits",
            "LSSTComCam/./x.fits", "../x", "LSSTComCam/x%00.fits", "a/b/..", "", "x" * 1025,
            raw_key().replace("LSSTComCam/", "LSSTComCam/../LSSTComCam/"), raw_key("R99_S99"), raw_key("R00_S11")]
"""Keys whose record must be a dead letter: traversal, not plain paths, too long, detectors the camera lacks."""
FOREIGN_BUCKETS = ["other-bucket", f"{RAW_BUCKET}-evil", f"{RAW_BUCKET}.evil", RAW_BUCKET.upper(), "",
                   "169.254.169.254", f" {RAW_BUCKET}"]
WRONG_TYPED = [{"x": 1}, ["ObjectCreated:Put"], 5, None, True, 1.5]
NOT_RECORDS = [1, "x", None, [], {}, {"eventName": "ObjectCreated:Put"}, {"eventName": "ObjectCreated:Put", "s3": 1},
               {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": RAW_BUCKET}, "object": []}}]


def _labelled_records() -> st.SearchStrategy[tuple[str, Any]]:
    """(what must become of it, record): good raws, records not for us, bad ones, and anything at all."""
    good = st.builds(lambda d, n: ("needs storage", s3_record(raw_key(d, n))), st.sampled_from(COMCAM_DETECTORS),
                     st.integers(1, 999_999))
    ignored = st.sampled_from([
        s3_record(raw_key(), event="ObjectRemoved:Delete"), s3_record(raw_key(), event="ObjectRemoved:Delete",
                                                                      bucket="other-bucket"),
        s3_record(raw_key().removesuffix(".fits") + ".json"), s3_record("LSSTComCam/README.txt"),
        s3_record("LSSTComCam/20261125/notes/a%20b+c.fits")]).map(lambda r: ("ignored", r))
    bad = st.one_of(
        st.sampled_from(BAD_KEYS).map(lambda k: s3_record(k)),
        st.sampled_from(FOREIGN_BUCKETS).map(lambda b: s3_record(raw_key(), bucket=b)),
        st.sampled_from(WRONG_TYPED).map(lambda v: s3_record(raw_key(), event=v)),
        st.sampled_from(WRONG_TYPED).map(lambda v: s3_record(raw_key(), bucket=v)),
        st.sampled_from(WRONG_TYPED).map(lambda v: s3_record(v)),
        st.sampled_from(["1000", -1, 1.5, True, math.inf, None]).map(lambda v: s3_record(raw_key(), size=v)),
        st.sampled_from(NOT_RECORDS),
    ).map(lambda r: ("dead-letter", r))
    anything = st.tuples(st.sampled_from(["event", "bucket", "key", "size"]), WRONG_TYPES).map(
        lambda change: ("any", s3_record(raw_key(), **{change[0]: change[1]}) if change[0] != "key"
                        else s3_record(change[1])))
    return st.one_of(good, ignored, bad, anything)


@dataclass(frozen=True)
class Mixed:
    """A notification of several records, and what must become of each (`any`: anything typed)."""

    data: bytes
    records: list[Any]
    expected: list[str]

    def __repr__(self) -> str:
        return f"Mixed({self.expected}, {self.data[:400]!r})"


def mixed_notifications(max_size: int = 12) -> st.SearchStrategy[Mixed]:
    """Notifications mixing good raws with records not for us and bad records of every kind."""
    return st.lists(_labelled_records(), min_size=1, max_size=max_size).map(
        lambda items: Mixed(json.dumps({"Records": [r for _, r in items]}).encode(), [r for _, r in items],
                            [label for label, _ in items]))


# -- what the agents do with an input -------------------------------------------------------------
@dataclass(frozen=True)
class Chain:
    """Everything the input agents consult: codec, instruments, surveys, policy, data root, the time, and the S3
    connector's buckets and cap on records per notification."""

    codec: Codec
    instruments: dict[str, Instrument]
    surveys: SurveyTable
    policy: Policy
    data_root: str
    now: float
    raw_buckets: frozenset[str] = field(default_factory=lambda: Settings().raw_bucket_names())
    max_records: int = Settings().s3_max_records

    def notification(self, data: bytes) -> list[tuple[str, Part]]:
        """What the S3 connector makes of each part of a notification (each record, and the records beyond the
        cap as one): `dead-letter`, `ignored` or `needs storage`. A bug's error raises, as does a payload that is
        no notification at all (`WireFormatError`, one dead letter). Those of several parts count as tried."""
        found = self._parts(data)
        if len(found) > 1:
            TRIED["notification of several records"] += 1
        return found

    def _parts(self, data: bytes) -> list[tuple[str, Part]]:
        found = []
        for part in triage(data, self.raw_buckets, self.max_records):
            if isinstance(part.outcome, (DecodeError, InvalidEventError)):
                result = "dead-letter"
            elif isinstance(part.outcome, Exception):
                raise part.outcome
            else:
                result = "ignored" if isinstance(part.outcome, Ignored) else "needs storage"
            found.append((result, part))
        return found

    def outcome(self, topic_kind: str, data: bytes) -> str:
        """`dead-letter`, `ignored` or `accepted` as the agent's edge would decide (or, for a notification
        naming a raw, `needs storage`); anything else raises. A notification's outcome is its one record's
        (`several` when it has more: see `notification`)."""
        try:
            self._handle(topic_kind, data)
        except (DecodeError, InvalidEventError):
            result = "dead-letter"
        except IgnorableEvent:
            result = "ignored"
        except NeedsStorage:
            result = "needs storage"
        except SeveralRecords:
            result = "several"
        else:
            result = "accepted"
        TRIED[result] += 1
        return result

    def _handle(self, topic_kind: str, data: bytes) -> None:
        if topic_kind == "next_visit":
            plan_visit(self.codec.decode(data, NextVisit, accept_json=True), self.instruments, self.surveys,
                       self.policy, self.now)
        elif topic_kind == "next_visit_canceled":
            plan_cancel(self.codec.decode(data, NextVisitCanceled, accept_json=True), None, self.now)
        elif topic_kind == "raw_image_available":
            check_raw(self.codec.decode(data, RawImageAvailable, accept_json=True), self.instruments, self.policy,
                      self.data_root)
        else:
            parts = self._parts(data)
            if len(parts) > 1:
                raise SeveralRecords(f"{len(parts)} parts, each with its own outcome")
            [(result, part)] = parts
            if result == "needs storage":
                raise NeedsStorage("names a raw: what becomes of it depends on its sidecar in storage")
            if isinstance(part.outcome, Exception):
                raise part.outcome
            if isinstance(part.outcome, Ignored):
                raise IgnorableEvent(part.outcome.reason)


class NeedsStorage(Exception):  # noqa: N818 (an outcome)
    """A notification naming a raw: the rest of its fate is decided by reading its sidecar."""


class SeveralRecords(Exception):  # noqa: N818 (an outcome)
    """A notification of several records: one outcome per record, from `Chain.notification`."""


def draw_corpus(strategy: st.SearchStrategy[Hostile], count: int) -> list[Hostile]:
    """`count` examples of `strategy`, the same ones on every run (for the integration tier)."""
    found: list[Hostile] = []

    @settings(max_examples=count, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def collect(item: Hostile) -> None:
        found.append(item)

    collect()
    return found


# -- metric names, for the SAL bridge ------------------------------------------------------------------
NASTY_METRIC_NAMES = ["m" * 232, "m" * 233, "m" * 234, "m" * 1_000_000, ".", "..", "a b", "a/b", "a:b",
                      "psf.fwhm-arcsec", "3sigma", "timestamp", "metric_timestamp", "id", "lsst.prompt.dev.x", "__",
                      "-", "\t", "\U0010ffff"]
"""Metric names around the Sasquatch topic limit (`lsst.prompt.dev.` + 233 = 249 characters), names Kafka or Avro
would refuse as they are, and names of the Sasquatch record's own fields."""


def metric_names() -> st.SearchStrategy[str]:
    """Hostile metric names: the catalogue, any text, and names of topic characters near the length limit."""
    return (st.sampled_from(NASTY_METRIC_NAMES + NASTY_STRINGS) | st.text(max_size=300)
            | st.text(alphabet="ab._-", min_size=225, max_size=245))


# -- hostile writer schemas, from a registry anyone may write to -----------------------------------------
def varint(n: int) -> bytes:
    """Avro's zigzag varint of a long."""
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


HUGE_COUNTS = [2**62, 2**63 - 1, -(2**62), 2**31, 1 << 20, 255]
"""Block counts and lengths no payload of 1 MiB can hold (a negative count is followed by a byte size)."""
NO_BYTE_ITEMS: list[Any] = ["null", {"type": "record", "name": "Nothing", "fields": []},
                            {"type": "fixed", "name": "NoBytes", "size": 0},
                            {"type": "record", "name": "Nulls", "fields": [{"name": "n", "type": "null"}]}]
"""Items that take no byte: any count of them fits in no bytes."""
SKIPPED_BLINDLY: list[Any] = ["boolean", "float", "double", {"type": "fixed", "name": "Byte", "size": 1}]
"""Items fastavro skips without looking for the end of the bytes."""
OTHER_ITEMS: list[Any] = ["int", "long", "string", "bytes", ["null", "string"],
                          {"type": "enum", "name": "E", "symbols": ["a"]}, {"type": "map", "values": "int"},
                          {"type": "array", "items": "long"}, {"type": "fixed", "name": "Huge", "size": 2**62}]


@dataclass(frozen=True)
class HostileWriter:
    """A writer schema to register, the Avro bytes to frame with its id, and how they were made."""

    schema: Any
    payload: bytes
    how: str


def _unique_names(avro: Any, counter: Iterator[int]) -> Any:
    """`avro` with every named type renamed apart (a type drawn twice would be a redefinition)."""
    if isinstance(avro, list):
        return [_unique_names(branch, counter) for branch in avro]
    if not isinstance(avro, dict):
        return avro
    out = dict(avro)
    if out["type"] in ("record", "enum", "fixed"):
        out["name"] = f"{out['name']}{next(counter)}"
    if out["type"] == "record":
        out["fields"] = [{**item, "type": _unique_names(item["type"], counter)} for item in out["fields"]]
    for part in ("items", "values"):
        if part in out:
            out[part] = _unique_names(out[part], counter)
    return out


def writer_types() -> st.SearchStrategy[Any]:
    """Avro types built on items that take no byte, items skipped blindly and the rest, nested in arrays, maps,
    unions and records."""
    leaves = st.sampled_from(NO_BYTE_ITEMS + SKIPPED_BLINDLY + OTHER_ITEMS)
    return st.recursive(leaves, lambda inner: st.one_of(
        inner.map(lambda t: {"type": "array", "items": t}),
        inner.map(lambda t: {"type": "map", "values": t}),
        st.lists(inner, min_size=1, max_size=3).map(lambda ts: {
            "type": "record", "name": "R", "fields": [{"name": f"f{i}", "type": t} for i, t in enumerate(ts)]}),
        inner.map(lambda t: ["null", t])), max_leaves=6)


def hostile_tails() -> st.SearchStrategy[bytes]:
    """Bytes after the good ones: huge counts and lengths, small ones, ends of blocks and junk."""
    return st.lists(st.sampled_from([varint(n) for n in HUGE_COUNTS]) | st.sampled_from([b"\x00", b"\x01", b"\x02"])
                    | st.binary(max_size=12), max_size=6).map(b"".join)


@st.composite
def hostile_writers(draw: st.DrawFn) -> HostileWriter:
    """A writer schema for nextVisit from a hostile registry: the summit's own with extra fields the reader
    skips, a record of nextVisit's name with only hostile fields, or any type at all; and bytes for it."""
    counter = itertools.count()
    types = [_unique_names(t, counter) for t in draw(st.lists(writer_types(), min_size=1, max_size=3))]
    extra = [{"name": f"x{i}", "type": t} for i, t in enumerate(types)]
    own = load_schema("next_visit")
    shape = draw(st.sampled_from(["extra fields", "hostile record", "any type"]))
    good = write_datum(parse(own), good_next_visit("2026-11-25T03:00:00.000", 1.8e9))
    if shape == "extra fields":
        schema, head = {**own, "fields": own["fields"] + extra}, good
    elif shape == "hostile record":
        schema, head = {"type": "record", "name": own["name"], "namespace": own["namespace"], "fields": extra}, b""
    else:
        schema, head = types[0], b""
    tail = draw(hostile_tails())
    return HostileWriter(schema, head + tail, f"{shape} {json.dumps(extra)[:300]} + {tail[:40]!r}")


# -- records with fields around their limits -------------------------------------------------------------
LIMITED_RECORDS: list[Record] = [
    NextVisit(**good_next_visit("2026-11-25T03:00:00.000", 1.8e9)),
    NextVisitCanceled(**good_cancel("2026-11-25T03:00:00.000", 1.8e9)),
    RawImageAvailable(instrument="LSSTComCam", group_id="g", detector=1, uri="s3://b/k"),
    OcpsJobEvent(action="create", job_id="j"),
    Metric(name="m", value=1.0, instrument="LSSTComCam", group_id="g", timestamp=1.8e9),
]
"""One record of each input schema with limits (`streams.serde.schemas.field_limits`)."""


@dataclass(frozen=True)
class Sized:
    """A record with one field made `size` long (characters, or items) against its `limit` (made on demand: a
    failing example is shown as these few values)."""

    base: Record
    field: str
    size: int
    limit: int
    items: bool

    @property
    def record(self) -> Record:
        """`base` with the field made `size` long."""
        return self.base.replace(**{self.field: _of_size(_container_type(self.base, self.field), self.size,
                                                         self.items)})


def _container_type(record: Record, name: str) -> Any:
    """The Avro type of a field."""
    return next(item["type"] for item in load_schema(record.SCHEMA)["fields"] if item["name"] == name)


def _of_size(avro: Any, size: int, items: bool) -> Any:
    """A value of the field's type: `size` items, or a string (each string, each key) `size` characters long."""
    if avro == "string":
        return "x" * size
    kind, inner = (avro["type"], avro.get("items", avro.get("values")))
    one: Any = "x" * size if inner == "string" and not items else ("v" if inner == "string" else 1)
    if kind == "array":
        return [one] * size if items else [one]
    if items:
        return {f"k{i}": one for i in range(size)}
    return {"x" * size: one}


@st.composite
def sized_records(draw: st.DrawFn) -> Sized:
    """An input record with one limited field at its limit, just over it, or far over it (up to most of a
    message's 1 MiB)."""
    record = draw(st.sampled_from(LIMITED_RECORDS))
    limit: FieldLimit = draw(st.sampled_from(field_limits(record.SCHEMA)))
    items = limit.max_length is None or (limit.max_items is not None and draw(st.booleans()))
    bound = limit.max_items if items else limit.max_length
    assert bound is not None
    size = draw(st.sampled_from([bound, bound + 1, 2 * bound]) | st.integers(0, min(20 * bound, 100_000))
                | st.just(900_000 if not items else 20_000))
    return Sized(record, limit.field, size, bound, items)

