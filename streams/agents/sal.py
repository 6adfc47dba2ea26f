"""The SAL agent: nextVisit fans out to the detectors; nextVisitCanceled reaches the same ones.

Both SAL topics have one partition, so one agent sees every visit and its cancellation in
order, and keeps the `visits` table (group id -> what was fanned out) to route cancellations.
"""

from __future__ import annotations

import logging

import faust

from streams import edge
from streams.clock import tai_now
from streams.context import Context
from streams.core.visit import plan_cancel, plan_visit
from streams.records import NextVisit, NextVisitCanceled, VisitExpected
from topology.keys import detector_key, visit_key

log = logging.getLogger(__name__)
NAME = "sal"


def register(app: faust.App, context: Context) -> None:
    """Attach the agent and its table to `app`."""
    topics = context.topics
    spec = context.tables.visits
    visits = context.table(spec.name, spec.partitions)
    changelog = spec.changelog(context.settings.app_id)

    def forget_old_visits(now: float) -> None:
        """Cancellations only matter while a visit is in flight: drop rows past the retention time."""
        for key, value in list(visits.items()):
            if value is None or now - context.codec.decode(value, VisitExpected).fanout_time > context.policy.retention:
                del visits[key]

    @app.agent(context.channel(topics.next_visit, topics.next_visit_canceled), name=NAME)
    async def sal(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with edge.guard(context, event, NAME):
                if event.message.topic == topics.next_visit.name:
                    visit = context.decode(topics.next_visit, event.value, NextVisit)
                    now = tai_now()
                    plan = plan_visit(visit, context.instruments, context.surveys, context.policy, now)
                    for command in plan.commands:
                        await context.send(topics.detector_commands, detector_key(
                            command.instrument, command.group_id, command.detector), command)
                    expected = plan.expected
                    await context.send(topics.visit_expected, visit_key(expected.instrument, expected.group_id),
                                       expected)
                    forget_old_visits(now)
                    visits[expected.group_id.encode()] = context.codec.encode(changelog, expected)
                    log.info("next_visit %s/%s survey %r: fanned out to %d detectors (pipelines %s)",
                             visit.instrument, visit.groupId, visit.survey, len(plan.commands),
                             expected.pipelines or "none: ignored")
                else:
                    cancel = context.decode(topics.next_visit_canceled, event.value, NextVisitCanceled)
                    stored = visits.get(cancel.groupId.encode())
                    known = context.codec.decode(stored, VisitExpected) if stored else None
                    commands = plan_cancel(cancel, known, tai_now())
                    for command in commands:
                        await context.send(topics.detector_commands, detector_key(
                            command.instrument, command.group_id, command.detector), command)
                    log.info("next_visit_canceled %s: cancel sent to %d detectors", cancel.groupId, len(commands))
