"""The Avro schemas of every record (`*.avsc`), the single definition of each: package data, read by
`streams.serde.schemas` from the checkout or the installed wheel alike."""
