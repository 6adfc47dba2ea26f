"""The nextVisit agent: decode each SAL nextVisit event and report it."""

from __future__ import annotations

import logging

import faust

from streams import edge
from streams.context import Context
from streams.records import NextVisit

log = logging.getLogger(__name__)
NAME = "next_visit"


def register(app: faust.App, context: Context) -> None:
    """Attach the agent to `app`."""
    spec = context.topics.next_visit

    @app.agent(context.channels[spec.id], name=NAME)
    async def next_visit(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with edge.guard(context, event, NAME):
                visit = context.decode(spec, event.value, NextVisit)
                log.info("next_visit decoded: %s", visit)
