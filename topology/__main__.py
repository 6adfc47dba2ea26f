"""`python -m topology`: print the topics and the processing graph of the current settings."""

from streams.config import Settings
from topology.graph import declare_graph, describe_graph
from topology.topics import declare, describe

settings = Settings.from_env()
print(describe(declare(settings)))
print()
print(describe_graph(declare_graph(settings), settings.app_id))
