"""Writer schemas come from the registry, which anyone who can reach it may write to: the codec accepts one only
if it resolves against the reader schema, and walks the bytes it describes, bounded, before fastavro reads them.

fastavro trusts a block count: an array of nulls with a count of 2**62 loops while holding the GIL (each item
takes no byte), and so does skipping an array of booleans, floats, doubles or fixed (it never checks the end of
the bytes), which is how fastavro passes over a writer's field the reader does not have. So a writer schema
with an array of items that take no byte is refused, and `check_datum` proves, before fastavro reads a datum,
that every block's items fit in the bytes left and that the datum ends where the bytes do.

Schemas here are fastavro's parsed form (named types by full name, defined once; references by name) with the
names table `fastavro.parse_schema(..., named_schemas=names)` fills.
"""

from __future__ import annotations

from typing import Any

from streams.errors import NonRetriableError

Names = dict[str, Any]
"""Full name -> a named type's parsed schema."""

MAX_DEPTH = 64
"""Nesting of types in a datum; ours go four deep. Deeper is refused before Python's recursion limit."""
_WIDTHS = {"null": 0, "boolean": 1, "float": 4, "double": 8}
_VARIABLE = {"int", "long", "string", "bytes"}
_PROMOTIONS = {"int": {"long", "float", "double"}, "long": {"float", "double"}, "float": {"double"},
               "string": {"bytes"}, "bytes": {"string"}}
"""What a writer's primitive may be read as (Avro's specification, "Schema Resolution")."""
_NAMED = {"record", "error", "enum", "fixed"}
_COMPLEX = _NAMED | {"array", "map"}


class UnsafeSchemaError(NonRetriableError, ValueError):
    """A writer schema the codec will not read with: it can describe endless data."""


def _definition(schema: Any, names: Names) -> Any:
    """A named reference's definition, and {"type": "int"} as "int"."""
    while True:
        if isinstance(schema, str) and schema in names:
            schema = names[schema]
        elif isinstance(schema, dict) and not (isinstance(schema["type"], str) and schema["type"] in _COMPLEX):
            schema = schema["type"]
        else:
            return schema


def _kind(schema: Any) -> str:
    return "union" if isinstance(schema, list) else schema if isinstance(schema, str) else str(schema["type"])


def least_bytes(schema: Any, names: Names, seen: frozenset[str] = frozenset()) -> int:
    """The fewest bytes a value of `schema` takes (a record is the sum of its fields; a record that holds
    itself other than through a union, array or map can take no finite value: 1 stands in)."""
    schema = _definition(schema, names)
    kind = _kind(schema)
    if kind in _WIDTHS:
        return _WIDTHS[kind]
    if kind == "fixed":
        return int(schema["size"])
    if kind in ("record", "error"):
        if schema["name"] in seen:
            return 1
        return sum(least_bytes(item["type"], names, seen | {schema["name"]}) for item in schema["fields"])
    return 1  # a varint: int, long, a length, an enum or union index, an array's or map's count


def _walk(schema: Any, names: Names, seen: set[str]) -> None:
    """Refuse arrays of items that take no byte, anywhere in the schema."""
    schema = _definition(schema, names)
    kind = _kind(schema)
    if kind == "union":
        for branch in schema:
            _walk(branch, names, seen)
    elif kind in ("record", "error") and schema["name"] not in seen:
        seen.add(schema["name"])
        for item in schema["fields"]:
            _walk(item["type"], names, seen)
    elif kind == "array":
        if least_bytes(schema["items"], names) == 0:
            raise UnsafeSchemaError("an array of items that take no byte (nulls, empty records) could claim any "
                                    "number of them")
        _walk(schema["items"], names, seen)
    elif kind == "map":
        _walk(schema["values"], names, seen)


def check_writer(writer: Any, names: Names) -> None:
    """Raise `UnsafeSchemaError` if the writer schema has an array whose items may take no byte."""
    _walk(writer, names, set())


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def mismatch(writer: Any, reader: Any, writer_names: Names, reader_names: Names,
             seen: frozenset[tuple[str, str]] = frozenset()) -> str | None:
    """Why data of `writer` cannot be read as `reader` under Avro's resolution rules, or None if it can. Every
    branch of a writer's union must resolve (the rules would fail only on data of a branch that does not)."""
    w, r = _definition(writer, writer_names), _definition(reader, reader_names)
    wk, rk = _kind(w), _kind(r)
    if wk == "union":
        for branch in w:
            if (why := mismatch(branch, r, writer_names, reader_names, seen)) is not None:
                return why
        return None
    if rk == "union":
        if any(mismatch(w, branch, writer_names, reader_names, seen) is None for branch in r):
            return None
        return f"{wk} fits no branch of the reader's union"
    if wk != rk:
        return None if rk in _PROMOTIONS.get(wk, ()) else f"{wk} cannot be read as {rk}"
    if wk in _NAMED and _short(w["name"]) != _short(r["name"]):
        return f"{wk} {w['name']} is not {r['name']}"
    if wk == "fixed" and w["size"] != r["size"]:
        return f"fixed {w['name']} has {w['size']} bytes, not {r['size']}"
    if wk == "enum" and "default" not in r and (extra := sorted(set(w["symbols"]) - set(r["symbols"]))):
        return f"enum {w['name']} has symbols the reader lacks: {', '.join(extra)}"
    if wk == "array":
        return mismatch(w["items"], r["items"], writer_names, reader_names, seen)
    if wk == "map":
        return mismatch(w["values"], r["values"], writer_names, reader_names, seen)
    if wk in ("record", "error"):
        pair = (w["name"], r["name"])
        if pair in seen:
            return None
        written = {item["name"]: item for item in w["fields"]}
        for item in r["fields"]:
            found = next((written[name] for name in (item["name"], *item.get("aliases", ())) if name in written),
                         None)
            if found is None:
                if "default" not in item:
                    return f"{r['name']}.{item['name']} is not written and has no default"
                continue
            why = mismatch(found["type"], item["type"], writer_names, reader_names, seen | {pair})
            if why is not None:
                return f"{r['name']}.{item['name']}: {why}"
    return None


# -- the bounded walk over a datum ----------------------------------------------------------------
def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag long at `pos` (at most 10 bytes): (value, position after it)."""
    n = shift = 0
    for count in range(10):
        if pos + count >= len(data):
            raise ValueError("the bytes end inside a number")
        b = data[pos + count]
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (n >> 1) ^ -(n & 1), pos + count + 1
    raise ValueError("a number longer than 10 bytes")


def _advance(data: bytes, pos: int, size: int) -> int:
    if size < 0 or pos + size > len(data):
        raise ValueError(f"{size} bytes claimed where {len(data) - pos} are left")
    return pos + size


def _skip(data: bytes, pos: int, schema: Any, names: Names, depth: int) -> int:
    """The position after a value of `schema` at `pos`; raises ValueError if the bytes cannot hold it."""
    if depth > MAX_DEPTH:
        raise ValueError(f"values nested more than {MAX_DEPTH} deep")
    schema = _definition(schema, names)
    kind = _kind(schema)
    if kind in _WIDTHS:
        return _advance(data, pos, _WIDTHS[kind])
    if kind in _VARIABLE:
        value, pos = _varint(data, pos)
        return pos if kind in ("int", "long") else _advance(data, pos, value)
    if kind == "fixed":
        return _advance(data, pos, int(schema["size"]))
    if kind in ("union", "enum"):
        index, pos = _varint(data, pos)
        if not 0 <= index < len(schema if kind == "union" else schema["symbols"]):
            raise ValueError(f"{kind} index {index} out of range")
        return pos if kind == "enum" else _skip(data, pos, schema[index], names, depth + 1)
    if kind in ("record", "error"):
        for item in schema["fields"]:
            pos = _skip(data, pos, item["type"], names, depth + 1)
        return pos
    if kind not in ("array", "map"):
        raise ValueError(f"unknown Avro type {kind!r}")
    items = schema["items"] if kind == "array" else schema["values"]
    least = least_bytes(items, names) + (kind == "map")  # a map's key takes a byte at least
    item = _definition(items, names)
    width = _WIDTHS.get(item) if isinstance(item, str) and kind == "array" else None
    while True:
        count, pos = _varint(data, pos)
        if count == 0:
            return pos
        if count < 0:
            count = -count
            _size, pos = _varint(data, pos)
        if least == 0 or count * least > len(data) - pos:
            raise ValueError(f"a block of {count} items where {len(data) - pos} bytes are left")
        if width is not None:
            pos = _advance(data, pos, count * width)
            continue
        for _ in range(count):
            if kind == "map":
                pos = _skip(data, pos, "string", names, depth + 1)
            pos = _skip(data, pos, items, names, depth + 1)


def check_datum(data: bytes, writer: Any, names: Names) -> None:
    """Raise ValueError unless `data` is exactly one value of `writer`: every count and length fits the bytes
    left (so reading it takes time in proportion to its size) and nothing follows it."""
    end = _skip(data, 0, writer, names, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes follow the value")
