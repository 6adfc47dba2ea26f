"""The Avro schemas of every record, loaded once from `schemas/*.avsc`.

The `.avsc` files are the single definition; the Python record types in `streams.serde.records`
are generated from them (`python -m streams.serde.schemagen`) and the codec parses them here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(str(files("schemas")))
"""The `schemas` package's folder: the `.avsc` files ship in it, in a checkout as in an installed wheel."""

Schema = dict[str, Any]


def schema_names() -> list[str]:
    """File stems of every schema, e.g. `next_visit`, sorted."""
    return sorted(path.stem for path in SCHEMA_DIR.glob("*.avsc"))


@cache
def load_schema(name: str) -> Schema:
    """The schema `schemas/<name>.avsc` as JSON (not yet parsed by fastavro)."""
    schema: Schema = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text())
    return schema


def class_name(name: str) -> str:
    """The Python class derived from a schema stem: `next_visit` -> `NextVisit`."""
    return "".join(part.capitalize() for part in name.split("_"))


@dataclass(frozen=True)
class FieldLimit:
    """How long a field of an input record may be, declared on the field in its `.avsc` ("maxLength": characters
    of a string, or of each string of an array or map, keys too; "maxItems": items of an array or map): the
    summit and the storage's notifications are not trusted to keep strings short, and a string copied into every
    detector's command would otherwise make records the producer refuses."""

    field: str
    max_length: int | None
    max_items: int | None


@cache
def field_limits(name: str) -> tuple[FieldLimit, ...]:
    """The limits declared on the fields of `schemas/<name>.avsc` (empty for a record with none)."""
    return tuple(FieldLimit(item["name"], item.get("maxLength"), item.get("maxItems"))
                 for item in load_schema(name)["fields"] if "maxLength" in item or "maxItems" in item)
