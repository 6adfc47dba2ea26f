"""Observability: logs as key/value events, log forwarding to Kafka, Prometheus metrics."""
