"""Benchmarks: measurements for the README's tables, never assertions in `make test`."""
