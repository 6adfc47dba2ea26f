"""The one engine every processor runs on: batched, exactly-once consume -> core -> produce.

`engine` is the cycle (consume a batch, call the processor, produce outputs, changelog and offsets
in one transaction), `store` a table partition's RocksDB copy, `local_state` the check of that
copy against its changelog, and `driver` the broker-less test driver.
"""
