"""Hostile input for the fuzz tests: a catalogue of nasty values, strategies built on it, and the
same decode-and-check chain each input agent runs, to say what must become of every input.

The unit tier feeds thousands of these to the chain (tests/unit/test_fuzz_inputs.py); the
integration tier sends a few hundred to a real worker and checks each one's dead letter
(tests/integration/test_fuzzed_input.py). `TRIED` counts the inputs and their outcomes; the
run's summary prints it.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from connectors.s3_notifications import parse_notification, raw_object
from streams.codec import Codec, frame
from streams.core.arrivals import check_raw
from streams.core.instruments import Instrument
from streams.core.policy import Policy
from streams.core.surveys import SurveyTable
from streams.core.visit import plan_cancel, plan_visit
from streams.errors import DecodeError, IgnorableEvent, InvalidEventError
from streams.records import NextVisit, NextVisitCanceled, RawImageAvailable

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
                       "InvalidEventError"}
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


def notifications() -> st.SearchStrategy[Hostile]:
    """Hostile S3 bucket notifications."""
    good = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "rubin-raws"},
        "object": {"key": "LSSTComCam/20261125/MC_O_20261125_000001/MC_O_20261125_000001_R22_S11.fits",
                   "size": 1000}}}]}
    mutated = st.tuples(st.sampled_from(["name", "key", "size", "eventName"]), WRONG_TYPES | st.sampled_from(
        [*NASTY_STRINGS, "LSSTComCam/20261125/MC_O_20261125_000001/MC_O_20261125_000001_R99_S99.fits", math.inf]))
    return junk_bytes() | mutated.map(lambda change: Hostile(json.dumps(_notification(good, *change)).encode(),
                                                             f"notification with {change[0]}={change[1]!r:.80}"))


def _notification(good: dict[str, Any], field: str, value: Any) -> dict[str, Any]:
    record = json.loads(json.dumps(good))
    s3 = record["Records"][0]["s3"]
    target = {"name": s3["bucket"], "key": s3["object"], "size": s3["object"], "eventName": record["Records"][0]}
    target[field][field] = value
    return record


# -- what the agents do with an input -------------------------------------------------------------
@dataclass(frozen=True)
class Chain:
    """Everything the input agents consult: codec, instruments, surveys, policy, data root, and the time."""

    codec: Codec
    instruments: dict[str, Instrument]
    surveys: SurveyTable
    policy: Policy
    data_root: str
    now: float

    def outcome(self, topic_kind: str, data: bytes) -> str:
        """`dead-letter`, `ignored` or `accepted` as the agent's edge would decide (or, for a notification
        naming a raw, `needs storage`); anything else raises."""
        try:
            self._handle(topic_kind, data)
        except (DecodeError, InvalidEventError):
            result = "dead-letter"
        except IgnorableEvent:
            result = "ignored"
        except NeedsStorage:
            result = "needs storage"
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
            objects = [raw_object(bucket, key, size) for bucket, key, size in parse_notification(data)]
            if any(found is not None for found in objects):
                raise NeedsStorage("names a raw: what becomes of it depends on its sidecar in storage")


class NeedsStorage(Exception):  # noqa: N818 (an outcome)
    """A notification naming a raw: the rest of its fate is decided by reading its sidecar."""


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
