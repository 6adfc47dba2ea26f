"""The detector state machine, one rule at a time."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streams.core import detector
from streams.core.detector import LATE_EXPOSURES, UNKNOWN_NIMAGES, Phase, most_exposures
from streams.core.visit import plan_visit
from streams.errors import IgnorableEvent
from streams.runtime.driver import MemoryRegistry
from streams.serde.codec import Codec
from streams.serde.records import CcdResult, DetectorCommand, DetectorProgress
from tests.unit.core.flow import INSTRUMENTS, POLICY, SURVEYS, T0, next_visit, raw


def start(nimages: int = 2, detector_id: int = 0) -> DetectorCommand:
    """The start command of detector `detector_id`."""
    plan = plan_visit(next_visit(nimages=nimages), INSTRUMENTS, SURVEYS, POLICY, T0 + 1)
    return plan.commands[detector_id]


def kinds(outputs: list[detector.Output]) -> list[str]:
    """The output types, by name."""
    return [type(o).__name__ for o in outputs]


def test_start_preloads_then_two_snaps_dispatch() -> None:
    """Start -> preload; one snap waits; the second dispatches with both."""
    state, out = detector.on_command(None, start(), T0 + 1)
    assert state.phase == Phase.WAITING and kinds(out) == ["StartPreload"]
    state, out = detector.on_raw(state, raw(0, 0, 100), T0 + 5)
    assert state.phase == Phase.WAITING and out == []
    state, out = detector.on_raw(state, raw(0, 1, 101), T0 + 6)
    assert state.phase == Phase.PROCESSING and kinds(out) == ["Dispatch"]
    assert [s.exposure_id for s in state.snaps] == [100, 101]


def test_raws_before_next_visit_are_held_and_matched() -> None:
    """The presence rule: raws first, then the start command dispatches at once."""
    state, _ = detector.on_raw(None, raw(0, 0, 100), T0)
    state, _ = detector.on_raw(state, raw(0, 1, 101), T0)
    assert state.phase == Phase.PRESENCE
    state, out = detector.on_command(state, start(), T0 + 1)
    assert kinds(out) == ["StartPreload", "Dispatch"] and state.phase == Phase.PROCESSING


def test_duplicate_raw_changes_nothing() -> None:
    """The same raw twice holds one snap."""
    state, _ = detector.on_command(None, start(), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 100), T0)
    again, out = detector.on_raw(state, raw(0, 0, 100), T0 + 1)
    assert out == [] and again is state


def test_rerun_exposures_replace_the_aborted_attempt() -> None:
    """An aborted attempt's snap 0 (exp 100) is superseded by the re-run's (exp 102, 103)."""
    state, _ = detector.on_command(None, start(), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 100), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 102), T0 + 40)
    state, out = detector.on_raw(state, raw(0, 1, 103), T0 + 50)
    assert kinds(out) == ["Dispatch"] and [s.exposure_id for s in state.snaps] == [102, 103]
    assert state.exposures_seen == [100, 102, 103]


def test_stale_exposure_after_a_newer_one_is_not_processed() -> None:
    """A leftover of the aborted attempt arriving late does not replace the newer snap."""
    state, _ = detector.on_command(None, start(), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 102), T0)
    state, out = detector.on_raw(state, raw(0, 0, 100), T0)
    assert out == [] and [s.exposure_id for s in state.snaps] == [102] and state.exposures_seen == [100, 102]


def test_raws_after_dispatch_are_recorded_not_processed() -> None:
    """One result per detector: later raws of the group are only noted."""
    state, _ = detector.on_command(None, start(nimages=1), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 100), T0)
    state, out = detector.on_raw(state, raw(0, 0, 104), T0 + 60)
    assert out == [] and [s.exposure_id for s in state.snaps] == [100] and state.exposures_seen == [100, 104]


def test_image_timeout_processes_partial_snaps() -> None:
    """One of two snaps at the deadline: dispatch with the one."""
    state, _ = detector.on_command(None, start(), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 100), T0)
    timeout = replace(start(), action="image_timeout")
    early, out = detector.on_command(state, timeout, state.image_deadline - 1)
    assert out == [] and early.phase == Phase.WAITING
    state, out = detector.on_command(state, timeout, state.image_deadline)
    assert kinds(out) == ["Dispatch"] and len(state.snaps) == 1


def test_image_timeout_without_raws_is_a_timeout_result() -> None:
    """No raw by the deadline: a timeout outcome, and the preload is abandoned."""
    state, _ = detector.on_command(None, start(), T0)
    state, out = detector.on_command(state, replace(start(), action="image_timeout"), state.image_deadline + 1)
    assert kinds(out) == ["Abandon", "EmitOutcome"] and state.phase == Phase.DONE
    assert out[1].result.status == "timeout" and "image deadline" in out[1].result.error_message


def test_unknown_nimages_waits_for_the_deadline() -> None:
    """nimages = 0: raws never dispatch by count; the deadline dispatches what came."""
    state, _ = detector.on_command(None, start(nimages=0), T0)
    for snap in range(3):
        state, out = detector.on_raw(state, raw(0, snap, 100 + snap), T0)
        assert out == []
    state, out = detector.on_command(state, replace(start(), action="image_timeout"), state.image_deadline)
    assert kinds(out) == ["Dispatch"] and len(state.snaps) == 3


def test_cancel_while_waiting_gives_canceled_at_once() -> None:
    """Pending detectors stop at once with a canceled result."""
    state, _ = detector.on_command(None, start(), T0)
    state, out = detector.on_command(state, replace(start(), action="cancel"), T0 + 2)
    assert kinds(out) == ["Abandon", "EmitOutcome"] and out[1].result.status == "canceled"


def test_cancel_after_dispatch_lets_the_pipeline_finish() -> None:
    """A dispatched detector keeps its result."""
    state, _ = detector.on_command(None, start(nimages=1), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 100), T0)
    state, out = detector.on_command(state, replace(start(), action="cancel"), T0 + 2)
    assert out == [] and state.phase == Phase.PROCESSING


def test_cancel_before_start_cancels_the_start() -> None:
    """Commands can cross: a cancel that comes first makes the later start end canceled."""
    state, out = detector.on_command(None, replace(start(), action="cancel"), T0)
    assert out == [] and state.cancel_requested
    state, out = detector.on_command(state, start(), T0 + 1)
    assert kinds(out) == ["EmitOutcome"] and out[0].result.status == "canceled"


def test_pipeline_done_emits_once() -> None:
    """The first completion is the outcome; a duplicate completion is ignored."""
    state, _ = detector.on_command(None, start(nimages=1), T0)
    state, _ = detector.on_raw(state, raw(0, 0, 100, at=T0 + 3), T0 + 3)
    done = CcdResult(instrument="TestCam", group_id=state.group_id, detector=0, status="success")
    state, out = detector.on_pipeline_done(state, done, T0 + 9)
    assert kinds(out) == ["EmitOutcome"] and out[0].result.first_raw_time == T0 + 3
    assert out[0].result.result_time == T0 + 9 and out[0].result.fanout_time == T0 + 1
    _, again = detector.on_pipeline_done(state, done, T0 + 10)
    assert again == []


def test_repeated_start_extends_only_the_wait() -> None:
    """A re-run's nextVisit under the same group extends the image deadline; no new preload."""
    state, _ = detector.on_command(None, start(), T0)
    later = replace(start(), image_deadline=start().image_deadline + 100)
    state2, out = detector.on_command(state, later, T0 + 50)
    assert out == [] and state2.image_deadline == later.image_deadline


def test_finished_state_expires_after_retention() -> None:
    """Done state is forgotten after the retention time, waiting state never."""
    state, _ = detector.on_command(None, start(), T0)
    assert not detector.expired(state, 10, T0 + 100)
    state, _ = detector.on_command(state, replace(start(), action="cancel"), T0)
    assert detector.expired(state, 10, T0 + 11) and not detector.expired(state, 10, T0 + 5)


def finished(nimages: int = 1) -> DetectorProgress:
    """A detector whose pipeline ran on its snaps (exposures 100, 101, ...) and finished at T0 + 10."""
    state, _ = detector.on_command(None, start(nimages=nimages), T0)
    for snap in range(nimages):
        state, _ = detector.on_raw(state, raw(0, snap, 100 + snap), T0 + 1)
    state, _ = detector.on_pipeline_done(state, CcdResult(instrument="TestCam", group_id=state.group_id, detector=0,
                                                          status="success"), T0 + 10)
    assert state.phase == Phase.DONE
    return state


def flood(state: DetectorProgress, count: int, now: float) -> tuple[DetectorProgress, int, int]:
    """`count` raws with new exposure ids (as large as the camera's) for the detector; the state after, the size of
    its encoded form (the largest on the way: a row only gains exposures), and how many raws were ignored."""
    ignored = 0
    for exposure in range(2026112501000, 2026112501000 + count):
        try:
            state, _ = detector.on_raw(state, raw(0, exposure % 2, exposure), now)
        except IgnorableEvent:
            ignored += 1
    return state, len(Codec(MemoryRegistry()).encode("detectors", state)), ignored


def test_a_flood_of_raws_keeps_the_row_small() -> None:
    """20,000 raws for one finished detector: it records its visit's snaps twice over and a few more, and ignores
    the rest, so its row stays small (it grew to 100 kB, and each raw cost more than the last)."""
    state, size, ignored = flood(finished(nimages=1), 20_000, T0 + 60)
    assert len(state.exposures_seen) == most_exposures(state) == 2 + LATE_EXPOSURES
    assert ignored == 20_000 - len(state.exposures_seen) + 1 and size < 512
    assert [s.exposure_id for s in state.snaps] == [100], "the result stands on the raw it was processed with"


def test_a_flood_of_raws_before_the_start_keeps_the_row_small() -> None:
    """With no start yet, nimages is unknown: the detector allows for the largest visit, and no more."""
    state, size, _ = flood(detector.on_raw(None, raw(0, 0, 100), T0)[0], 20_000, T0)
    assert len(state.exposures_seen) == 2 * UNKNOWN_NIMAGES + LATE_EXPOSURES and size < 2048


def test_raws_beyond_the_limit_change_nothing() -> None:
    """Once a detector has recorded its most, a new exposure is ignored (the row is left as it is) and a recorded
    one is a duplicate: neither costs a write."""
    full, _, _ = flood(finished(nimages=2), 100, T0 + 60)
    with pytest.raises(IgnorableEvent, match=f"recorded {most_exposures(full)} exposures"):
        detector.on_raw(full, raw(0, 0, 999_999), T0 + 61)
    again, out = detector.on_raw(full, raw(0, 0, full.exposures_seen[-1]), T0 + 61)
    assert again is full and out == []


def test_a_rerun_is_still_processed_within_the_limit() -> None:
    """The limit leaves room for an aborted attempt's snaps and its re-run's: the re-run's are the ones held."""
    nimages = 50
    state, _ = detector.on_command(None, start(nimages=nimages), T0)
    for snap in range(nimages - 1):
        state, _ = detector.on_raw(state, raw(0, snap, 100 + snap), T0 + 1)
    for snap in range(nimages):
        state, out = detector.on_raw(state, raw(0, snap, 1000 + snap), T0 + 2)
    assert kinds(out) == ["Dispatch"] and [s.exposure_id for s in state.snaps] == list(range(1000, 1000 + nimages))


def test_late_raws_do_not_keep_a_finished_detector() -> None:
    """Raws coming after the outcome are recorded (up to the most), but the row still expires `retention` after it
    finished."""
    state = finished()
    for second in range(1, most_exposures(state)):
        state, out = detector.on_raw(state, raw(0, 0, 100 + second), T0 + 10 + second)
        assert out == []
    assert len(state.exposures_seen) == most_exposures(state)
    assert detector.expired(state, 60, T0 + 71) and not detector.expired(state, 60, T0 + 69)


def test_raws_without_a_start_are_forgotten_after_the_first() -> None:
    """A detector that only ever gets raws (no nextVisit fanned out to it) expires `retention` after its first,
    however many follow."""
    state, _ = detector.on_raw(None, raw(0, 0, 100), T0)
    for second in range(1, 50):
        state, _ = detector.on_raw(state, raw(0, 0, 100 + second), T0 + second)
    assert state.phase == Phase.PRESENCE and detector.expired(state, 30, T0 + 31)
