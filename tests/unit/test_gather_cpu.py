"""The in-process gather harness (bench/gather_cpu.py) still drives the engine's cycle end to end."""

from __future__ import annotations

from bench import gather_cpu


def test_the_harness_gathers_every_visit_once() -> None:
    gather = gather_cpu.processor(real_producer=False)
    seconds, summaries = gather_cpu.drive(gather, gather_cpu.messages(gather, 3))
    assert summaries == 3 and seconds > 0
    produced = gather._producer.produced  # type: ignore[union-attr]
    assert produced[gather.topics.ccd_result.name] == 3 * 189
    assert produced[gather.topics.metrics.name] == 3 * 189 * 6 + 3 * 9  # six per result, nine per summary
