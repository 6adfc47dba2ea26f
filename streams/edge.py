"""The one place that maps error types to outcomes, around each event an agent handles.

- `DecodeError`, `InvalidEventError`: the input goes to the dead-letter topic with the reason;
- `IgnorableEvent`: logged and dropped;
- anything else is a bug: logged with its traceback and dead-lettered too, so one bad event
  never stops a worker or the events behind it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from faust.types import EventT

from streams import logs
from streams.clock import tai_now
from streams.context import Context
from streams.dead_letters import dead_letter as bounded_dead_letter
from streams.errors import DecodeError, IgnorableEvent, InvalidEventError
from streams.records import DeadLetter
from streams.web import metrics

log = logging.getLogger(__name__)


def dead_letter_for(event: EventT[bytes], error: BaseException, agent: str) -> DeadLetter:
    """The dead letter recording `event`'s original bytes, origin and what is wrong with it."""
    message = event.message
    return bounded_dead_letter(message.topic, message.partition, message.offset, message.key, message.value, error,
                               agent, tai_now())


@asynccontextmanager
async def guard(context: Context, event: EventT[bytes], agent: str) -> AsyncIterator[None]:
    """Run one event's handling (its log lines labelled by what it decodes); turn its failure into the
    outcome its type calls for."""
    with logs.labelled():
        try:
            yield
        except IgnorableEvent as why:
            log.info("%s: ignored %s[%d]@%d: %s", agent, event.message.topic, event.message.partition,
                     event.message.offset, why)
        except (DecodeError, InvalidEventError) as error:
            log.warning("%s: dead letter from %s[%d]@%d: %s: %s", agent, event.message.topic,
                        event.message.partition, event.message.offset, type(error).__name__, error)
            await dead_letter(context, event, error, agent)
        except Exception as error:
            log.exception("%s: unexpected error on %s[%d]@%d", agent, event.message.topic,
                          event.message.partition, event.message.offset)
            await dead_letter(context, event, error, agent)


async def dead_letter(context: Context, event: EventT[bytes], error: BaseException, agent: str) -> None:
    """Send `event` to the dead-letter topic, keyed as it was."""
    metrics.DEAD_LETTERS.labels(agent).inc()
    await context.send(context.topics.dead_letter, event.message.key, dead_letter_for(event, error, agent))
