"""Thin Faust agents (detector, ocps): decode, call the core, send."""
