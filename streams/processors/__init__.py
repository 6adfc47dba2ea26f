"""The processors: small classes the engine calls, each declared in topology/graph.py."""
