"""The local stack: a real Apache Kafka broker (KRaft) and a Confluent-compatible schema registry.

Both run as JVMs started from jars that `python -m stack fetch` (`make setup`) fetched from Maven Central
into `$PROMPT_STREAMS_HOME`.
`python -m stack up` starts a cluster, `python -m stack down` stops it; see `stack.cluster`.
"""
