"""The local stack: a real Apache Kafka broker (KRaft) and a Confluent-compatible schema registry.

Both run as JVMs started from jars that `make setup` fetched from Maven Central into `.local/`.
`python -m stack up` starts a cluster, `python -m stack down` stops it; see `stack.cluster`.
"""
