"""The detector agent: each detector's start command, raws and pipeline completions, in its partition.

All three topics are partitioned by detector, so one agent (concurrency 1: no faust #606 offset
loss) sees everything about the detectors it owns and is the only writer of their table rows.
Pipelines run in the runner's processes; their completion comes back as an event. A timer sends
image-timeout and expire commands to the detectors' own partitions, and re-dispatches detectors
found `processing` with nothing running here (after a crash or a rebalance).
"""

from __future__ import annotations

import logging
from dataclasses import replace

import faust

from streams import edge
from streams.clock import tai_now
from streams.context import Context
from streams.core import detector
from streams.core.arrivals import check_raw
from streams.core.detector import Phase
from streams.records import CcdResult, DetectorCommand, DetectorProgress, RawImageAvailable
from streams.runner import PipelineRunner
from streams.web import metrics
from topology.keys import detector_key, detector_partition, visit_key

log = logging.getLogger(__name__)
NAME = "detector"
TICK_SECONDS = 1.0
RESEND_SECONDS = 10.0
"""An image-timeout or expire command not yet acted on is sent again after this long."""


class Watch:
    """In memory, the rows of this worker's partitions that a timer must act on.

    Rebuilt from the table whenever this worker's partitions change; kept up to date by the agent.
    """

    def __init__(self) -> None:
        self.rows: dict[bytes, DetectorProgress] = {}
        self.partitions: frozenset[int] = frozenset()
        self.sent: dict[bytes, float] = {}

    def note(self, key: bytes, progress: DetectorProgress | None) -> None:
        """Remember the row's new state (None: deleted)."""
        self.sent.pop(key, None)
        if progress is None:
            self.rows.pop(key, None)
        else:
            self.rows[key] = progress


def register(app: faust.App, context: Context) -> PipelineRunner:
    """Attach the agent, its table and its timer to `app`; return the runner the app must stop."""
    topics, settings = context.topics, context.settings
    spec = context.tables.detectors
    table = context.table(spec.name, spec.partitions)
    changelog = spec.changelog(settings.app_id)
    watch = Watch()

    async def send_command(progress: DetectorProgress, action: str) -> None:
        await context.send(topics.detector_commands, detector_key(progress.instrument, progress.group_id,
                                                                  progress.detector),
                           DetectorCommand(action=action, instrument=progress.instrument,
                                           group_id=progress.group_id, detector=progress.detector,
                                           command_time=tai_now()))

    async def pipeline_done(result: CcdResult) -> None:
        await context.send(topics.pipeline_done, detector_key(result.instrument, result.group_id, result.detector),
                           result)

    runner = PipelineRunner(
        settings.pipeline_processes, settings, settings.worker, pipeline_done,
    )

    def load(key: bytes) -> DetectorProgress | None:
        raw = table.get(key)
        return context.codec.decode(raw, DetectorProgress) if raw is not None else None

    async def act(outputs: list[detector.Output]) -> None:
        for output in outputs:
            if isinstance(output, detector.StartPreload):
                runner.preload(output.progress)
            elif isinstance(output, detector.Dispatch):
                metrics.observe_dispatch(output.progress)
                runner.dispatch(output.progress)
            elif isinstance(output, detector.Abandon):
                runner.abandon(output.progress)
            else:
                result = output.result
                log.info("detector %d of %s: %s%s", result.detector, result.group_id, result.status,
                         f" ({result.error_class}: {result.error_message[:200]})" if result.error_class else "")
                await context.send(topics.ccd_outcome, visit_key(result.instrument, result.group_id), result)

    @app.agent(context.channel(topics.detector_commands, topics.raw_image_available, topics.pipeline_done),
               name=NAME)
    async def detectors(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            async with edge.guard(context, event, NAME):
                now, topic = tai_now(), event.message.topic
                if topic == topics.raw_image_available.name:
                    raw = context.decode(topics.raw_image_available, event.value, RawImageAvailable)
                    check_raw(raw, context.instruments, context.policy, settings.data_root)
                    owner = detector_partition(raw.detector, topics.raw_image_available.partitions)
                    if event.message.partition != owner:  # e.g. produced by kcat without -p: re-route
                        await context.send(topics.raw_image_available, event.message.key, raw)
                        continue
                    subject = (raw.instrument, raw.group_id, raw.detector)
                    key = detector_key(*subject).encode()
                    new, outputs = detector.on_raw(load(key), raw, now)
                elif topic == topics.detector_commands.name:
                    command = context.decode(topics.detector_commands, event.value, DetectorCommand)
                    key = detector_key(command.instrument, command.group_id, command.detector).encode()
                    state = load(key)
                    if command.action == "expire":
                        if state is not None and detector.expired(state, context.policy.retention, now):
                            del table[key]
                            watch.note(key, None)
                        continue
                    new, outputs = detector.on_command(state, command, now)
                else:
                    result = context.decode(topics.pipeline_done, event.value, CcdResult)
                    key = detector_key(result.instrument, result.group_id, result.detector).encode()
                    new, outputs = detector.on_pipeline_done(load(key), result, now)
                table[key] = context.codec.encode(changelog, new)
                watch.note(key, new)
                await act(outputs)

    @app.timer(TICK_SECONDS, name=f"{NAME}-timer")
    async def detector_timer() -> None:
        actives = frozenset(tp.partition for tp in app.assignor.assigned_actives()
                            if tp.topic == topics.detector_commands.name)
        if actives != watch.partitions:  # a rebalance or a restart: rebuild from the recovered table
            watch.rows = {key: context.codec.decode(value, DetectorProgress) for key, value in table.items()
                          if value is not None}
            watch.partitions = actives
            log.info("detector table: %d rows in partitions %s", len(watch.rows), sorted(actives))
        now = tai_now()
        for key, progress in list(watch.rows.items()):
            if detector_partition(progress.detector, spec.partitions) not in actives:
                watch.rows.pop(key, None)
                continue
            if progress.phase == Phase.PROCESSING and not runner.busy(key.decode()):
                log.info("re-dispatching %s: processing with no pipeline running here", key.decode())
                runner.dispatch(replace(progress))
            if now - watch.sent.get(key, 0.0) < RESEND_SECONDS:
                continue
            if progress.phase == Phase.WAITING and now >= progress.image_deadline:
                watch.sent[key] = now
                await send_command(progress, "image_timeout")
            elif detector.expired(progress, context.policy.retention, now):
                watch.sent[key] = now
                await send_command(progress, "expire")

    return runner
