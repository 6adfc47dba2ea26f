"""The Avro schemas of every record, loaded once from `schemas/*.avsc`.

The `.avsc` files are the single definition; the Python record types in `streams.records`
are generated from them (`python -m streams.schemagen`) and the codec parses them here.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"

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
