"""`python -m topology`: print the topics of the current settings."""

from streams.config import Settings
from topology.topics import declare, describe

print(describe(declare(Settings.from_env())))
