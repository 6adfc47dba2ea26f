"""The processing graph, declared apart from the code: each processor's inputs, outputs and table.

Every processor runs on the one engine (`streams.runtime.engine`), which takes its inputs and its
table from here and refuses to produce to a topic its declaration does not name: what this file
says is what runs. `python -m topology` prints the graph, and the README's picture is drawn
from it (`picture`), so the two cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum
from functools import cached_property

from topology.deployment import Deployment
from topology.tables import TableSpec, declare_tables
from topology.topics import KEEP_LONG, Partitioning, Role, TopicSpec, declare

COMPACT = {"cleanup.policy": "compact"}


class Guarantee(StrEnum):
    """What a processor promises about its outputs."""

    EXACTLY_ONCE = "exactly once"
    """Outputs, table changes and consumed offsets commit in one Kafka transaction."""
    AT_LEAST_ONCE = "at least once"
    """Sent with an idempotent producer, possibly again after a crash; the readers drop repeats."""


@dataclass(frozen=True)
class ProcessorSpec:
    """One processor: what it reads, what it may write, the table it alone writes."""

    name: str
    """Its consumer group is `<app id>-<name>`, its transactional id `<app id>-<name>-<worker>` (`<app id>-<name>`
    for one that commits a checkpoint instead of a group's offsets: a second instance fences the first)."""
    inputs: tuple[TopicSpec, ...]
    """Co-partitioned: partition p of every input (and of the table) goes to the same worker."""
    outputs: tuple[TopicSpec, ...]
    table: TableSpec | None
    guarantee: Guarantee
    doc: str
    side_outputs: tuple[TopicSpec, ...] = ()
    """Written outside the cycle, at least once (the pipeline processes' completions)."""
    process: str = "worker"
    """Where it runs: a thread of every worker, or a process of its own."""
    output_prefixes: tuple[str, ...] = ()
    """Beginnings of the names of the topics it writes besides `outputs`, named at run time (the SAL bridge's
    SAL and Sasquatch topics)."""

    @cached_property
    def output_names(self) -> frozenset[str]:
        """The names of the declared outputs (the engine checks every record it produces against them)."""
        return frozenset(spec.name for spec in self.outputs)

    def may_write(self, topic: str) -> bool:
        """Whether the engine may produce to `topic` for this processor."""
        return topic in self.output_names or topic.startswith(self.output_prefixes)


@dataclass(frozen=True)
class Graph:
    """The processors of one deployment, in flow order."""

    sal_intake: ProcessorSpec
    s3_notifications: ProcessorSpec
    detector: ProcessorSpec
    gather: ProcessorSpec
    alert_publisher: ProcessorSpec
    ocps_jobs: ProcessorSpec
    ocps_outcomes: ProcessorSpec
    sal_bridge: ProcessorSpec

    def all(self) -> list[ProcessorSpec]:
        """Every processor, in flow order."""
        return [getattr(self, item.name) for item in fields(self)]


def declare_graph(settings: Deployment) -> Graph:
    """The graph for these settings."""
    t, tables = declare(settings), declare_tables(settings)
    once = Guarantee.EXACTLY_ONCE
    return Graph(
        sal_intake=ProcessorSpec(
            "sal-intake", (t.next_visit, t.next_visit_canceled), (t.detector_commands, t.visit_expected, t.dead_letter),
            tables.visits, once, "nextVisit fans out one start per active detector; nextVisitCanceled reaches them"),
        s3_notifications=ProcessorSpec(
            "s3-notifications", (t.s3_notifications,), (t.raw_image_available, t.dead_letter), None, once,
            "bucket notifications -> one arrival per raw, the group id read from its sidecar"),
        detector=ProcessorSpec(
            "detector", (t.detector_commands, t.raw_image_available, t.pipeline_done),
            (t.ccd_outcome, t.raw_image_available, t.dead_letter), tables.detectors, once,
            "preload at start, dispatch when its snaps are held, image timeout and expiry on its timer",
            side_outputs=(t.pipeline_done,)),
        gather=ProcessorSpec(
            "gather", (t.visit_expected, t.ccd_outcome),
            (t.ccd_result, t.visit_summary, t.metrics, t.calibration_products, t.dead_letter), tables.gather, once,
            "one result per expected detector and one summary per visit"),
        alert_publisher=ProcessorSpec(
            "alert-publisher", (t.ccd_outcome,), (t.alerts, t.dead_letter), tables.alerted, once,
            "one alert per DIA source of a detector's first successful outcome"),
        ocps_jobs=ProcessorSpec(
            "ocps-jobs", (t.ocps_job_events,),
            (t.ocps_jobs, t.visit_expected, t.detector_commands, t.raw_image_available, t.dead_letter), tables.jobs,
            once, "OCPS jobs through their phases; a job runs as a synthetic visit"),
        ocps_outcomes=ProcessorSpec(
            "ocps-outcomes", (t.visit_summary, t.ccd_result), (t.ocps_job_events, t.dead_letter), None, once,
            "a job's visit's results and summary become its events; other summaries fire triggers"),
        sal_bridge=ProcessorSpec(
            "sal-bridge", (t.visit_summary, t.ccd_result, t.metrics, t.log_messages), sal_bridge_topics(settings),
            None, once,
            "SAL events (and Sasquatch metrics) on the Chile cluster, its checkpoint in the same transaction",
            process="python -m connectors.sal_bridge",
            output_prefixes=(f"lsst.{settings.chile_sal_subname}.PromptProcessing.",
                             *([f"lsst.prompt.{settings.sasquatch_environment}."] if settings.sasquatch_environment
                               else []))),
    )


def sal_bridge_topics(settings: Deployment) -> tuple[TopicSpec, TopicSpec]:
    """The SAL bridge's own topics, on the Chile cluster (it creates them): its checkpoints and its dead letters."""
    return (TopicSpec("sal_bridge_checkpoints", settings.topic("sal-bridge.checkpoints"), "sal_bridge_checkpoint", 1,
                      Partitioning.SINGLE, "bridge id", Role.INTERNAL, "The SAL bridge's committed checkpoints.",
                      COMPACT),
            TopicSpec("sal_bridge_dead_letter", settings.topic("sal-bridge.dead-letter"), "dead_letter", 1,
                      Partitioning.SINGLE, "original key", Role.OUTPUT,
                      "Source records the SAL bridge could not convert.", KEEP_LONG))


def describe_graph(graph: Graph, app_id: str) -> str:
    """The graph as text, one processor per paragraph."""
    blocks = []
    for p in graph.all():
        lines = [f"[{p.name}]  {p.guarantee.value}, {p.process}: {p.doc}"]
        lines += [f"  <- {spec.name}" for spec in p.inputs]
        lines += [f"  -> {spec.name}" for spec in p.outputs]
        lines += [f"  ~> {spec.name} (side output, at least once)" for spec in p.side_outputs]
        lines += [f"  -> {prefix}* (named at run time)" for prefix in p.output_prefixes]
        if p.table is not None:
            lines.append(f"  table {p.table.name} ({p.table.key}; changelog {p.table.changelog(app_id)})")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def picture(graph: Graph) -> str:
    """A Mermaid flowchart of the graph: topics as rounded boxes, processors as boxes, tables as cylinders."""
    lines = ["flowchart TD"]
    topics: dict[str, TopicSpec] = {}
    for p in graph.all():
        for spec in (*p.inputs, *p.outputs, *p.side_outputs):
            topics[spec.id] = spec
    for spec in topics.values():
        shape = ("[/", "/]") if spec.role is Role.INPUT else ("([", "])")
        lines.append(f'  {spec.id}{shape[0]}"{spec.name}"{shape[1]}')
    for p in graph.all():
        node = p.name.replace("-", "_")
        lines.append(f'  {node}["{p.name}<br/><small>{p.guarantee.value}</small>"]')
        lines += [f"  {spec.id} --> {node}" for spec in p.inputs]
        lines += [f"  {node} --> {spec.id}" for spec in p.outputs if spec.id != "dead_letter"]
        lines += [f"  {node} -.-> {spec.id}" for spec in p.side_outputs]
        if p.table is not None:
            lines.append(f'  {node} --- table_{p.table.name}[("table {p.table.name}")]')
        if p.output_prefixes:
            names = "<br/>".join(f"{prefix}*" for prefix in p.output_prefixes)
            lines.append(f'  {node} --> {node}_named(["{names}"])')
    lines.append('  every_processor["every worker processor"] -.-> dead_letter')
    return "\n".join(lines)


BEGIN, END = "<!-- topology picture: python -m topology --update-readme -->", "<!-- end of topology picture -->"


def readme_with_picture(readme: str, flowchart: str) -> str:
    """The README with the flowchart between its markers (the default settings' names)."""
    head, _, rest = readme.partition(BEGIN)
    _, found, tail = rest.partition(END)
    if not found:
        raise ValueError(f"the README has no {BEGIN!r} ... {END!r} block")
    return f"{head}{BEGIN}\n```mermaid\n{flowchart}\n```\n{END}{tail}"
