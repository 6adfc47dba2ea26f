"""Bridges between Prompt Streams and other systems, one module per bridge."""
