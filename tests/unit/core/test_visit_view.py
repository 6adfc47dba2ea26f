"""The operator's view of visits: CCD states merged from the workers' slices, rows, histogram."""

from __future__ import annotations

from streams.core.detector import Phase
from streams.core.focal_plane import detector_centre
from streams.core.visit_view import WorkerSlice, ccd_state, latency_histogram, overview, visit_view
from streams.serde.records import DetectorOutcome, DetectorProgress, VisitExpected, VisitProgress

GROUP = "2026-11-25T03:00:00.000"


def row(detector: int, phase: str) -> DetectorProgress:
    return DetectorProgress(instrument="LSSTComCam", group_id=GROUP, detector=detector, phase=phase)


def outcome(detector: int, status: str, latency: float = 0.0) -> DetectorOutcome:
    return DetectorOutcome(detector=detector, status=status, first_raw_time=100.0 if latency else 0.0,
                           result_time=100.0 + latency)


def test_a_result_decides_the_state_and_the_row_tells_what_comes_before() -> None:
    assert ccd_state(None, False, None) == "waiting"  # fanned out, its start not yet seen
    assert ccd_state(row(0, Phase.PRESENCE), False, None) == "waiting"
    assert ccd_state(row(0, Phase.WAITING), True, None) == "preloading"
    assert ccd_state(row(0, Phase.WAITING), False, None) == "waiting"
    assert ccd_state(row(0, Phase.PROCESSING), False, None) == "processing"
    assert ccd_state(row(0, Phase.DONE), False, None) == "processing"  # outcome on its way to the gather
    assert ccd_state(row(0, Phase.CANCELED), False, None) == "canceled"
    assert ccd_state(row(0, Phase.PROCESSING), False, "timeout") == "timed out"  # the gather's deadline
    assert [ccd_state(None, False, s) for s in ("success", "ignored", "failed", "canceled")] == [
        "done", "done", "failed", "canceled"]


def test_a_visit_merges_the_slices_of_every_worker() -> None:
    expected = VisitExpected(instrument="LSSTComCam", group_id=GROUP, survey="BLOCK-1", detectors=list(range(9)))
    progress = VisitProgress(instrument="LSSTComCam", group_id=GROUP, expected_known=True, expected=list(range(9)),
                             outcomes=[outcome(0, "success", 12.0), outcome(1, "failed", 3.0)])
    slices = [WorkerSlice(rows=[row(0, Phase.DONE), row(2, Phase.WAITING)], preloading=frozenset({2}), progress=None),
              WorkerSlice(rows=[row(1, Phase.DONE), row(3, Phase.PROCESSING)], preloading=frozenset(),
                          progress=progress)]
    view = visit_view("LSSTComCam", GROUP, expected, slices)
    assert [c["state"] for c in view["ccds"]] == ["done", "failed", "preloading", "processing"] + ["waiting"] * 5
    assert view["ccds"][4]["name"] == "R22_S11"
    assert view["counts"]["waiting"] == 5 and view["counts"]["done"] == 1
    assert view["latency"]["counts"][:3] == [1, 0, 1]  # 3 s and 12 s


def test_the_overview_splits_visits_in_flight_from_the_last_finished() -> None:
    def expected(group: str) -> VisitExpected:
        return VisitExpected(instrument="LSSTCam", group_id=group, detectors=[0, 1], next_visit_time=50.0)

    done = VisitProgress(instrument="LSSTCam", group_id="a", expected_known=True, expected=[0, 1],
                         next_visit_time=50.0, summary_time=170.0,
                         outcomes=[outcome(0, "success", 10.0), outcome(1, "success", 70.0)])
    view = overview([expected("a"), expected("b")], [done])
    assert [v["group_id"] for v in view["in_flight"]] == ["b"]
    [recent] = view["recent"]
    assert (recent["results"], recent["raw_to_result_max"], recent["next_visit_to_summary"]) == (2, 70.0, 120.0)
    assert latency_histogram([0.0, 59.9, 60.0, 1e6])["counts"] == [1, 0, 0, 0, 0, 0, 1, 1, 0, 1]


def test_detector_centres_follow_the_lsstcam_layout() -> None:
    assert detector_centre("LSSTCam", 94) == (0.0, 0.0)
    assert detector_centre("LSSTCam", 0) == (-169.25, -296.25)
    assert detector_centre("LSSTComCam", 0) == (-42.25, -42.25)
