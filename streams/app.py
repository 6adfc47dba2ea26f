"""The Faust application: `faust -A streams.app worker -l info` starts a worker.

This module only builds the app from the settings; the topology is declared in `topology/`, the
logic lives in `streams/core/`, and every processor of `topology/graph.py` runs on the one engine
(`streams.runtime.engine`) in a thread of every worker. Faust is the host: the worker's life, its
commands and its web server.
"""

from __future__ import annotations

import asyncio
import gc
import ssl
from typing import Any, cast

import faust

from connectors.s3_notifications import S3Notifications
from streams.config import Connection, Settings
from streams.observability import log_forwarding, logs, metrics
from streams.ops import commands
from streams.pipelines.runner import PipelineRunner
from streams.processors.alerts import AlertPublisher
from streams.processors.detector import Completions, DetectorProcessor
from streams.processors.gather import GatherProcessor
from streams.processors.ocps import OcpsJobs, OcpsOutcomes
from streams.processors.sal_intake import SalIntake
from streams.runtime import READY_LINE
from streams.runtime.context import Context
from streams.runtime.engine import ProcessorService, TransactionalProcessor
from streams.serde.records import DetectorProgress, VisitExpected
from streams.web import auth, dashboard, uws, views


class PromptStreamsApp(faust.App):
    """A Faust app that prepares its topics and schemas before consuming, and runs the transactional processors."""

    context: Context
    runner: PipelineRunner
    services: dict[str, ProcessorService]
    """The processors running in this worker, by name (empty until the worker has started)."""
    log_forwarder: log_forwarding.LogForwarder | None = None

    async def on_first_start(self) -> None:
        """Create topics and register schemas before the consumer subscribes."""
        self.context.settings.worker_dir().mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.context.prepare)
        await super().on_first_start()

    async def on_started(self) -> None:
        """Start log forwarding, the pipeline processes and the transactional processors once the worker runs."""
        await super().on_started()
        self.log_forwarder = log_forwarding.install(self.context.settings, self.context.topics.log_messages,
                                                    self.context.codec)
        await self.runner.start()
        for processor in processors(self.context, self.runner):
            service = ProcessorService(processor, self._processor_crashed, loop=self.loop, beacon=self.beacon)
            self.services[processor.name] = service
            await self.add_runtime_dependency(service)
        self.add_future(self._announce_ready())
        # What start-up built lives as long as the worker: out of the collector's way. A young generation of
        # 100,000 objects (not 700) runs the collector 100 times less often: it took 10-15% of the processors'
        # CPU, which churns through short-lived records.
        gc.freeze()
        gc.set_threshold(100_000, 50, 100)

    def processors_unassigned(self) -> list[str] | None:
        """The processors that have not had their partitions yet (None before they run)."""
        if not self.services:
            return None
        return [name for name, service in self.services.items() if not service.processor.assigned]

    async def _announce_ready(self) -> None:
        """Log READY_LINE once every processor has had its partitions: the worker takes its share from then."""
        while self.processors_unassigned() != []:
            await asyncio.sleep(0.1)
        self.log.info(READY_LINE)

    def processor(self, name: str) -> TransactionalProcessor[Any] | None:
        """The running processor called `name` (None before the worker has started)."""
        service = self.services.get(name)
        return service.processor if service is not None else None

    def _processor_crashed(self, error: BaseException) -> None:
        self.add_future(self.crash(error))

    async def on_stop(self) -> None:
        """Stop the pipeline processes and log forwarding."""
        self.runner.stop()
        if self.log_forwarder is not None:
            log_forwarding.uninstall(self.log_forwarder)
        await super().on_stop()


def processors(context: Context, runner: PipelineRunner) -> list[TransactionalProcessor[Any]]:
    """Every processor a worker runs, one per entry of `topology/graph.py` but the SAL bridge's own process."""
    settings = context.settings
    return [
        SalIntake(settings, context.instruments, context.surveys),
        S3Notifications(settings, context.instruments),
        DetectorProcessor(settings, context.instruments, runner, asyncio.get_running_loop().call_soon_threadsafe),
        GatherProcessor(settings),
        AlertPublisher(settings),
        OcpsJobs(settings),
        OcpsOutcomes(settings, context.instruments),
    ]


def credentials(cluster: Connection) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """Faust's view of a cluster's security settings."""
    if cluster.security_protocol == "PLAINTEXT":
        return None
    tls = None
    if cluster.security_protocol.endswith("SSL"):
        tls = ssl.create_default_context(cafile=cluster.ssl_cafile or None)
        if cluster.ssl_certfile:
            tls.load_cert_chain(cluster.ssl_certfile, cluster.ssl_keyfile or None)
    if cluster.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(username=cluster.sasl_username, password=cluster.sasl_password,
                                     mechanism=cluster.sasl_mechanism, ssl_context=tls)
    return faust.SSLCredentials(tls)


def create_app(settings: Settings) -> PromptStreamsApp:
    """A Faust app for these settings: the host of the processors, the web pages and the commands (no agents)."""
    app = PromptStreamsApp(
        settings.app_id,
        broker=[f"kafka://{server}" for server in settings.cluster.bootstrap.split(",")],
        broker_credentials=credentials(settings.cluster),
        store=settings.store,
        datadir=str(settings.worker_dir()),
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        topic_partitions=settings.detector_partitions,
        topic_replication_factor=settings.cluster.replication_factor,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_linger_ms=1,
        broker_commit_interval=0.5,
        # A dead worker must be noticed well inside the 60 s alert budget (faust's default is 60 s).
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        logging_config=logs.logging_config(settings),
        # faust's /router/ (every worker's URL) and /table/ (table rows) views: this app serves its own views.
        web_router_enabled=False,
        web_tables_enabled=False,
    )
    app.context = Context.build(settings, app)
    app.services = {}
    completions = Completions(settings, app.context.codec, app.context.topics.pipeline_done)
    app.runner = PipelineRunner(settings.pipeline_processes, settings, settings.worker, completions.send)
    commands.register(app)
    register_web(app)
    return app


def register_web(app: PromptStreamsApp) -> None:
    """The worker's web endpoints: JSON views, the dashboard, Prometheus metrics and the OCPS job service."""
    context = app.context
    tokens = auth.Tokens.from_settings(context.settings)

    def gather() -> GatherProcessor | None:
        return cast(GatherProcessor | None, app.processor("gather"))

    def expected() -> list[VisitExpected]:
        intake = cast(SalIntake | None, app.processor("sal-intake"))
        return intake.expected() if intake is not None else []

    def detectors(prefix: str) -> list[DetectorProgress]:
        processor = cast(DetectorProcessor | None, app.processor("detector"))
        return processor.rows_of(prefix) if processor is not None else []

    views.register(app, views.Sources(
        detectors=detectors,
        runner=app.runner, gather=gather, expected=expected, decode=context.codec.decode,
        unassigned=app.processors_unassigned), tokens)
    dashboard.register(app, context.instruments, tokens)
    def processor_lags() -> dict[tuple[str, str, int], int]:
        return {key: lag for service in list(app.services.values())
                for key, lag in service.processor.lags.items()}

    metrics.register(app, in_flight=lambda: (processor.in_flight() if (processor := gather()) else 0),
                     processor_lags=processor_lags)
    uws.register(app, context, tokens)


app = create_app(Settings.from_env())
