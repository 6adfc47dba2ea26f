"""A nextVisit becomes a plan: one start command per active detector, and what the gather expects.

Only the group id is known now: exposure ids exist once raws do, so everything downstream is
keyed by (instrument, group), never by exposure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

from streams.core.arrivals import check_group
from streams.core.calibrations import plain_name
from streams.core.instruments import Instrument
from streams.core.policy import Policy
from streams.core.surveys import SurveyTable
from streams.errors import IgnorableEvent, InvalidEventError
from streams.serde.records import DetectorCommand, NextVisit, NextVisitCanceled, VisitExpected


class CoordSys(IntEnum):
    """Script.MetadataCoordSys."""

    NONE = 1
    ICRS = 2
    OBSERVED = 3
    MOUNT = 4


class RotSys(IntEnum):
    """Script.MetadataRotSys."""

    NONE = 1
    SKY = 2
    HORIZON = 3
    MOUNT = 4


SUPPORTED_COORDS = (CoordSys.NONE, CoordSys.ICRS)
SUPPORTED_ROTATIONS = (RotSys.NONE, RotSys.SKY)


@dataclass(frozen=True)
class VisitPlan:
    """What to send for one nextVisit."""

    commands: tuple[DetectorCommand, ...]
    expected: VisitExpected


def _enum_name(enum: type[IntEnum], value: int) -> str:
    try:
        return f"{enum(value).name} ({value})"
    except ValueError:
        return f"{value} (not a {enum.__name__} value)"


def check_filters(filters: str) -> None:
    """Refuse a `filters` field that is not a comma-separated list of plain filter names (it may be empty): the
    first one names the template folder and the calibrations a pipeline looks up.

    Raises:
        InvalidEventError: with the offending name.
    """
    for name in filters.split(",") if filters else ():
        if not plain_name(name):
            raise InvalidEventError(f"filters {filters!r}: {name!r} is not a filter name (letters, digits, "
                                    "'_', '.', '-', no '..', at most 64 characters)")


def check_survey(survey: str) -> None:
    """Refuse a survey that is not a plain name (it may be empty: no pipeline serves it): it reaches pipelines
    as an argument and a label, never as a path, and must not be able to become one.

    Raises:
        InvalidEventError: with the survey.
    """
    if survey and not plain_name(survey):
        raise InvalidEventError(f"survey {survey!r} is not a plain name (letters, digits, '_', '.', '-', no '..', "
                                "at most 64 characters)")


def validate(visit: NextVisit, instruments: dict[str, Instrument], policy: Policy, now: float) -> Instrument:
    """The instrument of a usable nextVisit.

    Raises:
        IgnorableEvent: blank instrument, or older than the message expiration.
        InvalidEventError: anything that makes no sense, with the reason.
    """
    if not visit.instrument.strip():
        raise IgnorableEvent(f"group {visit.groupId!r}: blank instrument")
    if not math.isfinite(visit.private_sndStamp) or visit.private_sndStamp - now > policy.max_clock_skew:
        raise InvalidEventError(f"group {visit.groupId!r}: private_sndStamp {visit.private_sndStamp} is not a time "
                                f"up to {policy.max_clock_skew:.0f} s ahead of now")
    age = now - visit.private_sndStamp
    if age > policy.message_expiration:
        raise IgnorableEvent(f"group {visit.groupId!r}: sent {age:.0f} s ago, "
                             f"older than the {policy.message_expiration:.0f} s expiration")
    if visit.instrument not in instruments:
        raise InvalidEventError(f"unknown instrument {visit.instrument!r}: "
                                f"expected one of {', '.join(sorted(instruments))}")
    if not visit.groupId.strip():
        raise InvalidEventError("blank groupId: a visit needs a group id")
    check_group(visit.groupId)
    check_survey(visit.survey)
    check_filters(visit.filters)
    if visit.coordinateSystem not in SUPPORTED_COORDS:
        raise InvalidEventError(f"unsupported coordinateSystem {_enum_name(CoordSys, visit.coordinateSystem)}: "
                                "only ICRS (2) or NONE (1)")
    if visit.rotationSystem not in SUPPORTED_ROTATIONS:
        raise InvalidEventError(f"unsupported rotationSystem {_enum_name(RotSys, visit.rotationSystem)}: "
                                "only SKY (2) or NONE (1)")
    if visit.coordinateSystem == CoordSys.ICRS:
        if len(visit.position) != 2 or not all(math.isfinite(v) for v in visit.position):
            raise InvalidEventError(f"position {visit.position} is not a finite (RA, Dec) pair")
        if not -90.0 <= visit.position[1] <= 90.0:
            raise InvalidEventError(f"declination {visit.position[1]} is outside [-90, 90] deg")
    if not 0 <= visit.nimages <= policy.max_nimages:
        raise InvalidEventError(f"nimages {visit.nimages} is outside 0..{policy.max_nimages}")
    if not (math.isfinite(visit.duration) and 0.0 <= visit.duration <= policy.max_duration):
        raise InvalidEventError(f"duration {visit.duration} s is outside 0..{policy.max_duration:.0f} s")
    return instruments[visit.instrument]


def plan_visit(visit: NextVisit, instruments: dict[str, Instrument], surveys: SurveyTable,
               policy: Policy, now: float) -> VisitPlan:
    """Fan a nextVisit out: a start command per active detector, unless no pipeline serves the survey.

    Raises:
        IgnorableEvent, InvalidEventError: see `validate`.
    """
    instrument = validate(visit, instruments, policy, now)
    pipelines = list(surveys.pipelines_for(visit.survey))
    image_deadline = policy.image_deadline(now, visit.duration)
    detectors = list(instrument.active)
    commands = tuple(
        DetectorCommand(
            action="start", instrument=visit.instrument, group_id=visit.groupId, detector=detector,
            survey=visit.survey, pipelines=pipelines, nimages=visit.nimages, duration=visit.duration,
            filters=visit.filters, position=list(visit.position), camera_angle=visit.cameraAngle,
            coordinate_system=visit.coordinateSystem, next_visit_time=visit.private_sndStamp,
            fanout_time=now, image_deadline=image_deadline, command_time=now,
        )
        for detector in detectors
    ) if pipelines else ()
    expected = VisitExpected(
        instrument=visit.instrument, group_id=visit.groupId, survey=visit.survey, pipelines=pipelines,
        detectors=detectors, nimages=visit.nimages, next_visit_time=visit.private_sndStamp,
        fanout_time=now, deadline=policy.visit_deadline(now, visit.duration),
    )
    return VisitPlan(commands, expected)


def forgotten(expected: VisitExpected, policy: Policy, now: float) -> bool:
    """Whether a fanned-out visit is past its cancellations: they only matter while it is in flight, so it is
    remembered `retention` after its fan-out."""
    return now - expected.fanout_time > policy.retention


def plan_cancel(cancel: NextVisitCanceled, expected: VisitExpected | None, now: float) -> tuple[DetectorCommand, ...]:
    """A cancel command for each detector the canceled visit fanned out to.

    Raises:
        IgnorableEvent: no visit of that group was fanned out here (or it was ignored).
    """
    if expected is None or not expected.pipelines:
        raise IgnorableEvent(f"nextVisitCanceled for group {cancel.groupId!r}: no such visit in flight")
    return tuple(
        DetectorCommand(action="cancel", instrument=expected.instrument, group_id=expected.group_id,
                        detector=detector, command_time=now)
        for detector in expected.detectors
    )
