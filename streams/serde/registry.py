"""The schema registry client: Confluent's, pointed at any Confluent-compatible API.

The local stack runs Apicurio Registry, whose `/apis/ccompat/v7` speaks the Confluent REST API.
"""

from __future__ import annotations

import json

from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streams.errors import RegistryError, SchemaMismatchError
from streams.serde.schemas import Schema

SCHEMA_NOT_FOUND = 40403


class ConfluentRegistry:
    """`streams.serde.codec.SchemaRegistry` over confluent-kafka's client."""

    def __init__(self, config: dict[str, str]) -> None:
        self._client = SchemaRegistryClient(config)

    def register(self, subject: str, schema: Schema) -> int:
        """Register `schema` under `subject`; registering the same schema again returns its id."""
        try:
            return int(self._client.register_schema(subject, RegistrySchema(json.dumps(schema), "AVRO")))
        except (SchemaRegistryError, OSError) as error:
            raise RegistryError(f"cannot register {subject}: {error}") from error

    def schema_by_id(self, schema_id: int) -> Schema | None:
        """The schema with this id, or None if the registry does not have it.

        Raises:
            RegistryError: the registry cannot be reached or refuses the request.
            SchemaMismatchError: the id is of a schema that is not Avro (JSON Schema, Protobuf), which anyone who
                can write to the registry may register.
        """
        try:
            found = self._client.get_schema(schema_id)
        except SchemaRegistryError as error:
            if error.http_status_code == 404:
                return None
            raise RegistryError(f"cannot fetch schema id {schema_id}: {error}") from error
        except OSError as error:
            raise RegistryError(f"cannot fetch schema id {schema_id}: {error}") from error
        if found.schema_str is None:
            return None
        if found.schema_type not in (None, "AVRO"):
            raise SchemaMismatchError(f"schema id {schema_id} is a {found.schema_type} schema, not Avro")
        try:
            schema: Schema = json.loads(found.schema_str)
        except (ValueError, RecursionError) as error:
            raise SchemaMismatchError(f"schema id {schema_id} is not JSON: {error}") from error
        return schema

    def subjects(self) -> list[str]:
        """Every subject in the registry."""
        return list(self._client.get_subjects())
