"""Fuzzing every input handler: whatever arrives, it is dead-lettered with a typed reason, ignored, or
accepted as sound; no input escapes as an untyped error (a worker would log it as a bug).

Framed Avro here resolves against the project's own schemas held in memory (the unit tier has no
registry); unknown schema ids against the real registry are fuzzed in
tests/integration/test_fuzzed_input.py.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from streams.codec import Codec
from streams.config import Settings
from streams.core.arrivals import GROUP_ID
from streams.core.instruments import parse_instruments
from streams.core.surveys import parse_surveys
from streams.pipelines.shell import SAFE_VALUE, UnsafeValue, placeholder_values, render
from streams.records import DetectorProgress, HeldSnap, NextVisit, NextVisitCanceled, RawImageAvailable
from streams.schemas import Schema
from tests.fuzzing import (
    Chain,
    Hostile,
    avro_encoder,
    good_cancel,
    good_next_visit,
    good_raw,
    hostile,
    notifications,
)

ROOT = "/data/repo"
NOW = 1.8e9
EXAMPLES = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.data_too_large])


class SchemasInMemory:
    """The project's schemas by id, for the unit tier (the integration tier uses the real registry)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, Schema] = {}

    def register(self, subject: str, schema: Schema) -> int:
        """The subject's id, new on first use."""
        if subject not in self._ids:
            self._ids[subject] = len(self._ids) + 1
            self._schemas[self._ids[subject]] = schema
        return self._ids[subject]

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The schema, or None for an unknown id."""
        return self._schemas.get(schema_id)


CODEC = Codec(SchemasInMemory())
CHAIN = Chain(codec=CODEC, instruments=parse_instruments('[LSSTComCam]\ndetectors = "0-8"\n'),
              surveys=parse_surveys('[surveys]\n"BLOCK-*" = ["stand-in"]\n'), policy=Settings().policy(),
              data_root=ROOT, now=NOW)
NEXT_VISITS = hostile(good_next_visit("2026-11-25T03:00:00.000", NOW), ROOT,
                      avro_encoder(CODEC, "nv", NextVisit))
RAWS = hostile(good_raw("2026-11-25T03:00:00.000", ROOT, NOW), ROOT,
               avro_encoder(CODEC, "raw", RawImageAvailable))
CANCELS = hostile(good_cancel("2026-11-25T03:00:00.000", NOW), ROOT,
                  avro_encoder(CODEC, "cancel", NextVisitCanceled))


DEEP_JSON = Hostile(b'{"groupId": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "deep JSON")


@EXAMPLES
@given(NEXT_VISITS)
@example(DEEP_JSON)
def test_next_visits_are_refused_ignored_or_sound(item: Hostile) -> None:
    """A hostile nextVisit is dead-lettered or ignored; one accepted is a visit the core can plan."""
    if CHAIN.outcome("next_visit", item.data) == "accepted":
        visit = CODEC.decode(item.data, NextVisit, accept_json=True)
        assert visit.instrument == "LSSTComCam" and GROUP_ID.match(visit.groupId), item.how
        assert math.isfinite(visit.duration) and 0 <= visit.nimages <= 100, item.how
        assert abs(visit.private_sndStamp - NOW) <= 3600, item.how


@EXAMPLES
@given(RAWS)
@example(DEEP_JSON)
def test_raw_arrivals_are_refused_or_sound(item: Hostile) -> None:
    """A hostile raw arrival is dead-lettered; one accepted names a real detector and a file under the root."""
    if CHAIN.outcome("raw_image_available", item.data) == "accepted":
        raw = CODEC.decode(item.data, RawImageAvailable, accept_json=True)
        assert raw.detector in range(9) and 0 <= raw.snap < 100, item.how
        assert raw.uri.startswith(f"file://{ROOT}/") and "/../" not in raw.uri + "/", item.how
        assert 0 <= raw.size_bytes <= 1 << 32, item.how


@EXAMPLES
@given(CANCELS)
def test_cancellations_are_refused_or_ignored(item: Hostile) -> None:
    """A cancellation of no visit in flight is ignored; undecodable ones are dead-lettered."""
    assert CHAIN.outcome("next_visit_canceled", item.data) in ("dead-letter", "ignored"), item.how


@EXAMPLES
@given(notifications())
@example(Hostile(b'{"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}, '
                 b'"object": {"key": "k", "size": Infinity}}}]}', "infinite size"))
def test_bucket_notifications_are_refused_or_parsed(item: Hostile) -> None:
    """A hostile S3 notification is refused with a typed error or parsed into raws of real detectors."""
    CHAIN.outcome("s3_notification", item.data)


def progress_with(field: str, value: Any, tmp_path: Path) -> DetectorProgress:
    """A detector with one raw under the root, one field replaced."""
    snap = HeldSnap(snap=0, exposure_id=1, uri=(tmp_path / "repo" / "raw.fits").as_uri(), arrival_time=1.0)
    values: dict[str, Any] = {"instrument": "LSSTCam", "group_id": "2026-11-25T03:14:15.926", "detector": 94,
                              "survey": "BLOCK-365", "filters": "r_57", "snaps": [snap]}
    values[field] = value
    return DetectorProgress(**values)


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Settings]:
    """A data root with one raw, and settings naming it."""
    tmp_path = tmp_path_factory.mktemp("shell")
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "raw.fits").write_text("x")
    return tmp_path, Settings(data_root=str(tmp_path / "repo"), output_root=str(tmp_path / "out"))


@EXAMPLES
@given(field=st.sampled_from(["instrument", "group_id", "survey", "filters"]),
       value=st.text(max_size=30) | st.sampled_from(["x; rm -rf /", "$(id)", "`id`", "-rf", "a b", "a\nb", "..",
                                                     "--config=evil", "|cat", "&&", "'", '"', "\\", "{raws}"]))
def test_shell_placeholders_are_one_literal_argument_or_refused(field: str, value: str,
                                                                roots: tuple[Path, Settings]) -> None:
    """An event value reaches a shell pipeline's argv as exactly one inert argument, or is refused."""
    tmp_path, config = roots
    try:
        values = placeholder_values(progress_with(field, value, tmp_path), config, tmp_path / "out" / "x")
    except UnsafeValue:
        return
    placeholder = {"instrument": "{instrument}", "group_id": "{group}", "survey": "{survey}",
                   "filters": "{filter}"}[field]
    assert SAFE_VALUE.match(value) and not value.startswith("-")
    assert render(("cmd", placeholder), values) == ["cmd", value]

