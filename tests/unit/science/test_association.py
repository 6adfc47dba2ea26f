"""Association of DIA sources with DIA objects, and the objects' summaries: ids, matching, retries, SDM columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from streams.science.association import (
    History,
    associate,
    band_of,
    combine,
    dia_source_id,
    forced_source_id,
    match,
    object_positions,
    summarise,
    visit_of,
)

RADIUS = 1.0
"""Association radius [arcsec], the pipeline's default."""
DETECTOR = 94
VISIT_A, VISIT_B, VISIT = 2026112500100, 2026112500200, 2026112500367
"""Two earlier LSSTCam exposures of the field, and the one being processed."""
MJD = {VISIT_A: 61004.10, VISIT_B: 61004.20, VISIT: 61004.367}
RA0, DEC0 = 150.0, -30.0


def offset(ra: float, dec: float, east: float = 0.0, north: float = 0.0) -> tuple[float, float]:
    """The position `east` and `north` arcsec away (small offsets)."""
    return ra + east / 3600.0 / np.cos(np.radians(dec)), dec + north / 3600.0


def separation(ra1: float, dec1: float, ra2: float, dec2: float) -> float:
    """Angular distance [arcsec] by the haversine formula (independent of the module's unit vectors)."""
    ra1, dec1, ra2, dec2 = (np.radians(v) for v in (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return float(np.degrees(2 * np.arcsin(np.sqrt(h))) * 3600.0)


def detections(visit: int, positions: list[tuple[float, float]], fluxes: list[float] | None = None, *,
               detector: int = DETECTOR, band: str = "r", mjd: float | None = None,
               flux_err: float = 5.0) -> pd.DataFrame:
    """One detector's DIA sources of a visit before association, with their SDM columns, in rank order."""
    n = len(positions)
    return pd.DataFrame({
        "diaSourceId": dia_source_id(visit, detector, np.arange(n)),
        "visit": np.full(n, visit, np.int64), "detector": np.full(n, detector, np.int64),
        "ra": np.array([p[0] for p in positions], float), "dec": np.array([p[1] for p in positions], float),
        "midpointMjdTai": np.full(n, MJD.get(visit, 61000.0) if mjd is None else mjd, float),
        "psfFlux": np.array(fluxes if fluxes is not None else [100.0] * n, float),
        "psfFluxErr": np.full(n, flux_err, float), "band": [band] * n})


def forced_rows(visit: int, object_ids: np.ndarray, *, detector: int = DETECTOR, band: str = "r",
                flux: float = 40.0, science_flux: float = 1000.0, mjd: float | None = None) -> pd.DataFrame:
    """Forced photometry of a visit at the given objects (constant fluxes: enough for the catalogue logic)."""
    ids = np.asarray(object_ids, np.int64)
    n = len(ids)
    return pd.DataFrame({
        "diaForcedSourceId": np.array([forced_source_id(int(i), visit, detector) for i in ids], np.int64),
        "diaObjectId": ids, "visit": np.full(n, visit, np.int64), "detector": np.full(n, detector, np.int64),
        "psfFlux": np.full(n, flux), "psfFluxErr": np.full(n, 4.0), "scienceFlux": np.full(n, science_flux),
        "scienceFluxErr": np.full(n, 6.0), "band": [band] * n,
        "midpointMjdTai": np.full(n, MJD.get(visit, 61000.0) if mjd is None else mjd, float)})


def objects_frame(rows: list[tuple[int, float, float]]) -> pd.DataFrame:
    """DiaObject rows (last versions): id and stored position."""
    return pd.DataFrame({"diaObjectId": np.array([r[0] for r in rows], np.int64),
                         "ra": np.array([r[1] for r in rows], float), "dec": np.array([r[2] for r in rows], float)})


def empty_history() -> History:
    """What the preload reads from an empty APDB."""
    sources = detections(VISIT, []).assign(diaObjectId=np.array([], np.int64))
    return History(objects_frame([]), sources, forced_rows(VISIT, np.array([], np.int64)))


def history_of(sources: pd.DataFrame, objects: list[tuple[int, float, float]] | None = None,
               forced: pd.DataFrame | None = None) -> History:
    """A history of already associated sources; objects default to one per distinct diaObjectId at its first
    source's position."""
    if objects is None:
        first = sources.drop_duplicates("diaObjectId")
        objects = [(int(i), float(r), float(d)) for i, r, d in zip(first["diaObjectId"], first["ra"], first["dec"],
                                                                  strict=True)]
    return History(objects_frame(objects), sources,
                   forced if forced is not None else forced_rows(VISIT, np.array([], np.int64)))


@dataclass(frozen=True)
class Attempt:
    """What one attempt at a visit's detector computes, as the pipeline does, before it stores it."""

    sources: pd.DataFrame
    forced: pd.DataFrame
    objects: pd.DataFrame
    matched: int


def attempt(visit: int, detected: pd.DataFrame, history: History) -> Attempt:
    """Associate, force-photometer every object (known and new), summarise: `AssociateApdb.run` without pixels."""
    earlier = history.before(visit)
    sources, matched = associate(detected, earlier, RADIUS)
    new = sources[sources["diaObjectId"] == sources["diaSourceId"]]["diaObjectId"].to_numpy(np.int64)
    known = object_positions(earlier)["diaObjectId"].to_numpy(np.int64)
    forced = forced_rows(visit, np.concatenate([known, new]), flux=40.0 + visit % 7, science_flux=1000.0 + visit % 11)
    objects = summarise(sources["diaObjectId"].unique(), combine(earlier.sources, sources),
                        combine(earlier.forced, forced), MJD[visit])
    return Attempt(sources, forced, objects, matched)


def store(history: History, done: Attempt) -> History:
    """The APDB after storing an attempt, as the next preload reads it: rows appended, objects' last versions."""
    kept = history.objects[~history.objects["diaObjectId"].isin(done.objects["diaObjectId"])]
    return History(combine(kept, done.objects), combine(history.sources, done.sources),
                   combine(history.forced, done.forced))


def missing(frame: pd.DataFrame, column: str) -> bool:
    """The summary has no value in this column (absent or null)."""
    return column not in frame.columns or bool(frame[column].isna().all())


# --- ids ---------------------------------------------------------------------------------------------------------


def test_ids_are_unique_per_visit_detector_and_rank() -> None:
    """Every (visit, detector, rank) gets its own DIA source id, over all 8192 ranks and the extreme detectors."""
    ranks = np.arange(8192)
    ids = np.concatenate([dia_source_id(visit, detector, ranks) for visit in (0, 1, VISIT, VISIT + 1)
                          for detector in (0, 1, 94, 188, 255)])
    assert ids.dtype == np.int64
    assert len(np.unique(ids)) == len(ids) == 4 * 5 * 8192


def test_ids_are_stable_across_calls_and_follow_the_documented_layout() -> None:
    """The same inputs give the same ids on every call: visit << 21 | detector << 13 | rank."""
    ranks = np.arange(100)
    first, second = dia_source_id(VISIT, 188, ranks), dia_source_id(VISIT, 188, ranks)
    np.testing.assert_array_equal(first, second)
    assert [int(i) for i in first] == [(VISIT << 21) | (188 << 13) | r for r in range(100)]


def test_ids_decode_back_to_their_visit() -> None:
    """`visit_of` gives back the visit an id (or the object it founded) was made in."""
    for visit in (0, 1, VISIT_A, VISIT, (1 << 42) - 1):
        for detector in (0, 188, 255):
            ids = dia_source_id(visit, detector, np.array([0, 1, 4095, 8191]))
            assert visit_of(ids).tolist() == [visit] * 4


def test_ids_of_lsstcam_exposures_fit_in_63_bits() -> None:
    """An LSSTCam exposure id (YYYYMMDDnnnnn) with detectors 0-188 and the top rank gives a positive int64
    equal to the exact packed integer: nothing overflows or wraps."""
    for exposure in (2026112500367, 2035123199999):
        ids = dia_source_id(exposure, 188, np.array([8191]))
        exact = (exposure << 21) | (188 << 13) | 8191
        assert int(ids[0]) == exact
        assert 0 < exact < 1 << 63
        every_detector = np.concatenate([dia_source_id(exposure, d, np.array([0, 8191])) for d in range(189)])
        assert (every_detector > 0).all()
        assert (visit_of(every_detector) == exposure).all()


def test_ids_refuse_ranks_and_detectors_that_do_not_fit() -> None:
    """A rank >= 8192 or a detector >= 256 (or a visit beyond 42 bits) is a ValueError, not a colliding id."""
    dia_source_id(VISIT, 255, np.array([8191]))  # the largest that fit
    with pytest.raises(ValueError):
        dia_source_id(VISIT, DETECTOR, np.arange(8193))
    with pytest.raises(ValueError):
        dia_source_id(VISIT, DETECTOR, np.array([8192]))
    with pytest.raises(ValueError):
        dia_source_id(VISIT, 256, np.array([0]))
    with pytest.raises(ValueError):
        dia_source_id(VISIT, -1, np.array([0]))
    with pytest.raises(ValueError):
        dia_source_id(1 << 42, DETECTOR, np.array([0]))


def test_no_sources_give_no_ids() -> None:
    """A detector without DIA sources gets an empty int64 id array, not an error."""
    ids = dia_source_id(VISIT, DETECTOR, np.arange(0))
    assert len(ids) == 0 and ids.dtype == np.int64


def test_forced_source_ids_are_stable_distinct_and_63_bit() -> None:
    """A forced source id depends only on (object, visit, detector): the same on every call and in every process
    (a fixed hash, not Python's salted one), different for different keys, and a non-negative 63-bit integer."""
    big = (VISIT << 21) | (188 << 13) | 8191
    assert forced_source_id(big, VISIT, 188) == forced_source_id(big, VISIT, 188) == 2220622224213749096
    keys = [(o, v, d) for o in (1, 2, big) for v in (VISIT_A, VISIT) for d in (0, 94, 188)]
    ids = [forced_source_id(*key) for key in keys]
    assert len(set(ids)) == len(keys)
    assert all(0 <= i < 1 << 63 for i in ids)


@pytest.mark.parametrize(("physical_filter", "band"),
                         [("u_24", "u"), ("g_6", "g"), ("r_57", "r"), ("i_39", "i"), ("z_20", "z"), ("y_10", "y"),
                          ("r", "r")])
def test_band_of_a_physical_filter(physical_filter: str, band: str) -> None:
    """LSSTCam's physical filters map to their band letter (a bare band stays itself)."""
    assert band_of(physical_filter) == band


# --- History.before ----------------------------------------------------------------------------------------------


def test_history_before_drops_what_the_visit_itself_stored() -> None:
    """`before(v)` keeps earlier visits' sources, forced sources and objects, and drops the sources and forced
    sources with visit == v and the objects v founded (an earlier object v updated stays)."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [p]).assign(diaObjectId=lambda f: f["diaSourceId"])
    founder = int(earlier["diaObjectId"].iloc[0])
    now = detections(VISIT, [offset(*p, north=0.5), offset(*p, east=10)])
    new_object = int(now["diaSourceId"].iloc[1])
    now = now.assign(diaObjectId=np.array([founder, new_object], np.int64))
    forced = combine(forced_rows(VISIT_A, np.array([founder])), forced_rows(VISIT, np.array([founder, new_object])))
    history = History(objects_frame([(founder, *offset(*p, north=0.25)), (new_object, *now[["ra", "dec"]].iloc[1])]),
                      combine(earlier, now), forced)

    before = history.before(VISIT)
    assert before.sources["visit"].tolist() == [VISIT_A]
    assert before.forced["visit"].tolist() == [VISIT_A]
    assert before.objects["diaObjectId"].tolist() == [founder]
    pd.testing.assert_frame_equal(before.sources.reset_index(drop=True), earlier)
    # Another visit's view is unchanged, and an empty history stays empty.
    assert len(history.before(VISIT_B).sources) == len(history.sources)
    assert all(len(frame) == 0 for frame in (empty_history().before(VISIT).objects,
                                             empty_history().before(VISIT).sources,
                                             empty_history().before(VISIT).forced))


def test_a_second_attempt_after_a_crash_gives_the_same_ids_and_summaries() -> None:
    """A detector retried after its first attempt was stored (the history now holds the visit's own sources,
    forced sources, founded objects and moved object positions) gets exactly the same diaObjectIds, forced
    sources and DiaObject summaries as the first attempt did."""
    p1, p2, p3 = (RA0, DEC0), offset(RA0, DEC0, east=6.0), offset(RA0, DEC0, east=-4.0, north=7.0)
    apdb = empty_history()
    apdb = store(apdb, attempt(VISIT_A, detections(VISIT_A, [p1, p2, p3], [100.0, 200.0, 300.0]), apdb))
    apdb = store(apdb, attempt(VISIT_B, detections(VISIT_B, [offset(*p1, north=0.3), offset(*p2, north=-0.4),
                                                             offset(RA0, DEC0, north=-9.0)],
                                                   [110.0, 190.0, 50.0]), apdb))
    detected = detections(VISIT, [
        offset(*p1, east=0.8),    # joins p1's object and moves its stored position
        offset(*p3, north=0.6),   # near p3, but farther than the next: founds a new object
        offset(*p3, north=-0.3),  # the closest to p3: joins it
        offset(*p2, east=1.5),    # beyond the radius of p2: a new object
        offset(RA0, DEC0, east=20.0),  # nothing there: a new object
    ], [120.0, 80.0, 310.0, 70.0, 60.0])

    first = attempt(VISIT, detected, apdb)
    stored = store(apdb, first)  # the crash came after the APDB write
    assert len(stored.sources) == len(apdb.sources) + len(detected)
    assert visit_of(stored.objects["diaObjectId"].to_numpy()).tolist().count(VISIT) == 3
    second = attempt(VISIT, detected, stored)

    assert first.matched == second.matched == 2
    assert [int(i) for i in second.sources["diaObjectId"]] == [int(i) for i in first.sources["diaObjectId"]]
    pd.testing.assert_frame_equal(second.sources, first.sources)
    # The forced rows come in the order the preload lists the objects, which the APDB does not fix.
    pd.testing.assert_frame_equal(second.forced.sort_values("diaForcedSourceId", ignore_index=True),
                                  first.forced.sort_values("diaForcedSourceId", ignore_index=True))
    pd.testing.assert_frame_equal(second.objects, first.objects)
    # Control: summarising against the stored rows themselves would count this visit's sources twice.
    doubled = summarise(detected.assign(diaObjectId=first.sources["diaObjectId"])["diaObjectId"].unique(),
                        combine(stored.sources, first.sources), combine(stored.forced, first.forced), MJD[VISIT])
    assert (doubled["nDiaSources"] > first.objects["nDiaSources"]).all()


def test_a_neighbouring_detector_of_the_same_visit_storing_first_changes_nothing() -> None:
    """When the overlapping detector of the same visit stores in between (moving a shared object's stored position
    by 0.45 arcsec and founding an object next to one of ours), a retried detector still gets the results of its
    first attempt: it matches against earlier visits' sources only."""
    p, q = (RA0, DEC0), offset(RA0, DEC0, east=12.0)
    apdb = empty_history()
    apdb = store(apdb, attempt(VISIT_A, detections(VISIT_A, [p]), apdb))
    ours = detections(VISIT, [offset(*p, north=0.8), offset(*q, north=0.3)])
    neighbour = detections(VISIT, [offset(*p, north=-0.9), q], detector=DETECTOR - 1)

    first = attempt(VISIT, ours, apdb)
    assert first.matched == 1
    after_neighbour = store(apdb, attempt(VISIT, neighbour, apdb))
    moved = after_neighbour.objects.set_index("diaObjectId").loc[int(first.sources["diaObjectId"].iloc[0])]
    assert separation(moved["ra"], moved["dec"], *p) == pytest.approx(0.45, abs=1e-3)
    second = attempt(VISIT, ours, after_neighbour)

    assert second.matched == 1
    pd.testing.assert_frame_equal(second.sources, first.sources)
    pd.testing.assert_frame_equal(second.objects, first.objects)


# --- positions and matching --------------------------------------------------------------------------------------


def test_object_positions_come_from_earlier_sources_not_the_stored_position() -> None:
    """An object's matching position is the mean of its earlier sources, even when its stored position was
    moved (by this visit's first attempt); an object with no source in the window keeps its stored position."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [offset(*p, north=-0.2), offset(*p, north=0.2)])
    moved = 1234
    earlier = earlier.assign(diaObjectId=np.array([moved, moved], np.int64))
    alone = (int(dia_source_id(VISIT_A, 3, np.array([0]))[0]), *offset(*p, east=30.0))
    history = history_of(earlier, [(moved, *offset(*p, north=1.2)), alone])

    positions = object_positions(history).set_index("diaObjectId")
    assert separation(positions.loc[moved, "ra"], positions.loc[moved, "dec"], *p) < 1e-6
    assert (positions.loc[alone[0], "ra"], positions.loc[alone[0], "dec"]) == (alone[1], alone[2])
    assert positions.index.dtype == np.int64


def test_a_source_joins_the_object_at_its_earlier_sources_not_its_moved_stored_position() -> None:
    """A source 0.6 arcsec from an object's earlier sources joins it, although the object's stored position
    (moved by this visit) is 1.8 arcsec away."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [p]).assign(diaObjectId=lambda f: f["diaSourceId"])
    object_id = int(earlier["diaObjectId"].iloc[0])
    history = history_of(earlier, [(object_id, *offset(*p, north=1.2))])
    sources, matched = associate(detections(VISIT, [offset(*p, north=-0.6)]), history, RADIUS)
    assert matched == 1
    assert int(sources["diaObjectId"].iloc[0]) == object_id


def test_an_empty_history_gives_no_positions() -> None:
    """No known objects: no positions (typed, so the forced photometry's id array stays int64)."""
    positions = object_positions(empty_history())
    assert len(positions) == 0 and positions["diaObjectId"].dtype == np.int64


def test_a_source_within_the_radius_joins_the_earlier_object() -> None:
    """A source 0.9 arcsec from an earlier object (radius 1 arcsec) takes that object's id."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [p, offset(*p, east=10.0)]).assign(diaObjectId=lambda f: f["diaSourceId"])
    position = offset(*p, east=0.6, north=-0.67)
    assert 0.89 < separation(*position, *p) < 0.91
    detected = detections(VISIT, [position])
    sources, matched = associate(detected, history_of(earlier), RADIUS)
    assert matched == 1
    assert int(sources["diaObjectId"].iloc[0]) == int(earlier["diaObjectId"].iloc[0])
    pd.testing.assert_frame_equal(sources.drop(columns="diaObjectId"), detected)


def test_a_source_beyond_the_radius_founds_a_new_object_with_its_own_id() -> None:
    """A source 1.1 arcsec from the nearest earlier object founds a new object whose id is its diaSourceId."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [p]).assign(diaObjectId=lambda f: f["diaSourceId"])
    detected = detections(VISIT, [offset(*p, north=1.1)])
    sources, matched = associate(detected, history_of(earlier), RADIUS)
    assert matched == 0
    assert int(sources["diaObjectId"].iloc[0]) == int(detected["diaSourceId"].iloc[0])
    assert visit_of(sources["diaObjectId"].to_numpy()).tolist() == [VISIT]


def test_with_no_history_every_source_founds_its_own_object() -> None:
    """Against an empty APDB every source is a new object with its own id."""
    detected = detections(VISIT, [(RA0, DEC0), offset(RA0, DEC0, north=0.5)])
    sources, matched = associate(detected, empty_history(), RADIUS)
    assert matched == 0
    assert sources["diaObjectId"].tolist() == detected["diaSourceId"].tolist()
    assert sources["diaObjectId"].dtype == np.int64


def test_of_two_sources_near_one_object_only_the_closest_joins_it() -> None:
    """Two sources within the radius of one object: the closer one (here the later rank) joins it, the other
    founds a new object with its own id."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [p]).assign(diaObjectId=lambda f: f["diaSourceId"])
    detected = detections(VISIT, [offset(*p, north=0.7), offset(*p, north=-0.3)])
    sources, matched = associate(detected, history_of(earlier), RADIUS)
    assert matched == 1
    assert [int(i) for i in sources["diaObjectId"]] == [int(detected["diaSourceId"].iloc[0]),
                                                        int(earlier["diaObjectId"].iloc[0])]


def test_a_source_joins_the_nearest_of_several_objects() -> None:
    """With two objects within the radius, a source takes the nearer one."""
    objects = objects_frame([(11, *offset(RA0, DEC0, north=-0.6)), (22, *offset(RA0, DEC0, north=0.3))])
    assert match(np.array([RA0]), np.array([DEC0]), objects, RADIUS).tolist() == [22]


def test_equally_near_sources_are_resolved_by_rank() -> None:
    """Two sources exactly as near to one object: the lower rank joins it, the other gets -1 (no match)."""
    objects = objects_frame([(7, RA0, 0.0)])  # on the equator, +-0.5 arcsec in dec are exactly as far
    ra = np.array([RA0, RA0])
    dec = np.array([0.5 / 3600, -0.5 / 3600])
    assert match(ra, dec, objects, RADIUS).tolist() == [7, -1]
    assert match(ra, dec[::-1].copy(), objects, RADIUS).tolist() == [7, -1]


def test_a_source_displaced_from_its_nearest_object_takes_the_next_within_the_radius() -> None:
    """Closest pairs first, one source per object: a source whose nearest object went to a closer source joins
    the next nearest object within the radius."""
    objects = objects_frame([(11, RA0, DEC0), (22, *offset(RA0, DEC0, north=1.6))])
    ra = np.array([RA0, RA0])
    dec = np.array([DEC0 + 0.1 / 3600, DEC0 + 0.7 / 3600])
    assert match(ra, dec, objects, RADIUS).tolist() == [11, 22]


def test_match_with_nothing_to_match() -> None:
    """No sources or no objects: every source (if any) is unmatched."""
    assert match(np.array([]), np.array([]), objects_frame([(1, RA0, DEC0)]), RADIUS).tolist() == []
    assert match(np.array([RA0]), np.array([DEC0]), objects_frame([]), RADIUS).tolist() == [-1]


@pytest.mark.parametrize(("object_ra", "source_ra"), [(359.99999, 0.0000001), (0.0000001, 359.99999)])
def test_association_works_across_ra_zero(object_ra: float, source_ra: float) -> None:
    """An object at RA 359.99999 and a source at RA 0.0000001 (0.04 arcsec apart) associate, either way round,
    and the object's new position stays at RA ~0, not 180."""
    earlier = detections(VISIT_A, [(object_ra, 0.0)]).assign(diaObjectId=lambda f: f["diaSourceId"])
    object_id = int(earlier["diaObjectId"].iloc[0])
    detected = detections(VISIT, [(source_ra, 0.0)])
    sources, matched = associate(detected, history_of(earlier), RADIUS)
    assert matched == 1 and int(sources["diaObjectId"].iloc[0]) == object_id
    summary = summarise(np.array([object_id]), combine(earlier, sources), forced_rows(VISIT, np.array([])),
                        MJD[VISIT])
    assert separation(summary["ra"].iloc[0], summary["dec"].iloc[0], 0.0, 0.0) < 0.05
    assert 0.0 <= summary["ra"].iloc[0] < 360.0


def test_association_near_the_pole() -> None:
    """Near the celestial pole a source 0.5 arcsec from an object but 90 degrees away in RA still joins it."""
    object_pos, source_pos = (10.0, 89.99995), (100.0, 89.99995)  # 0.18"  from the pole each
    assert separation(*object_pos, *source_pos) < 0.3
    earlier = detections(VISIT_A, [object_pos]).assign(diaObjectId=lambda f: f["diaSourceId"])
    sources, matched = associate(detections(VISIT, [source_pos]), history_of(earlier), RADIUS)
    assert matched == 1 and int(sources["diaObjectId"].iloc[0]) == int(earlier["diaObjectId"].iloc[0])


# --- summaries ---------------------------------------------------------------------------------------------------


def test_summary_of_two_r_band_sources() -> None:
    """Two r-band sources with fluxes 100 and 110: r_psfFluxMean 105, Ndata 2, Sigma the ddof=1 standard
    deviation, Min/Max/ErrMean, nDiaSources 2, first/last source times, validity from this visit, and the
    position the mean of the two; the other bands have Ndata 0 (an int) and no mean."""
    p = (RA0, DEC0)
    earlier = detections(VISIT_A, [offset(*p, north=-0.2)], [100.0], mjd=61000.25)
    object_id = int(earlier["diaSourceId"].iloc[0])
    now = detections(VISIT, [offset(*p, north=0.2)], [110.0], mjd=61003.5)
    sources = combine(earlier, now).assign(diaObjectId=object_id)

    summary = summarise(np.array([object_id]), sources, forced_rows(VISIT, np.array([])), 61003.5)
    assert len(summary) == 1
    row = summary.iloc[0]
    assert int(row["diaObjectId"]) == object_id and summary["diaObjectId"].dtype == np.int64
    assert row["r_psfFluxMean"] == pytest.approx(105.0)
    assert row["r_psfFluxNdata"] == 2
    assert row["r_psfFluxSigma"] == pytest.approx(float(np.std([100.0, 110.0], ddof=1)))
    assert row["r_psfFluxMin"] == 100.0 and row["r_psfFluxMax"] == 110.0
    assert row["r_psfFluxErrMean"] == pytest.approx(5.0)
    assert np.isfinite(row["r_psfFluxMeanErr"]) and row["r_psfFluxMeanErr"] > 0
    assert row["r_psfFluxMaxSlope"] == pytest.approx(10.0 / 3.25)
    assert row["nDiaSources"] == 2 and summary["nDiaSources"].dtype == np.int64
    assert row["firstDiaSourceMjdTai"] == 61000.25 and row["lastDiaSourceMjdTai"] == 61003.5
    assert row["validityStartMjdTai"] == 61003.5
    assert separation(row["ra"], row["dec"], *p) < 1e-6
    for band in "ugizy":
        assert summary[f"{band}_psfFluxNdata"].dtype == np.int64
        assert summary[f"{band}_psfFluxNdata"].tolist() == [0]
        assert missing(summary, f"{band}_psfFluxMean")


def test_summary_of_a_single_source() -> None:
    """One source: Ndata 1, its flux as mean, min and max, no scatter (NaN sigma) and its own error as MeanErr."""
    now = detections(VISIT, [(RA0, DEC0)], [42.0], band="g", flux_err=3.0)
    object_id = int(now["diaSourceId"].iloc[0])
    summary = summarise(np.array([object_id]), now.assign(diaObjectId=object_id), forced_rows(VISIT, np.array([])),
                        MJD[VISIT])
    row = summary.iloc[0]
    assert row["g_psfFluxNdata"] == 1 and row["g_psfFluxMean"] == 42.0
    assert row["g_psfFluxMin"] == row["g_psfFluxMax"] == 42.0
    assert np.isnan(row["g_psfFluxSigma"]) and row["g_psfFluxMeanErr"] == pytest.approx(3.0)
    assert row["nDiaSources"] == 1 and summary["r_psfFluxNdata"].tolist() == [0]
    assert (row["ra"], row["dec"]) == pytest.approx((RA0, DEC0), abs=1e-10)


def test_summary_keeps_bands_apart() -> None:
    """Sources in different bands count in their own band's columns only; nDiaSources counts them all."""
    p = (RA0, DEC0)
    frames = [detections(VISIT_A, [p], [100.0], band="g"), detections(VISIT_B, [p], [300.0], band="i"),
              detections(VISIT, [p], [120.0], band="g")]
    object_id = int(frames[0]["diaSourceId"].iloc[0])
    sources = combine(combine(frames[0], frames[1]), frames[2]).assign(diaObjectId=object_id)
    row = summarise(np.array([object_id]), sources, forced_rows(VISIT, np.array([])), MJD[VISIT]).iloc[0]
    assert (row["g_psfFluxNdata"], row["i_psfFluxNdata"], row["r_psfFluxNdata"]) == (2, 1, 0)
    assert row["g_psfFluxMean"] == pytest.approx(110.0) and row["i_psfFluxMean"] == 300.0
    assert row["nDiaSources"] == 3
    assert row["firstDiaSourceMjdTai"] == MJD[VISIT_A] and row["lastDiaSourceMjdTai"] == MJD[VISIT]


def test_summary_forced_flux_means_come_from_forced_sources() -> None:
    """{band}_fpFluxMean and {band}_scienceFluxMean are the means of the object's forced psfFlux and scienceFlux
    in that band (a single forced source gives its own error as MeanErr); other objects' forced sources do not
    count, and a band without forced sources has no forced means."""
    now = detections(VISIT, [(RA0, DEC0), offset(RA0, DEC0, east=30.0)], [100.0, 100.0])
    object_id, other = (int(i) for i in now["diaSourceId"])
    forced = pd.concat([
        forced_rows(VISIT_A, np.array([object_id]), flux=10.0, science_flux=1000.0),
        forced_rows(VISIT_B, np.array([object_id]), flux=20.0, science_flux=1010.0),
        forced_rows(VISIT, np.array([object_id]), flux=30.0, science_flux=1020.0),
        forced_rows(VISIT, np.array([object_id]), band="g", flux=-5.0, science_flux=500.0, mjd=61004.5),
        forced_rows(VISIT, np.array([other]), flux=1e6, science_flux=1e6),
    ], ignore_index=True)
    summary = summarise(np.array([object_id, other]), now.assign(diaObjectId=now["diaSourceId"]), forced,
                        MJD[VISIT]).set_index("diaObjectId")
    row = summary.loc[object_id]
    assert row["r_fpFluxMean"] == pytest.approx(20.0) and row["r_scienceFluxMean"] == pytest.approx(1010.0)
    assert np.isfinite(row["r_fpFluxMeanErr"]) and np.isfinite(row["r_scienceFluxMeanErr"])
    assert row["g_fpFluxMean"] == -5.0 and row["g_scienceFluxMean"] == 500.0
    assert row["g_fpFluxMeanErr"] == pytest.approx(4.0) and row["g_scienceFluxMeanErr"] == pytest.approx(6.0)
    assert row["g_psfFluxNdata"] == 0  # forced photometry is not a DIA source
    assert missing(summary.loc[[object_id]], "i_fpFluxMean")
    assert summary.loc[other, "r_fpFluxMean"] == 1e6


def test_summary_of_no_objects_is_an_empty_frame() -> None:
    """Nothing detected: an empty summary, whose Ndata columns are still int64."""
    summary = summarise(np.array([], np.int64), detections(VISIT, []).assign(diaObjectId=np.array([], np.int64)),
                        forced_rows(VISIT, np.array([])), MJD[VISIT])
    assert len(summary) == 0
    assert all(summary[f"{band}_psfFluxNdata"].dtype == np.int64 for band in "ugrizy")


def test_a_63_bit_id_survives_combine_with_an_empty_earlier_frame() -> None:
    """Combining an empty earlier frame (float-typed, as an empty query can come back) with this visit's keeps
    the 63-bit ids exactly, as int64, through to the summary (a float64 would round them)."""
    ids = dia_source_id(2026112500367, 188, np.array([8190, 8191]))
    assert int(np.float64(ids[1])) != int(ids[1])  # the hazard: this id is not representable as a float
    now = detections(2026112500367, [(RA0, DEC0), offset(RA0, DEC0, east=5.0)], detector=188).assign(
        diaSourceId=ids, diaObjectId=ids)
    empty = pd.DataFrame({column: np.array([], float) for column in ("diaSourceId", "diaObjectId", "visit",
                                                                      "detector", "ra", "dec", "midpointMjdTai",
                                                                      "psfFlux", "psfFluxErr")})
    combined = combine(empty, now)
    assert combined["diaSourceId"].dtype == combined["diaObjectId"].dtype == np.int64
    assert [int(i) for i in combined["diaObjectId"]] == [int(i) for i in ids]
    summary = summarise(now["diaObjectId"].unique(), combined, combine(empty, forced_rows(VISIT, ids)), MJD[VISIT])
    assert summary["diaObjectId"].dtype == np.int64
    assert [int(i) for i in summary["diaObjectId"]] == [int(i) for i in ids]


def test_combine_keeps_rows_in_order_and_an_all_empty_combination_empty() -> None:
    """Earlier rows come first, then this visit's, with int64 ids; two empty frames give an empty frame."""
    earlier = detections(VISIT_A, [(RA0, DEC0)])
    now = detections(VISIT, [(RA0, DEC0), (RA0, DEC0)])
    both = combine(earlier, now)
    assert both["visit"].tolist() == [VISIT_A, VISIT, VISIT]
    assert both["diaSourceId"].dtype == np.int64
    assert list(both.index) == [0, 1, 2]
    assert len(combine(detections(VISIT_A, []), detections(VISIT, []))) == 0
    pd.testing.assert_frame_equal(combine(earlier, detections(VISIT, [])), earlier)
