"""What the operators' commands show, from decoded table rows and dead letters."""

from __future__ import annotations

import json

from streams.ops.status import dead_letter_table, in_flight, in_flight_table, jsonable, visit_status
from streams.serde.records import DeadLetter, DetectorOutcome, DetectorProgress, VisitProgress


def progress(group: str, results: int, summary_time: float = 0.0, first_seen: float = 100.0) -> VisitProgress:
    """A gather row of a 9-detector visit with `results` outcomes."""
    return VisitProgress(instrument="LSSTComCam", group_id=group, survey="BLOCK-365", expected_known=True,
                         expected=list(range(9)), deadline=first_seen + 60, first_seen_time=first_seen,
                         outcomes=[DetectorOutcome(detector=d, status="success" if d else "failed")
                                   for d in range(results)], summary_time=summary_time)


def test_a_visit_in_flight_shows_each_detectors_state() -> None:
    """Results from the gather win over the detector table's phase; the rest show their phase."""
    rows = [DetectorProgress(instrument="LSSTComCam", group_id="g", detector=d, phase=phase)
            for d, phase in [(0, "done"), (3, "processing"), (4, "waiting")]]
    shown = visit_status("LSSTComCam", "g", progress("g", 3), rows)
    assert shown.splitlines() == [
        "visit LSSTComCam/g: in flight: 3/9 results, survey BLOCK-365",
        "  detectors: expected 4, failed 1, processing 1, success 2, waiting 1",
        "  expected: 5 6 7 8", "  failed: 0", "  processing: 3", "  success: 1 2", "  waiting: 4"]


def test_unknown_and_early_visits() -> None:
    """A visit nobody has seen, and one with raws but no nextVisit yet, are told apart."""
    assert "unknown" in visit_status("LSSTCam", "g", None, [])
    early = [DetectorProgress(instrument="LSSTCam", group_id="g", detector=94)]
    assert visit_status("LSSTCam", "g", None, early).splitlines()[:2] == [
        "visit LSSTCam/g: raws seen, no nextVisit yet", "  detectors: presence 1"]


def test_visits_in_flight_leave_out_summarised_ones_oldest_first() -> None:
    """Summarised visits are not in flight; the table shows results so far, age and deadline."""
    rows = in_flight([progress("new", 2, first_seen=150.0), progress("done", 9, summary_time=170.0),
                      progress("old", 5, first_seen=100.0)])
    assert [row.group_id for row in rows] == ["old", "new"]
    lines = in_flight_table(rows, now=160.0).splitlines()
    assert lines[1].split() == ["LSSTComCam", "old", "BLOCK-365", "5/9", "60", "0"]
    assert lines[-1] == "2 visit(s) in flight"


def test_dead_letters_show_origin_reason_and_value_on_one_line() -> None:
    """Multi-line reasons and binary values stay on one row each."""
    letter = DeadLetter(topic="t", partition=2, offset=7, value=b"\x07\xff", error_class="WireFormatError",
                        reason="bad\nmagic byte", agent="detector")
    [_, row, total] = dead_letter_table([(3, letter)]).splitlines()
    assert row.split()[:6] == ["3", "t", "[2]", "@7", "detector", "WireFormatError"]
    assert "bad magic byte" in row and "base64:B/8=" in row and total == "1 dead letter(s)"


def test_records_become_json() -> None:
    """Bytes as text or base64, NaN as null."""
    assert json.dumps(jsonable({"a": b"ok", "b": [float("nan")], "c": b"\xff"})) == \
        '{"a": "ok", "b": [null], "c": "base64:/w=="}'
