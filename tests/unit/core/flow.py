"""A broker-less driver of the core: the whole visit flow, with events in any order.

It plays the shell's part with plain lists: start commands and raws go to the detector step,
a Dispatch becomes a pipeline-done event, outcomes go to the gather step. Tests shuffle and
duplicate the inputs and compare what comes out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from streams.core import detector, gather
from streams.core.instruments import Instrument
from streams.core.policy import Policy
from streams.core.surveys import SurveyTable
from streams.core.visit import plan_visit
from streams.serde.records import (
    CcdResult,
    DetectorCommand,
    DetectorProgress,
    NextVisit,
    RawImageAvailable,
    VisitExpected,
    VisitProgress,
    VisitSummary,
)

T0 = 1_800_000_000.0
INSTRUMENTS = {"LSSTCam": Instrument("LSSTCam", frozenset(range(189)), frozenset()),
               "TestCam": Instrument("TestCam", frozenset(range(4)), frozenset([3]))}
SURVEYS = SurveyTable((("BLOCK-T454", ()), ("BLOCK-*", ("stand-in",))))
POLICY = Policy(image_timeout=10.0, process_timeout=20.0)



@dataclass(frozen=True)
class PipelineDone:
    """The pipeline of a dispatched detector finished."""

    result: CcdResult


@dataclass(frozen=True)
class Outcome:
    """A detector's outcome on its way to the gather."""

    result: CcdResult


Event = DetectorCommand | RawImageAvailable | VisitExpected | PipelineDone | Outcome


def next_visit(group: str = "2026-11-25T01:00:00.000", *, instrument: str = "TestCam", nimages: int = 2,
               survey: str = "BLOCK-365", duration: float = 30.0, sent: float = T0) -> NextVisit:
    """A valid nextVisit."""
    return NextVisit(salIndex=1, private_sndStamp=sent, groupId=group, coordinateSystem=2,
                     position=[10.0, -20.0], rotationSystem=2, duration=duration, nimages=nimages,
                     instrument=instrument, survey=survey, filters="r_57")


def raw(detector_id: int, snap: int, exposure: int, group: str = "2026-11-25T01:00:00.000",
        instrument: str = "TestCam", at: float = T0 + 5) -> RawImageAvailable:
    """A raw arrival."""
    return RawImageAvailable(instrument=instrument, group_id=group, detector=detector_id, snap=snap,
                             exposure_id=exposure, uri=f"file:///raws/{exposure}/{detector_id}.fits", arrival_time=at)


@dataclass
class Flow:
    """The state of every detector and visit, and everything emitted."""

    detectors: dict[tuple[str, str, int], DetectorProgress] = field(default_factory=dict)
    visits: dict[tuple[str, str], VisitProgress] = field(default_factory=dict)
    results: list[CcdResult] = field(default_factory=list)
    summaries: list[VisitSummary] = field(default_factory=list)
    dispatched: list[DetectorProgress] = field(default_factory=list)
    preloads: int = 0

    def feed(self, event: Event, now: float) -> list[Event]:
        """Apply one event; return the events it causes (pipeline completions, outcomes)."""
        if isinstance(event, VisitExpected):
            return self._gather(gather.on_expected(self.visits.get((event.instrument, event.group_id)),
                                                   event, now), event.instrument, event.group_id)
        if isinstance(event, Outcome):
            result = event.result
            return self._gather(gather.on_outcome(self.visits.get((result.instrument, result.group_id)),
                                                  result, now), result.instrument, result.group_id)
        subject = event.result if isinstance(event, PipelineDone) else event
        key = (subject.instrument, subject.group_id, subject.detector)
        state = self.detectors.get(key)
        if isinstance(event, DetectorCommand):
            new, outputs = detector.on_command(state, event, now)
        elif isinstance(event, RawImageAvailable):
            new, outputs = detector.on_raw(state, event, now)
        else:
            new, outputs = detector.on_pipeline_done(state, event.result, now)
        self.detectors[key] = new
        caused: list[Event] = []
        for output in outputs:
            if isinstance(output, detector.StartPreload):
                self.preloads += 1
            elif isinstance(output, detector.Dispatch):
                self.dispatched.append(output.progress)
                caused.append(PipelineDone(CcdResult(
                    instrument=new.instrument, group_id=new.group_id, detector=new.detector, status="success",
                    exposure_ids=[s.exposure_id for s in output.progress.snaps],
                    snaps_processed=len(output.progress.snaps))))
            elif isinstance(output, detector.EmitOutcome):
                caused.append(Outcome(output.result))
        return caused

    def _gather(self, step: gather.Step, instrument: str, group: str) -> list[Event]:
        state, outputs = step
        if state is None:
            self.visits.pop((instrument, group), None)
        else:
            self.visits[(instrument, group)] = state
        for output in outputs:
            if isinstance(output, gather.EmitResult):
                self.results.append(output.result)
            elif isinstance(output, gather.EmitSummary):
                self.summaries.append(output.summary)
        return []

    def tick(self, now: float) -> None:
        """Wall-clock time: image timeouts for waiting detectors, deadlines for visits."""
        pending: list[Event] = []
        for progress in list(self.detectors.values()):
            if progress.phase == detector.Phase.WAITING and now >= progress.image_deadline:
                pending.append(DetectorCommand(action="image_timeout", instrument=progress.instrument,
                                               group_id=progress.group_id, detector=progress.detector))
        self.run(pending, now)
        for key, progress in list(self.visits.items()):
            self._gather(gather.on_tick(progress, now, POLICY.retention), *key)

    def run(self, events: list[Event], now: float, rng: random.Random | None = None) -> None:
        """Feed events until none are left; with `rng`, caused events join the pool at random places."""
        pool = list(events)
        while pool:
            event = pool.pop(0)
            for caused in self.feed(event, now):
                pool.insert(rng.randrange(len(pool) + 1) if rng else len(pool), caused)


def plan_inputs(visit: NextVisit, raws: list[RawImageAvailable], now: float = T0 + 1) -> list[Event]:
    """The fan-out of `visit` (commands and VisitExpected) followed by the raws."""
    plan = plan_visit(visit, INSTRUMENTS, SURVEYS, POLICY, now)
    return [*plan.commands, plan.expected, *raws]
