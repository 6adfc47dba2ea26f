"""Serialisation: the codec (Confluent-framed Avro), the registry client, and the records generated
from `schemas/*.avsc`."""
