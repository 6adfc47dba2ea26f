"""The one engine every processor runs on: batched, exactly-once consume -> core -> produce.

`engine` is the cycle (consume a batch, call the processor, produce outputs, changelog and offsets
in one transaction), `clients` where its Kafka clients come from, `store` a table partition's RocksDB
copy, `local_state` the check of that copy against its changelog, and `driver` the broker-less test
driver (an in-memory broker behind those clients).
"""

READY_LINE = "worker ready: every processor has its partitions"
"""Logged once by each worker when all its processors have joined their groups (tests and operators wait for it)."""
