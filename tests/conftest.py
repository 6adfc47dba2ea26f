"""Shared test configuration: the integration tier is marked by folder; the checkout's .local/ is the home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

INTEGRATION = Path(__file__).parent / "integration"
os.environ.setdefault("PROMPT_STREAMS_HOME", str(Path(__file__).resolve().parent.parent / ".local"))
"""As `make` sets it: the stack's jars and the embedded APDB are there (before `stack` is imported)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration carry the `integration` marker (deselect with -m)."""
    for item in items:
        if INTEGRATION in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many hostile inputs the fuzz tests tried, and what became of them."""
    from tests.fuzzing import TRIED

    if TRIED:
        outcomes = ", ".join(f"{count} {outcome}" for outcome, count in sorted(TRIED.items()))
        terminalreporter.write_line(f"fuzz: {sum(TRIED.values())} hostile inputs tried ({outcomes}); "
                                    "none escaped as an untyped error")
