"""nextVisit validation and fan-out."""

from __future__ import annotations

from dataclasses import replace

import pytest

from streams.core.visit import plan_cancel, plan_visit
from streams.errors import IgnorableEvent, InvalidEventError
from streams.serde.records import NextVisitCanceled
from tests.unit.core.flow import INSTRUMENTS, POLICY, SURVEYS, T0, next_visit


def test_lsstcam_fans_out_to_every_active_detector() -> None:
    """An LSSTCam visit gives 189 start commands, each with the image deadline."""
    plan = plan_visit(next_visit(instrument="LSSTCam"), INSTRUMENTS, SURVEYS, POLICY, T0 + 2)
    assert [c.detector for c in plan.commands] == list(range(189))
    assert {c.action for c in plan.commands} == {"start"}
    assert plan.commands[0].image_deadline == T0 + 2 + 2 * 30.0 + POLICY.image_timeout
    assert plan.expected.detectors == list(range(189))
    assert plan.expected.deadline == plan.commands[0].image_deadline + POLICY.process_timeout


def test_disabled_detectors_get_no_command() -> None:
    """TestCam has detector 3 disabled: it is neither commanded nor expected."""
    plan = plan_visit(next_visit(), INSTRUMENTS, SURVEYS, POLICY, T0)
    assert [c.detector for c in plan.commands] == [0, 1, 2] == plan.expected.detectors


def test_survey_without_pipeline_fans_out_nothing_but_is_expected() -> None:
    """An unknown survey: no detector work, and the gather will report every detector ignored."""
    plan = plan_visit(next_visit(survey="BLOCK-T454"), INSTRUMENTS, SURVEYS, POLICY, T0)
    assert plan.commands == () and plan.expected.pipelines == [] and plan.expected.detectors == [0, 1, 2]


@pytest.mark.parametrize(("changes", "reason"), [
    ({"instrument": ""}, "blank instrument"),
    ({"private_sndStamp": T0 - 3601}, "expiration"),
])
def test_blank_or_expired_is_ignored(changes: dict[str, object], reason: str) -> None:
    """Like the real fan-out: a blank instrument or an hour-old message is dropped, with why."""
    with pytest.raises(IgnorableEvent, match=reason):
        plan_visit(replace(next_visit(), **changes), INSTRUMENTS, SURVEYS, POLICY, T0)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"instrument": "HSC"}, "unknown instrument 'HSC'"),
    ({"groupId": " "}, "blank groupId"),
    ({"groupId": "x; rm -rf /"}, "not a plain identifier"),
    ({"groupId": "../../etc"}, "not a plain identifier"),
    ({"groupId": "-rf"}, "not a plain identifier"),
    ({"coordinateSystem": 3}, r"OBSERVED \(3\)"),
    ({"coordinateSystem": 0}, "not a CoordSys"),
    ({"rotationSystem": 4}, r"rotationSystem MOUNT \(4\)"),
    ({"position": [10.0, 95.0]}, "declination"),
    ({"position": [float("nan"), 0.0]}, "finite"),
    ({"nimages": -1}, "nimages -1"),
    ({"nimages": 10_000}, "nimages 10000"),
    ({"duration": -5.0}, "duration -5.0"),
    ({"duration": 1e9}, "duration"),
    ({"filters": "../../etc"}, "'../../etc' is not a filter name"),
    ({"filters": "x/../../../../../../../tmp/pwned"}, "is not a filter name"),
    ({"filters": "r_57,../x"}, "'../x' is not a filter name"),
    ({"filters": "r_57,"}, "'' is not a filter name"),
    ({"filters": "r_57\n"}, "is not a filter name"),
    ({"filters": "-rf"}, "is not a filter name"),
    ({"filters": "a..b"}, "is not a filter name"),
    ({"filters": "r" * 65}, "is not a filter name"),
    ({"survey": "BLOCK/365"}, "survey 'BLOCK/365' is not a plain name"),
    ({"survey": "../../etc"}, "is not a plain name"),
    ({"survey": "--config=evil"}, "is not a plain name"),
    ({"survey": "BLOCK 365"}, "is not a plain name"),
])
def test_nonsense_is_invalid_with_a_reason(changes: dict[str, object], reason: str) -> None:
    """Each kind of nonsense raises InvalidEventError naming the problem (it becomes a dead letter)."""
    with pytest.raises(InvalidEventError, match=reason):
        plan_visit(replace(next_visit(), **changes), INSTRUMENTS, SURVEYS, POLICY, T0)


@pytest.mark.parametrize(("filters", "survey"), [
    ("", "BLOCK-365"), ("r_57", ""), ("r_57,g_6,SDSSr_65mm", "BLOCK-T427"), ("r" * 64, "CALIB-FLAT.2"),
])
def test_plain_filters_and_surveys_are_accepted(filters: str, survey: str) -> None:
    """Filters are a comma-separated list of plain names, possibly empty; a survey may be empty (nothing serves
    it) or a plain name up to 64 characters."""
    plan = plan_visit(replace(next_visit(), filters=filters, survey=survey), INSTRUMENTS, SURVEYS, POLICY, T0)
    assert plan.expected.survey == survey
    assert {c.filters for c in plan.commands} <= {filters}


def test_no_spatial_information_is_accepted() -> None:
    """coordinateSystem NONE means no spatial preload, not an error."""
    plan = plan_visit(replace(next_visit(), coordinateSystem=1, position=[0.0, 0.0]), INSTRUMENTS, SURVEYS,
                      POLICY, T0)
    assert len(plan.commands) == 3


def test_cancel_reaches_each_detector_of_the_visit() -> None:
    """nextVisitCanceled becomes a cancel command per fanned-out detector."""
    plan = plan_visit(next_visit(), INSTRUMENTS, SURVEYS, POLICY, T0)
    cancel = NextVisitCanceled(groupId=plan.expected.group_id)
    commands = plan_cancel(cancel, plan.expected, T0 + 3)
    assert [(c.action, c.detector) for c in commands] == [("cancel", 0), ("cancel", 1), ("cancel", 2)]
    with pytest.raises(IgnorableEvent, match="no such visit"):
        plan_cancel(cancel, None, T0)
