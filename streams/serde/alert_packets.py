"""The official Rubin alert packet, built from APDB rows with Rubin's own schema (lsst.alert.packet).

APDB rows (DiaSource, DiaObject, DiaForcedSource) use the SDM column names, which are the alert
schema's field names; they come with extra columns, numpy scalars and NaN, None or pandas NA for
missing values. A packet keeps only the schema's fields, as plain Python values, with None for
missing nullable ones. A missing value in a non-nullable field is a bug upstream: it is refused
with the field's name rather than sent to brokers. The conversion follows a per-record-type plan
made once from the schema, as thousands of packets (each with its history) are built per visit.
"""

from __future__ import annotations

import json
import operator
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, cast

import fastavro
import fastavro.validation
import numpy as np
from lsst.alert.packet import Schema, get_latest_schema_version, get_schema_path

FILE_NAME = "alerts.avro"
"""The file of a detector's alert packets, next to its other outputs."""
_MAJOR, _MINOR = get_latest_schema_version()
SCHEMA_VERSION: tuple[int, int] = (int(_MAJOR), int(_MINOR))
"""(major, minor) of the newest alert schema lsst.alert.packet ships."""

_NO_DEFAULT = object()


@cache
def schema() -> Any:
    """The package's `Schema` for SCHEMA_VERSION (its `definition` is fastavro's parsed schema).

    Loaded once: parsing the schema files takes tens of milliseconds.
    """
    major, minor = SCHEMA_VERSION
    return Schema.from_file(str(Path(get_schema_path(major, minor)) / f"lsst.v{major}_{minor}.alert.avsc"))


@cache
def schema_json() -> str:
    """The alert schema as one Avro JSON document, every named type defined inline at its first use.

    This is what a Confluent schema registry takes under one subject; fastavro's bookkeeping keys
    are dropped, everything else (docs, defaults) is kept.
    """
    return json.dumps(_public(schema().definition))


def _public(node: Any) -> Any:
    """A copy of a parsed schema without fastavro's private keys."""
    if isinstance(node, dict):
        return {key: _public(value) for key, value in node.items() if not key.startswith("__")}
    if isinstance(node, list):
        return [_public(value) for value in node]
    return node


class _Field(NamedTuple):
    """How one schema field is filled from a row."""

    name: str
    kind: type
    """The Python type of the field's values: rows holding it (and not NaN) need no conversion."""
    convert: Callable[[Any], Any]
    """Row value to Python value, None when missing."""
    required: bool
    """Not nullable: a missing value takes the default, or is refused."""
    default: Any


def _missing(value: Any) -> bool:
    """None, NaN, NaT or pandas NA (recognised without importing pandas)."""
    if value is None or type(value).__name__ == "NAType":
        return True
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _to_int(value: Any) -> int | None:
    """Python and numpy integers, and integral floats (pandas turns an int column with a gap to float)."""
    if type(value) is int:
        return value
    try:
        return operator.index(value)
    except TypeError:
        pass
    if _missing(value):
        return None
    if isinstance(value, str | bytes):
        raise ValueError(f"{value!r} is not a number")
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    return int(number)


def _to_float(value: Any) -> float | None:
    """Python and numpy numbers; NaN is a missing value."""
    if type(value) is float:
        return None if value != value else value
    if value is None:
        return None
    if isinstance(value, str | bytes):
        raise ValueError(f"{value!r} is not a number")
    try:
        number = float(value)
    except TypeError:
        if _missing(value):
            return None
        raise
    return None if number != number else number


def _to_bool(value: Any) -> bool | None:
    """Booleans, numpy booleans and 0/1 (flags read back from SQL as integers)."""
    if value is True or value is False:
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if _missing(value):
        return None
    if not isinstance(value, str | bytes) and (value == 0 or value == 1):
        return bool(value)
    raise ValueError(f"{value!r} is not a boolean")


def _to_str(value: Any) -> str | None:
    """Strings (numpy's too); NaN marks a missing string in a pandas object column."""
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if _missing(value):
        return None
    raise ValueError(f"{value!r} is not a string")


def _to_bytes(value: Any) -> bytes | None:
    """Bytes-like values."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if _missing(value):
        return None
    raise ValueError(f"{type(value).__name__} is not bytes")


_CONVERTERS: dict[str, tuple[type, Callable[[Any], Any]]] = {
    "int": (int, _to_int), "long": (int, _to_int), "float": (float, _to_float), "double": (float, _to_float),
    "boolean": (bool, _to_bool), "string": (str, _to_str), "bytes": (bytes, _to_bytes),
}


def _records(node: Any, found: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The record types defined anywhere in a schema, by short name (diaSource, diaObject, ...)."""
    if isinstance(node, dict):
        if node.get("type") == "record":
            found.setdefault(node["name"].rsplit(".", 1)[-1], node)
        for value in node.values():
            _records(value, found)
    elif isinstance(node, list):
        for value in node:
            _records(value, found)
    return found


@cache
def _plan(record: str) -> tuple[_Field, ...]:
    """The fields of record type `record` of the alert schema, each with its converter."""
    fields = []
    for field in _records(schema().definition, {})[record]["fields"]:
        kind = field["type"]
        branches = kind if isinstance(kind, list) else [kind]
        values = [branch for branch in branches if branch != "null"]
        if len(values) != 1 or values[0] not in _CONVERTERS:
            raise NotImplementedError(f"{record}.{field['name']}: type {kind} is not a primitive or nullable one")
        fields.append(_Field(field["name"], *_CONVERTERS[values[0]], "null" not in branches,
                             field.get("default", _NO_DEFAULT)))
    return tuple(fields)


def required_fields(record: str) -> list[str]:
    """The fields of `record` (diaSource, diaObject, diaForcedSource) a row must fill: no null, no default."""
    return [field.name for field in _plan(record) if field.required and field.default is _NO_DEFAULT]


def _convert(row: Mapping[str, Any], plan: tuple[_Field, ...], record: str) -> dict[str, Any]:
    """One sub-record: the schema's fields of `row` as Python values."""
    get = row.get
    out: dict[str, Any] = {}
    name = ""
    try:
        for name, kind, convert, required, default in plan:
            value = get(name)
            if type(value) is not kind or value != value:  # the common case (a Python value) is left as is
                value = convert(value)
            if value is None and required:
                if default is _NO_DEFAULT:
                    raise ValueError("missing, but required (not nullable, no default) by the alert schema")
                value = default
            out[name] = value
    except (TypeError, ValueError) as error:
        raise ValueError(f"{record}.{name} (row {_identify(row)}): {error}") from error
    return out


def _identify(row: Mapping[str, Any]) -> str:
    """The row's ids, to find it in the APDB."""
    ids = {key: row.get(key) for key in ("diaSourceId", "diaObjectId", "diaForcedSourceId", "visit", "detector")}
    return ", ".join(f"{key}={value}" for key, value in ids.items() if value is not None) or "without ids"


def packet(dia_source: Mapping[str, Any], dia_object: Mapping[str, Any] | None,
           prv_sources: Sequence[Mapping[str, Any]] | None, prv_forced: Sequence[Mapping[str, Any]] | None,
           cutouts: tuple[bytes | None, bytes | None, bytes | None],
           observation_reason: str | None = None, target_name: str | None = None) -> dict[str, Any]:
    """One alert record for SCHEMA_VERSION; the alert's id is its DIA source's.

    `cutouts` are the FITS stamps of the difference, science and template images. None for the
    history means "not provided" (the schema's null), an empty sequence means "no history".
    Raises ValueError naming the field when a row lacks a value the schema requires.
    """
    sources_plan, forced_plan = _plan("diaSource"), _plan("diaForcedSource")
    source = _convert(dia_source, sources_plan, "diaSource")
    difference, science, template = cutouts
    return {
        "diaSourceId": source["diaSourceId"],
        "observation_reason": observation_reason,
        "target_name": target_name,
        "diaSource": source,
        "prvDiaSources": None if prv_sources is None else
        [_convert(row, sources_plan, "prvDiaSources") for row in prv_sources],
        "prvDiaForcedSources": None if prv_forced is None else
        [_convert(row, forced_plan, "prvDiaForcedSources") for row in prv_forced],
        "diaObject": None if dia_object is None else _convert(dia_object, _plan("diaObject"), "diaObject"),
        "ssSource": None,
        "mpc_orbits": None,
        "cutoutDifference": _to_bytes(difference),
        "cutoutScience": _to_bytes(science),
        "cutoutTemplate": _to_bytes(template),
    }


def validate(packet: dict[str, Any]) -> None:
    """Raise ValueError saying what does not conform to the alert schema."""
    try:
        fastavro.validation.validate(packet, schema().definition, raise_errors=True)
    except fastavro.validation.ValidationError as error:
        reasons = [_shorten(str(reason)) for reason in getattr(error, "errors", [error])]
        raise ValueError("; ".join(reasons)) from error


def _shorten(text: str, limit: int = 400) -> str:
    """A reason cut to a readable length: fastavro quotes the whole offending value and schema."""
    return text if len(text) <= limit else text[:limit] + " ..."


def write_packets(path: Path, packets: Iterable[dict[str, Any]]) -> int:
    """Write an Avro container file of alerts (schema included) atomically; the number written.

    The file appears complete or not at all: it is written under a temporary name in the same
    folder, synced, then renamed over `path`.
    """
    count = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal count
        for record in packets:
            count += 1
            yield record

    # Not tempfile.mkstemp: its files are private (0600) and would stay so after the rename.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with temporary.open("xb") as file:
            schema().store_alerts(file, counted())
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


def read_packets(path: Path) -> list[dict[str, Any]]:
    """The alerts of an Avro container file, as written (with the file's own schema)."""
    with path.open("rb") as file:
        return [cast(dict[str, Any], record) for record in fastavro.reader(file)]
