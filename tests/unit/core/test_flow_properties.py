"""Properties of the whole core flow: order and duplication do not change the outcome."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.visit import plan_cancel, plan_visit
from streams.serde.records import DetectorCommand, NextVisitCanceled
from tests.unit.core.flow import INSTRUMENTS, POLICY, SURVEYS, T0, Flow, next_visit, plan_inputs, raw

DETECTORS = (0, 1, 2)


def visit_inputs() -> list:  # type: ignore[type-arg]
    """A TestCam visit with two snaps per detector."""
    raws = [raw(d, s, 100 + s) for d in DETECTORS for s in (0, 1)]
    return plan_inputs(next_visit(), raws)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), duplicates=st.lists(st.integers(0, 100), max_size=12))
def test_any_order_and_duplication_gives_the_same_single_summary(seed: int, duplicates: list[int]) -> None:
    """Shuffled, duplicated inputs: every detector succeeds once, with both snaps, one summary."""
    rng = random.Random(seed)
    inputs = visit_inputs()
    inputs += [inputs[i % len(inputs)] for i in duplicates]
    rng.shuffle(inputs)
    flow = Flow()
    flow.run(inputs, T0 + 10, rng)
    assert sorted(r.detector for r in flow.results) == list(DETECTORS)
    assert {r.status for r in flow.results} == {"success"}
    assert all(r.exposure_ids == [100, 101] for r in flow.results)
    assert len(flow.summaries) == 1 and flow.summaries[0].counts["success"] == 3
    assert flow.preloads == len(DETECTORS)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 9))
def test_a_cancel_anywhere_still_gives_one_result_each_and_one_summary(seed: int, cut: int) -> None:
    """Wherever the cancel lands, each detector ends exactly once and the visit once."""
    rng = random.Random(seed)
    inputs = visit_inputs()
    plan = plan_visit(next_visit(), INSTRUMENTS, SURVEYS, POLICY, T0 + 1)
    cancels: list[DetectorCommand] = list(plan_cancel(NextVisitCanceled(groupId=plan.expected.group_id),
                                                      plan.expected, T0 + 2))
    rng.shuffle(inputs)
    position = cut % (len(inputs) + 1)
    flow = Flow()
    flow.run([*inputs[:position], *cancels, *inputs[position:]], T0 + 10, rng)
    flow.tick(T0 + 10_000)
    assert Counter(r.detector for r in flow.results) == Counter(DETECTORS)
    assert {r.status for r in flow.results} <= {"success", "canceled"}
    assert len(flow.summaries) == 1


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), lost=st.sets(st.sampled_from(
    [(d, s) for d in DETECTORS for s in (0, 1)]), max_size=6))
def test_lost_raws_end_in_partial_processing_or_timeouts(seed: int, lost: set[tuple[int, int]]) -> None:
    """Raws that never come: partial snaps are processed at the deadline, none gives a timeout."""
    rng = random.Random(seed)
    raws = [raw(d, s, 100 + s) for d in DETECTORS for s in (0, 1) if (d, s) not in lost]
    flow = Flow()
    flow.run(plan_inputs(next_visit(), raws), T0 + 10, rng)
    flow.tick(T0 + 10_000)
    by_detector = {r.detector: r for r in flow.results}
    for d in DETECTORS:
        held = [s for s in (0, 1) if (d, s) not in lost]
        assert by_detector[d].status == ("success" if held else "timeout")
        assert by_detector[d].snaps_processed == len(held)
    assert len(flow.summaries) == 1
