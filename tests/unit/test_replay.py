"""The replay's pure parts: its settings, what it selects, its instrument file and its pace."""

from __future__ import annotations

from dataclasses import fields

import pytest

from streams.config import Settings
from streams.core.instruments import Instrument, parse_instruments
from streams.ops.replay_plan import Event, Filters, ReplayError, instruments_toml, pace, replay_settings, select
from streams.serde.records import NextVisit, NextVisitCanceled, RawImageAvailable
from topology.tables import changelogs
from topology.topics import declare

LIVE = Settings()
T0 = 1_795_600_000_000


def next_visit(group: str, ms: int, instrument: str = "LSSTComCam", offset: int = 0) -> Event:
    """A nextVisit event at Kafka time `ms`."""
    record = NextVisit(groupId=group, instrument=instrument, duration=10.0, nimages=2)
    return Event("nv", 0, offset, ms, None, b"nv", record=record)


def raw(group: str, detector: int, ms: int, partition: int | None = None, instrument: str = "LSSTComCam") -> Event:
    """A raw arrival event, in its detector's partition of 4 unless told otherwise."""
    record = RawImageAvailable(instrument=instrument, group_id=group, detector=detector, uri="file:///r")
    return Event("raw", detector % 4 if partition is None else partition, ms, ms, None, b"raw", record=record)


def cancel(group: str, ms: int) -> Event:
    """A nextVisitCanceled event."""
    return Event("cancel", 0, ms, ms, None, b"cancel", record=NextVisitCanceled(groupId=group))


def test_a_replay_writes_nothing_live_does() -> None:
    """Every topic, changelog, group, folder and output of the replay differs from the live ones."""
    replay = replay_settings(LIVE, "night-42")
    live_names = {t.name for t in [*declare(LIVE).all(), *changelogs(LIVE)]}
    replay_names = {t.name for t in [*declare(replay).all(), *changelogs(replay)]}
    assert not live_names & replay_names
    assert replay.app_id == "night-42" and replay.worker_dir() != LIVE.worker_dir()
    assert replay.output_root.startswith(LIVE.output_root + "/replays/") and replay.output_root != LIVE.output_root
    same = {f.name for f in fields(Settings) if getattr(replay, f.name) == getattr(LIVE, f.name)}
    assert {"cluster", "chile", "data_root", "surveys_file", "image_timeout"} <= same
    assert replay.message_expiration > 365 * 24 * 3600, "a replayed nextVisit is old"


@pytest.mark.parametrize("name", ["", "a b", "../x", LIVE.app_id, LIVE.topic_prefix, "x" * 200])
def test_bad_replay_names_are_refused(name: str) -> None:
    """Names that are not topic-safe, or that are the live ones, are refused."""
    with pytest.raises(ReplayError):
        replay_settings(LIVE, name)


def test_select_keeps_the_chosen_visits_their_raws_and_cancellations_in_order() -> None:
    """Filters pick visits; their raws (in the right partition, in the window) and cancels follow, by time."""
    visits = [next_visit("a", T0), next_visit("b", T0 + 100, offset=1), next_visit("c", T0 + 200, "LATISS", 2)]
    late = T0 + 100 + 1000 * (2 * 10 + 120) + 1
    others = [raw("a", 1, T0 - 50), raw("a", 2, T0 + 10), raw("a", 2, T0 + 11, partition=0), raw("b", 3, T0 + 300),
              raw("b", 3, late), raw("c", 0, T0 + 250, instrument="LATISS"), raw("z", 1, T0 + 20),
              cancel("b", T0 + 400), cancel("z", T0 + 400)]
    chosen = select(visits, others, Filters(instruments=frozenset({"LSSTComCam"})), 120.0, 4)
    assert chosen.visits == {("LSSTComCam", "a"), ("LSSTComCam", "b")}
    shown = [(type(e.record).__name__, e.timestamp_ms - T0) for e in chosen.events]
    assert shown == [("RawImageAvailable", -50), ("NextVisit", 0), ("RawImageAvailable", 10), ("NextVisit", 100),
                     ("RawImageAvailable", 300), ("NextVisitCanceled", 400)]


def test_select_by_group_and_detector() -> None:
    """Group and detector filters narrow the visits and the raws."""
    visits = [next_visit("a", T0), next_visit("b", T0 + 1)]
    others = [raw("a", d, T0 + 5) for d in range(4)] + [raw("b", 1, T0 + 5)]
    chosen = select(visits, others, Filters(groups=frozenset({"a"}), detectors=frozenset({1, 3})), 120.0, 4)
    assert [(e.record.detector) for e in chosen.events if isinstance(e.record, RawImageAvailable)] == [1, 3]


def test_select_with_no_matching_visit_is_an_error() -> None:
    """Nothing to replay is said plainly."""
    with pytest.raises(ReplayError, match="no nextVisit"):
        select([next_visit("a", T0)], [], Filters(groups=frozenset({"x"})), 120.0, 4)


def test_the_instrument_file_leaves_only_the_chosen_detectors_active() -> None:
    """Visits then fan out to the replayed detectors alone, and keep the live disabled ones off."""
    instruments = {"LSSTComCam": Instrument("LSSTComCam", frozenset(range(9)), frozenset({8})),
                   "LATISS": Instrument("LATISS", frozenset({0}), frozenset())}
    parsed = parse_instruments(instruments_toml(instruments, frozenset({0, 4, 8})))
    assert parsed["LSSTComCam"].active == (0, 4) and parsed["LSSTComCam"].detectors == frozenset(range(9))
    assert parsed["LATISS"].active == (0,)


def test_pace_keeps_the_original_spacing_scaled() -> None:
    """Speed 2 halves the gaps; speed 0 sends everything at once."""
    events = [raw("a", 0, T0), raw("a", 1, T0 + 1000), raw("a", 2, T0 + 3000)]
    assert pace(events, 2.0) == [0.0, 0.5, 1.5]
    assert pace(events, 0.0) == [0.0, 0.0, 0.0]
