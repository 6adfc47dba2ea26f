"""The processing graph holds: what runs is what `topology/graph.py` declares, and the README shows it."""

from __future__ import annotations

import asyncio
from collections import defaultdict

from stack.cluster import PROJECT_ROOT
from streams.config import Settings
from topology.graph import Guarantee, declare_graph, picture, readme_with_picture
from topology.topics import Role, declare

SETTINGS = Settings.from_env({})


def test_every_worker_processor_is_declared_and_every_declared_one_runs() -> None:
    """The app's processors are exactly the graph's worker processors, each built from its own declaration, and
    none is a faust agent."""
    from streams import app as worker

    assert not worker.app.agents and not worker.app.tables

    async def build() -> dict[str, object]:
        return {p.name: p.spec for p in worker.processors(worker.app.context, worker.app.runner)}

    running = asyncio.run(build())
    declared = {p.name: p for p in declare_graph(SETTINGS).all() if p.process == "worker"}
    assert running == declared


def test_a_stateful_processor_reads_co_partitioned_inputs_and_its_table_goes_with_them() -> None:
    """Partition p of every input and of the table meet in one worker (the range assignor's promise)."""
    for processor in declare_graph(SETTINGS).all():
        if processor.table is None:
            continue
        counts = {spec.partitions for spec in processor.inputs} | {processor.table.partitions}
        assert len(counts) == 1, (processor.name, counts)


def test_every_internal_topic_has_a_writer_and_a_reader_and_each_table_one_writer() -> None:
    """No internal topic dangles, and no table has two writers."""
    graph = declare_graph(SETTINGS)
    writers, readers, tables = defaultdict(set), defaultdict(set), defaultdict(set)
    for p in graph.all():
        for spec in (*p.outputs, *p.side_outputs):
            writers[spec.name].add(p.name)
        for spec in p.inputs:
            readers[spec.name].add(p.name)
        if p.table is not None:
            tables[p.table.name].add(p.name)
    for spec in declare(SETTINGS).all():
        if spec.role is Role.INTERNAL:
            assert writers[spec.name] and readers[spec.name], spec.name
    assert all(len(owners) == 1 for owners in tables.values()), tables
    assert {p.guarantee for p in graph.all()} == {Guarantee.EXACTLY_ONCE}


def test_the_readme_picture_is_the_graph() -> None:
    """`python -m topology --update-readme` has been run since the graph last changed."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert readme_with_picture(readme, picture(declare_graph(SETTINGS))) == readme, \
        "the README's topology picture is stale: run `python -m topology --update-readme`"
