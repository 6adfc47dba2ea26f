"""What the topology needs of a deployment's settings: topic names, partition counts, the application id.

`streams.config.Settings` has all of it; the topology names it by this protocol, so that it imports nothing
from `streams` (which imports the topology).
"""

from __future__ import annotations

from typing import Protocol


class Deployment(Protocol):
    """The settings the topics, tables and processing graph are declared from."""

    @property
    def app_id(self) -> str:
        """The application id: tables' changelogs and consumer groups are named after it."""

    @property
    def detector_partitions(self) -> int:
        """Partitions of the per-detector and per-visit topics and tables."""

    @property
    def next_visit_topic(self) -> str:
        """The SAL nextVisit topic, named by the observatory."""

    @property
    def next_visit_canceled_topic(self) -> str:
        """The SAL nextVisitCanceled topic."""

    @property
    def alert_topic(self) -> str:
        """The alert stream the community brokers read."""

    @property
    def chile_sal_subname(self) -> str:
        """The SAL topic prefix on the Chile cluster."""

    @property
    def sasquatch_environment(self) -> str:
        """The Sasquatch environment metrics go to (empty: none)."""

    def topic(self, name: str) -> str:
        """The full name of one of the project's own topics."""
