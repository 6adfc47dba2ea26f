"""One detector of one visit: start, raws, cancel, image timeout and pipeline completion.

Each function is `(state, event, now) -> (new state, outputs)`. The state is also the presence
table: raws that come before the start command are held and matched when it arrives. The
outputs tell the shell what to do: preload, dispatch the pipeline, or emit an outcome.

**Which exposures are processed** (only the group id is known at nextVisit time): a detector
holds one raw per snap index. Until the pipeline is dispatched, a raw with a higher exposure id
replaces the one held for its snap index (a script aborted and re-run under the same group
takes new exposures, with higher ids), and a raw with the same or a lower id is a duplicate or
a leftover of the aborted attempt and is not processed. The detector is dispatched once it holds
`nimages` snaps, or at the image deadline with what it holds. Raws that come after dispatch are
recorded in `exposures_seen` but not processed: a group gives one result per detector, and its
`exposure_ids` say exactly which exposures it used.

**What a raw cannot do:** a raw whose exposure id is already recorded changes nothing, a detector
records at most `most_exposures` exposure ids (a raw with a new one beyond them is ignored),
and no raw moves the row's expiry, which counts from its last command or completion (from its
first raw while it has no start). Otherwise a flood of raws for one detector grows its row without
limit, each raw costing more than the last, and keeps the row forever.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, replace

from streams.core.policy import Policy
from streams.errors import IgnorableEvent
from streams.serde.records import CcdResult, DetectorCommand, DetectorProgress, HeldSnap, RawImageAvailable

LATE_EXPOSURES = 4
"""Exposure ids a detector records beyond its visit's snaps twice over (an aborted attempt and its re-run)."""
UNKNOWN_NIMAGES = Policy().max_nimages
"""The snaps a detector allows for while its visit's are unknown (no start yet, or a nextVisit that did not say):
the most a nextVisit may announce."""


class Phase:
    """The phases of a detector (strings, as stored in DetectorProgress.phase)."""

    PRESENCE = "presence"
    """Raws (or a cancel) seen, but no start command yet."""
    WAITING = "waiting"
    """Started: preloading and waiting for raws."""
    PROCESSING = "processing"
    """The pipeline is dispatched."""
    DONE = "done"
    """An outcome was emitted (success, failed, timeout)."""
    CANCELED = "canceled"
    """The visit was canceled before dispatch; a canceled outcome was emitted."""


@dataclass(frozen=True)
class StartPreload:
    """Begin preloading calibrations and templates for this detector's visit."""

    progress: DetectorProgress


@dataclass(frozen=True)
class Dispatch:
    """Run the pipeline on the held snaps."""

    progress: DetectorProgress


@dataclass(frozen=True)
class Abandon:
    """Stop any preload in flight for this detector's visit (it was canceled)."""

    progress: DetectorProgress


@dataclass(frozen=True)
class EmitOutcome:
    """Send this outcome to the gather step (which emits it as the detector's one result)."""

    result: CcdResult


Output = StartPreload | Dispatch | Abandon | EmitOutcome
Step = tuple[DetectorProgress, list[Output]]


def outcome(progress: DetectorProgress, status: str, now: float, *, error_class: str = "",
            error_message: str = "") -> CcdResult:
    """The result of a detector that ends without running a pipeline (canceled, timeout)."""
    return CcdResult(
        instrument=progress.instrument, group_id=progress.group_id, detector=progress.detector,
        status=status, error_class=error_class, error_message=error_message, survey=progress.survey,
        snaps_expected=progress.nimages, next_visit_time=progress.next_visit_time,
        fanout_time=progress.fanout_time, first_raw_time=progress.first_raw_time, result_time=now,
    )


def _empty(instrument: str, group_id: str, detector: int, now: float) -> DetectorProgress:
    return DetectorProgress(instrument=instrument, group_id=group_id, detector=detector, updated_time=now)


def _ready(progress: DetectorProgress) -> bool:
    return progress.phase == Phase.WAITING and 0 < progress.nimages <= len(progress.snaps)


def _dispatch_if_ready(progress: DetectorProgress, outputs: list[Output], now: float) -> Step:
    if _ready(progress):
        progress = replace(progress, phase=Phase.PROCESSING, dispatch_time=now)
        outputs.append(Dispatch(progress))
    return progress, outputs


def on_command(state: DetectorProgress | None, command: DetectorCommand, now: float) -> Step:
    """Apply a start, cancel or image_timeout command."""
    progress = state or _empty(command.instrument, command.group_id, command.detector, now)
    if command.action == "start":
        return _start(progress, command, now)
    if command.action == "cancel":
        return _cancel(progress, now)
    if command.action == "image_timeout":
        return _image_timeout(progress, now)
    return progress, []


def _start(progress: DetectorProgress, command: DetectorCommand, now: float) -> Step:
    if progress.started:
        if progress.phase != Phase.WAITING or command.image_deadline <= progress.image_deadline:
            return progress, []  # a duplicate, or the visit is already past waiting
        # A re-run announced under the same group: it gets its full wait for raws.
        return replace(progress, image_deadline=command.image_deadline, updated_time=now), []
    progress = replace(
        progress, started=True, phase=Phase.WAITING, survey=command.survey, pipelines=list(command.pipelines),
        nimages=command.nimages, filters=command.filters, position=list(command.position),
        camera_angle=command.camera_angle, next_visit_time=command.next_visit_time,
        fanout_time=command.fanout_time, image_deadline=command.image_deadline, updated_time=now,
    )
    if progress.cancel_requested:
        canceled = replace(progress, phase=Phase.CANCELED)
        return canceled, [EmitOutcome(outcome(canceled, "canceled", now, error_message="nextVisitCanceled"))]
    return _dispatch_if_ready(progress, [StartPreload(progress)], now)


def _cancel(progress: DetectorProgress, now: float) -> Step:
    if progress.phase == Phase.PRESENCE:
        return replace(progress, cancel_requested=True, updated_time=now), []
    if progress.phase != Phase.WAITING:
        return progress, []  # already dispatched or finished: that result stands
    canceled = replace(progress, phase=Phase.CANCELED, cancel_requested=True, updated_time=now)
    return canceled, [Abandon(canceled),
                      EmitOutcome(outcome(canceled, "canceled", now, error_message="nextVisitCanceled"))]


def _image_timeout(progress: DetectorProgress, now: float) -> Step:
    if progress.phase != Phase.WAITING or now < progress.image_deadline:
        return progress, []
    if progress.snaps:  # partial snaps, or nimages unknown: process what came
        progress = replace(progress, phase=Phase.PROCESSING, dispatch_time=now, updated_time=now)
        return progress, [Dispatch(progress)]
    timed_out = replace(progress, phase=Phase.DONE, updated_time=now)
    reason = f"no raw arrived before the image deadline ({progress.nimages} expected)"
    return timed_out, [Abandon(timed_out),
                       EmitOutcome(outcome(timed_out, "timeout", now, error_class="ImageTimeout",
                                           error_message=reason))]


def most_exposures(progress: DetectorProgress) -> int:
    """How many exposure ids a detector records: its visit's snaps for an aborted attempt and for its re-run, and a
    few late ones (20,000 raws for one detector made a 100 kB row and cost 9.8 s of CPU, each raw more than the
    last)."""
    return 2 * (progress.nimages or UNKNOWN_NIMAGES) + LATE_EXPOSURES


def on_raw(state: DetectorProgress | None, raw: RawImageAvailable, now: float) -> Step:
    """Record a raw; hold it for processing if it is the newest for its snap (see the module rule).

    Raises:
        IgnorableEvent: the raw has a new exposure id, and the detector has recorded `most_exposures`.
    """
    progress = state or _empty(raw.instrument, raw.group_id, raw.detector, now)
    seen = progress.exposures_seen
    at = bisect_left(seen, raw.exposure_id)
    if at < len(seen) and seen[at] == raw.exposure_id:
        return progress, []  # a duplicate
    if len(seen) >= most_exposures(progress):
        raise IgnorableEvent(f"detector {raw.detector} of {raw.group_id} has recorded {len(seen)} exposures, the "
                             f"most it keeps: raw of exposure {raw.exposure_id} ignored")
    arrivals = [t for t in (progress.first_raw_time, raw.arrival_time) if t > 0]
    progress = replace(progress, exposures_seen=[*seen[:at], raw.exposure_id, *seen[at:]],
                       first_raw_time=min(arrivals, default=0.0))
    if progress.phase not in (Phase.PRESENCE, Phase.WAITING):
        return progress, []
    held = {snap.snap: snap for snap in progress.snaps}
    current = held.get(raw.snap)
    if current is not None and current.exposure_id > raw.exposure_id:
        return progress, []  # a leftover of an aborted attempt
    held[raw.snap] = HeldSnap(snap=raw.snap, exposure_id=raw.exposure_id, uri=raw.uri,
                              arrival_time=raw.arrival_time)
    progress = replace(progress, snaps=[held[snap] for snap in sorted(held)])
    return _dispatch_if_ready(progress, [], now)


def on_pipeline_done(state: DetectorProgress | None, result: CcdResult, now: float) -> Step:
    """The pipeline finished: emit its result once, whatever duplicates follow."""
    if state is None or state.phase != Phase.PROCESSING:
        return state or _empty(result.instrument, result.group_id, result.detector, now), []
    done = replace(state, phase=Phase.DONE, updated_time=now)
    return done, [EmitOutcome(replace(
        result, survey=state.survey, snaps_expected=state.nimages, next_visit_time=state.next_visit_time,
        fanout_time=state.fanout_time, first_raw_time=state.first_raw_time, result_time=now,
    ))]


def expired(progress: DetectorProgress, retention: float, now: float) -> bool:
    """Whether finished (or never started) state is old enough to be forgotten: `retention` after its last command
    or completion (raws do not count, see the module rule)."""
    finished = progress.phase in (Phase.DONE, Phase.CANCELED, Phase.PRESENCE)
    return finished and now - progress.updated_time > retention
